"""``onnxcam serve``: an explanation service on KServe's model server (the ``serve`` extra).

The V1 and V2 endpoints, health and readiness are kserve's; :mod:`onnxcam.serve.model` answers
``:predict``, ``:explain`` and V2 infer with the explainer, whose passes every request in flight
shares (:class:`onnxcam.batcher.Batcher`); :mod:`onnxcam.serve.codec` reads requests and writes
answers. Nothing else in onnxcam imports this package.
"""

from __future__ import annotations

from .server import serve

__all__ = ["serve"]
