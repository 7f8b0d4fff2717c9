"""Whole datasets on Ray Data (``pip install 'onnxcam[ray]'``).

Only :mod:`onnxcam.scale.ray` imports Ray; the rest is plain Python with pyarrow, so the
worker, the manifest, the crash ledger and the result table are testable without a cluster:

- :mod:`~onnxcam.scale.manifest`: folders, CSV and Parquet manifests, object-store URIs;
- :mod:`~onnxcam.scale.schema`: the explicit schema of the result rows;
- :mod:`~onnxcam.scale.naming`: every image's output names, fixed before any worker starts;
- :mod:`~onnxcam.scale.preflight`: what a cluster could never run, refused up front;
- :mod:`~onnxcam.scale.ledger`: which images killed their worker, kept in the output folder;
- :mod:`~onnxcam.scale.worker`: one batch of rows in, one row per image out (files written);
- :mod:`~onnxcam.scale.table`: the Parquet table, resume and reconcile;
- :mod:`~onnxcam.scale.job`: a managed job's options, progress and ``summary.json``;
- :mod:`~onnxcam.scale.ray`: the Ray Data adapter and the managed job the CLI runs.

Nothing is imported here, so ``import onnxcam.scale.manifest`` never loads Ray.
"""
