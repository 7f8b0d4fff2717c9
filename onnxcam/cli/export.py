"""``onnxcam export``: write a model that returns its saliency map with its prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from ..errors import ConfigError, ModelError, OutputError
from ..explain import Explainer
from ..ingraph import EXPORT_METHODS, RESIZES, export, expose, parse_target
from ..methods.recipro import KERNELS, ReciproOptions
from ..render.files import write_atomic
from .common import echo, size_option

#: Largest differences ``--verify`` accepts (Eigen-CAM: the correlation it needs instead).
TOLERANCE = 1e-5
EIGEN_R = 0.999
_EXTERNAL_MIN = 1024  # bytes: smaller tensors stay inside the .onnx file


@click.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="The .onnx file to write.",
)
@click.option(
    "--method",
    type=click.Choice(list(EXPORT_METHODS)),
    default=None,
    help="cam (default), recipro, activation or eigencam.",
)
@click.option("--node", default="auto", show_default=True, help="The feature map explained.")
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="RULE",
    help="top (default), top:K, class=N (repeatable), or all; add :output=NAME to "
    "pick the class output.",
)
@size_option
@click.option(
    "--resize",
    type=click.Choice(RESIZES),
    default=None,
    help="Upsample the maps to the input size in the graph (default: feature size).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Run the exported model and onnxcam's own method on IMAGES and print the "
    "largest difference between their maps.",
)
@click.option(
    "--expose",
    "expose_only",
    is_flag=True,
    help="Write the model with the feature maps as extra outputs and nothing else.",
)
@click.option(
    "--kernel",
    type=click.Choice(list(KERNELS)),
    default="onehot",
    show_default=True,
    help="recipro: the mask of each cell, that cell alone or a 3×3 Gaussian around it.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def export_command(
    model: Path, images: tuple[Path, ...], out: Path, method: str | None, node: str,
    targets: tuple[str, ...], size: tuple[int, int] | None, resize: str | None, verify: bool,
    expose_only: bool, kernel: str, overwrite: bool,
) -> None:  # fmt: skip
    """Write MODEL with a `saliency` output (B, T, h, w) in [0, 1] and, when the classes are
    chosen per image, `saliency_class` (B, T); every original output is unchanged.

    With --verify, IMAGES are explained both ways and the largest difference is printed (the
    command fails when it exceeds 1e-5, or Eigen-CAM's correlation is below 0.999).
    """
    if images and not verify:
        raise ConfigError("images are only taken with --verify")
    if verify and not images:
        raise ConfigError("--verify needs one or more images")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    if out.resolve() == model.resolve():
        raise OutputError(f"the output {out} is the model itself; choose another file")
    if expose_only:
        given = [flag for flag, value in [("--method", method), ("--target", targets),
                 ("--resize", resize), ("--verify", verify)] if value]  # fmt: skip
        if given:
            raise ConfigError(f"--expose writes the feature maps only; it takes no {given[0]}")
        written = expose(model, node=node, size=size)
        _write(written, out, external=_has_external_data(model))
        echo(f"{out}: outputs {', '.join(o.name for o in written.graph.output)}")
        return
    method = method or "cam"
    target = _merged(targets)
    written = export(
        model, method=method, node=node, target=target, size=size, resize=resize, kernel=kernel
    )
    _write(written, out, external=_has_external_data(model))
    shapes = {o.name: _shape(o) for o in written.graph.output}
    chosen = f", saliency_class {shapes['saliency_class']}" if "saliency_class" in shapes else ""
    echo(f"{out}: saliency {shapes['saliency']}{chosen}")
    if verify:
        _verify(
            model, written, images, method=method, node=node, target=target, size=size,
            kernel=kernel,
        )  # fmt: skip


def _merged(targets: tuple[str, ...]) -> str:
    """One rule from the repeated ``--target``: several ``class=N`` become ``class=N,M``."""
    if not targets:
        return "top"
    if len(targets) == 1:
        return targets[0]
    rules = [parse_target(t) for t in targets]
    if not all(rule.startswith("class=") for rule, _ in rules):
        raise ConfigError("only class=N targets can be repeated; give one top, top:K or all")
    outputs = {output for _, output in rules}
    if len(outputs) > 1:
        raise ConfigError("repeated class=N targets must name the same output")
    output = outputs.pop()
    joined = "class=" + ",".join(rule[6:] for rule, _ in rules)
    return joined + (f":output={output}" if output else "")


def _verify(
    model: Path, written: onnx.ModelProto, images: tuple[Path, ...], *, method: str, node: str,
    target: str, size: tuple[int, int] | None, kernel: str,
) -> None:  # fmt: skip
    import onnxruntime as ort

    options = ReciproOptions(kernel=kernel) if method == "recipro" else None
    explainer = Explainer(model, method=method, node=node, size=size, options=options)
    session = ort.InferenceSession(written.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    rule, output = parse_target(target)
    at_input = any(p.key == "onnxcam.export.resolution" and p.value == "input"
                   for p in written.metadata_props)  # fmt: skip
    worst, lowest = 0.0, 1.0
    for image in images:
        x = explainer.preprocess(image)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {feed: x}),
                       strict=True))  # fmt: skip
        fwd = explainer.forward(tensor=x)
        specs = _targets(rule, output, got)
        bound = explainer.bind(fwd, specs)
        maps = explainer.method_maps(fwd, bound, at="input" if at_input else "feature")
        diff = max(float(np.abs(got["saliency"][0, t] - m.map).max()) for t, m in enumerate(maps))
        r = min(float(np.corrcoef(got["saliency"][0, t].ravel(), m.map.ravel())[0, 1])
                for t, m in enumerate(maps))  # fmt: skip
        worst, lowest = max(worst, diff), min(lowest, r)
        echo(f"{image}: max abs difference {diff:.2e} over {len(maps)} map(s), r = {r:.6f}")
    echo(f"verify: max abs difference {worst:.2e}, lowest correlation {lowest:.6f}")
    failed = lowest < EIGEN_R if method == "eigencam" else worst > TOLERANCE
    if failed:
        raise click.ClickException(
            f"the exported maps differ from onnxcam's {method} by more than "
            + (f"r >= {EIGEN_R}" if method == "eigencam" else f"{TOLERANCE:g}")
        )


def _targets(rule: str, output: str | None, got: dict[str, np.ndarray]) -> Any:
    """onnxcam's target specs for the exported rule on one image (None: class-agnostic)."""
    suffix = f":output={output}" if output else ""
    if "saliency_class" in got:
        return [f"class:{int(c)}{suffix}" for c in got["saliency_class"][0]]
    if rule.startswith("class="):
        return [f"class:{c}{suffix}" for c in rule[6:].split(",")]
    if rule == "all":
        return [f"class:{c}{suffix}" for c in range(got["saliency"].shape[1])]
    return None


def _shape(value: onnx.ValueInfoProto) -> str:
    dims = value.type.tensor_type.shape.dim
    return "(" + ", ".join(d.dim_param or str(d.dim_value) for d in dims) + ")"


def _has_external_data(model: Path) -> bool:
    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"cannot read {model} as an ONNX model") from exc
    return any(external_data_helper.uses_external_data(t) for t in proto.graph.initializer)


def _write(model: onnx.ModelProto, out: Path, *, external: bool) -> None:
    """Write ``model`` to ``out`` atomically; with ``external``, its weights go to
    ``OUT.data`` next to it (as the input kept its own), written atomically first."""
    if not external:
        write_atomic(out, model.SerializeToString())
        return
    location = out.name + ".data"
    chunks: list[bytes] = []
    offset = 0
    for tensor in model.graph.initializer:
        if not tensor.HasField("raw_data"):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
        if len(tensor.raw_data) < _EXTERNAL_MIN:
            continue
        raw = tensor.raw_data
        external_data_helper.set_external_data(tensor, location, offset=offset, length=len(raw))
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        chunks.append(raw)
        offset += len(raw)

    def blob(handle: Any) -> None:
        for chunk in chunks:
            handle.write(chunk)

    write_atomic(out.parent / location, blob)
    write_atomic(out, model.SerializeToString())
