"""``onnxcam nodes``: the feature maps a model offers, and which one ``auto`` picks."""

from __future__ import annotations

from pathlib import Path

import click

from .. import graph
from ..errors import OnnxCamError
from .common import echo, safe


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
def nodes(model: Path) -> None:
    """List the nodes whose output can be explained; `*` marks what --node auto picks."""
    proto = graph.load_model(model)
    index = graph.GraphIndex(proto)
    candidates = graph.spatial_candidates(proto, index)
    if not candidates:
        raise click.ClickException(safe(f"{model} has no 4-D spatial feature map to explain"))
    try:
        chosen = graph.auto_candidate(proto, index).tensor
    except OnnxCamError:
        chosen = None
    rows = [
        (
            "*" if c.tensor == chosen else "",
            safe(c.label),
            safe(c.op_type),
            safe(c.tensor),
            "(" + ", ".join("?" if d is None else safe(d) for d in c.shape) + ")",
            c.layout,
        )
        for c in candidates
    ]
    header = ("", "node", "op", "output tensor", "shape", "layout")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if chosen:
        echo(f"\n* auto picks '{chosen}' (the map the classifier head pools)")
