"""``onnxcam nodes``: the feature maps a model offers, and which one ``auto`` picks and why."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import click

from .. import graph, modelinfo
from ..errors import ConfigError, OnnxCamError
from .common import echo, safe, size_option


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@size_option
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), help="Override layout detection.")
def nodes(model: Path, size: tuple[int, int] | None, layout: str | None) -> None:
    """List the feature maps that can be explained; `*` marks what --node auto picks.

    Shapes are those for the model's input size (or --size); `?` is a size only known when an
    image runs, N the batch.
    """
    proto, _ = graph.drop_unused_inputs(graph.load_model(model))
    index = graph.GraphIndex(proto)
    metadata = {p.key: p.value for p in proto.metadata_props}
    kind = None
    try:
        spec = modelinfo.input_spec(
            index, layout=layout, size=size, default_size=modelinfo.metadata_size(metadata)
        )
        dims = (1, spec.channels, spec.height, spec.width)
        if spec.layout == "NHWC":
            dims = (1, spec.height, spec.width, spec.channels)
        index = graph.GraphIndex(graph.with_input_size(proto, spec.name, dims))
        given = f"input '{spec.name}' {graph.fmt_shape(index.shape(spec.name) or ())} {spec.layout}"
        shapes = {name: index.shape(name) for name in index.outputs}
        kind = modelinfo.model_kind(shapes, metadata, (spec.height, spec.width))
    except ConfigError:
        given = (f"input '{index.inputs[0]}' {graph.fmt_shape(index.shape(index.inputs[0]) or ())} "
                 "(size known only with --size)")  # fmt: skip
    candidates = graph.spatial_candidates(index.model, index)
    if not candidates:  # before anything is printed: a failure is one line
        raise click.ClickException(
            f"{model} has no feature map on the image grid (a conv map or transformer tokens) "
            "computed from its image input"
        )
    echo(given)
    outputs = [f"'{n}' {graph.fmt_shape(index.shape(n) or ())}" for n in index.outputs]
    _echo_wrapped(f"outputs {', '.join(outputs)}")
    choice: graph.AutoChoice | None
    try:
        if kind is not None and kind.detection is not None:
            choice = graph.detector_choice(index, kind.detection.outputs)
        else:
            choice = graph.auto_choice(index)
    except OnnxCamError:
        choice = None
    picked = {c.tensor for c in choice.candidates} if choice else set()
    owners = Counter(c.node for c in candidates)
    rows = [
        (
            "*" if c.tensor in picked else "",
            safe(c.node if c.node and owners[c.node] == 1 else c.tensor),
            safe(c.op_type),
            safe(graph.fmt_shape(c.shape, c.layout)),
            c.layout.describe(c.shape),
        )
        for c in candidates
    ]
    header = ("", "node (or tensor)", "op", "shape", "layout")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    echo("")
    for row in [header, *rows]:  # escaped above, so that the widths are those shown
        echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    echo("")
    _echo_wrapped(f"backbone: {graph.backbone(index, candidates)}")
    if kind is not None and kind.kind in ("detector", "segmenter"):
        _echo_wrapped(f"model: a {kind.kind} ({kind.why})")
    elif choice is not None and choice.head:
        _echo_wrapped(f"model: a classifier; its head starts at {choice.head}")
    else:
        echo("model: no classifier head (no node collapses a spatial map into a vector)")
    if choice is not None:
        names = ",".join(c.label for c in choice.candidates)
        _echo_wrapped(f"* auto picks '{names}': {choice.reason}")


def _echo_wrapped(text: str) -> None:
    """``text`` escaped, then folded at 100 columns with continuations indented (names never
    split): each line printed on its own, so only the folding breaks lines."""
    for line in textwrap.wrap(safe(text), 100, subsequent_indent="    ", break_long_words=False):
        echo(line)
