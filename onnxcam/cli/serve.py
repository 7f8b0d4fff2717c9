"""``onnxcam serve``: an explanation service on KServe's model server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from ..config import Bounds
from ..methods import METHODS
from .common import InRange, echo, explainer_options, open_explainer, target_specs

_PORT = Bounds(0, 65535, integer=True)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--name", default=None, help="The model's name in the endpoints (default: the file's stem)."
)
@click.option(
    "--http-port",
    type=InRange(_PORT),
    default=8080,
    show_default=True,
    help="The REST port (V1 and V2).",
)
@click.option(
    "--grpc-port",
    type=InRange(_PORT),
    default=8081,
    show_default=True,
    help="The V2 gRPC port (0: no gRPC).",
)
@click.option(
    "--server-workers",
    type=InRange(Bounds(1, 64, integer=True)),
    default=1,
    show_default=True,
    help="Server processes: 1, so that all requests share batches (scale out with replicas).",
)
@click.option(
    "--max-queue",
    type=InRange(Bounds(1, 100_000, integer=True)),
    default=64,
    show_default=True,
    help="Requests in progress at most; one more is answered 503 with Retry-After.",
)
@click.option(
    "--method",
    type=click.Choice(list(METHODS)),
    default="scorecam",
    show_default=True,
    help="The default method (a request may name another).",
)
@explainer_options
def serve(
    model: Path, name: str | None, http_port: int, grpc_port: int, server_workers: int,
    max_queue: int, method: str, **options: Any,
) -> None:  # fmt: skip
    """Serve MODEL on KServe's model server: GET /v2/health/ready and /v1/models/NAME,
    POST /v1/models/NAME:predict (the model's outputs), :explain (saliency maps) and
    /v2/models/NAME/infer (with the parameter explain: true, the maps too). Needs
    onnxcam[serve]. With --predictor-host, the passes run on a predictor served elsewhere."""
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "-", model.stem)[:63] or "model"
    if not _NAME.fullmatch(name):
        raise click.BadParameter(
            f"'{name}' is not a model name: letters, digits, '_', '.', '-'", param_hint="--name"
        )
    if server_workers != 1:
        raise click.BadParameter(
            "only 1: requests share batches within one process (run more replicas instead)",
            param_hint="--server-workers",
        )
    targets = target_specs(options)  # a request's own targets come first
    predictor = options["predictor"]
    if predictor is not None and "/" not in predictor.removeprefix("http://"):
        options["predictor"] = f"{predictor}/{name}"  # the predictor serves it under our name
    from ..serve import serve as run

    explainer = open_explainer(model, options, method, split_head=predictor is None)
    echo(f"serving '{name}' on port {http_port} ({explainer.provider}, batch "
         f"{explainer.batch_size()})", err=True)  # fmt: skip
    run(
        explainer, name=name, http_port=http_port, grpc_port=grpc_port, workers=server_workers,
        max_queue=max_queue, target=targets,
    )  # fmt: skip
