"""Whole datasets on Ray Data (``pip install 'onnxcam[ray]'``).

Only :mod:`onnxcam.dataset.ray` imports Ray; the rest is plain Python with pyarrow, so the
worker, the manifest, the crash ledger and the result table are testable without a cluster:

- :mod:`~onnxcam.dataset.manifest`: folders, CSV and Parquet manifests, object-store URIs;
- :mod:`~onnxcam.dataset.schema`: the explicit schema of the result rows;
- :mod:`~onnxcam.dataset.naming`: every image's output names, fixed before any worker starts;
- :mod:`~onnxcam.dataset.preflight`: what a cluster could never run, refused up front;
- :mod:`~onnxcam.dataset.ledger`: which images killed their worker, kept in the output folder;
- :mod:`~onnxcam.dataset.worker`: one batch of rows in, one row per image out (files written);
- :mod:`~onnxcam.dataset.table`: the Parquet table, resume and reconcile;
- :mod:`~onnxcam.dataset.job`: a managed job's options, progress and ``summary.json``;
- :mod:`~onnxcam.dataset.ray`: the Ray Data adapter and the managed job the CLI runs.

Nothing is imported here, so ``import onnxcam.dataset.manifest`` never loads Ray.
"""
