"""The KServe model server around one explainer: start, answer, shut down gracefully."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from ..batcher import Batcher
from ..errors import ConfigError
from ..explain import Explainer
from ..targets import TargetSpec
from ..text import escape

__all__ = ["serve"]


def serve(
    explainer: Explainer,
    *,
    name: str,
    http_port: int = 8080,
    grpc_port: int = 8081,
    workers: int = 1,
    max_queue: int = 64,
    target: Sequence[TargetSpec] | None = None,
) -> None:
    """Serve ``explainer`` as model ``name`` until SIGTERM or SIGINT; requests in flight are
    answered before it returns (``grpc_port`` 0: no gRPC; ``target``: what a request that
    names no target explains, default the model's default).

    Raises:
        ConfigError: kserve is not installed.
    """
    with _argv_hidden():  # kserve reads sys.argv when imported; the options are onnxcam's
        try:
            import kserve
            from fastapi.exceptions import RequestValidationError
            from kserve.model_server import app
        except ImportError:
            raise ConfigError("onnxcam serve needs kserve: pip install 'onnxcam[serve]'") from None
    from .model import ExplainerModel, HttpError, v2_infer

    batcher = Batcher(explainer, max_queue=max_queue)
    try:
        model = ExplainerModel(name, explainer, batcher, target)
        model.load()
        app.add_exception_handler(HttpError, _error)
        app.add_exception_handler(RequestValidationError, _malformed)
        # before kserve's own route for the path, which turns binary tensors into Python lists
        app.add_api_route(
            f"/v2/models/{name}/infer", v2_infer(model), methods=["POST"], response_model=None
        )
        server = kserve.ModelServer(
            http_port=http_port, grpc_port=grpc_port or 8081, workers=workers,
            enable_grpc=grpc_port != 0, enable_docs_url=False,
        )  # fmt: skip
        server.start([model])
    finally:
        batcher.close()


async def _error(request: Any, exc: Any) -> Any:
    from fastapi.responses import JSONResponse

    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse({"error": escape(str(exc))}, status_code=exc.status, headers=headers)


async def _malformed(request: Any, exc: Any) -> Any:
    """A body that is not the JSON the endpoint takes: 400 and the first problem, one line."""
    from fastapi.responses import JSONResponse

    problems = exc.errors() if hasattr(exc, "errors") else []
    first = problems[0] if problems else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = f"malformed request: {where}: {first.get('msg', 'not valid')}"
    return JSONResponse({"error": escape(message)[:300]}, status_code=400)


@contextlib.contextmanager
def _argv_hidden() -> Iterator[None]:
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved
