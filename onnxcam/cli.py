"""The command line: a thin click adapter over the library. The only module that prints."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from . import graph, preprocess
from .errors import ConfigError, OnnxCamError, OutputError
from .explain import BASELINES, Explainer, version
from .render import ensure_dir
from .runtime import DEVICES
from .scorecam import COMPAT

IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".pnm",
}  # fmt: skip


class _Cli(click.Group):
    """Turns library errors into one line and a non-zero exit; ``--debug`` shows tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OnnxCamError as exc:
            if _debug(ctx):
                raise
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            if _debug(ctx):
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
            ) from None


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug"))


@click.group(cls=_Cli)
@click.version_option(version(), prog_name="onnxcam")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Score-CAM saliency maps for image CNNs exported to ONNX."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
def nodes(model: Path) -> None:
    """List the nodes whose output can be explained; `*` marks what --node auto picks."""
    proto = graph.load_model(model)
    index = graph.GraphIndex(proto)
    candidates = graph.spatial_candidates(proto, index)
    if not candidates:
        raise click.ClickException(f"{model} has no 4-D spatial feature map to explain")
    try:
        chosen = graph.auto_candidate(proto, index).tensor
    except OnnxCamError:
        chosen = None
    rows = [
        (
            "*" if c.tensor == chosen else "",
            c.label,
            c.op_type,
            c.tensor,
            "(" + ", ".join("?" if d is None else str(d) for d in c.shape) + ")",
            c.layout,
        )
        for c in candidates
    ]
    header = ("", "node", "op", "output tensor", "shape", "layout")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if chosen:
        click.echo(f"\n* auto picks '{chosen}' (the map the classifier head pools)")


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in value.replace(",", " ").split())
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a list of numbers, e.g. 0.5,0.5,0.5") from None
    if len(values) not in (1, 3):
        raise click.BadParameter(f"needs 1 or 3 numbers, got {len(values)}")
    return values


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    if value is None:
        return None
    parts = value.lower().replace("x", " ").replace(",", " ").split()
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a size; use 224 or 224x320 (HxW)") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise click.BadParameter(f"'{value}' is not a size; use 224 or 224x320 (HxW)")
    return dims


def collect_images(paths: Iterable[Path]) -> list[Path]:
    """Files as given; folders expanded to the image files inside them (recursively, sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            found.append(path)
    return found


def _stems(images: list[Path]) -> list[str]:
    """Output names: the file stem, made unique when two inputs share one."""
    used: dict[str, int] = {}
    stems = []
    for image in images:
        stem = image.stem or "image"
        count = used.get(stem, 0)
        used[stem] = count + 1
        stems.append(stem if count == 0 else f"{stem}_{count + 1}")
    return stems


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--node", default="auto", show_default=True, help="Node name, tensor name, or auto.")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("onnxcam_out"),
    show_default=True,
    help="Folder for the results.",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(preprocess.PRESETS)),
    help="Input normalisation (default: the model's metadata, else imagenet).",
)
@click.option("--mean", callback=_floats, help="Per-channel mean, e.g. 0.485,0.456,0.406.")
@click.option("--std", callback=_floats, help="Per-channel std, e.g. 0.229,0.224,0.225.")
@click.option("--scale", type=float, help="Pixel (0..255) multiplier applied before mean/std.")
@click.option("--bgr/--rgb", default=None, help="Colour order the model expects.")
@click.option("--size", callback=_size, help="Input size HxW when the model's is dynamic.")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), help="Override layout detection.")
@click.option("--target", type=int, help="Class index to explain (default: the top class).")
@click.option(
    "--baseline",
    type=click.Choice(BASELINES),
    default="none",
    show_default=True,
    help="Score subtracted from each masked score.",
)
@click.option(
    "--compat",
    type=click.Choice(list(COMPAT)),
    default="official",
    show_default=True,
    help="Reproduce another implementation's Score-CAM (see README).",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Masked passes per run.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for ONNX Runtime.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(path_type=Path),
    help="Class names: one per line, or JSON.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Weight of the heat map in the overlay.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=preprocess.DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Refuse images larger than this many pixels.",
)
def explain(
    model: Path,
    images: tuple[Path, ...],
    node: str,
    out_dir: Path,
    preset: str | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    scale: float | None,
    bgr: bool | None,
    size: tuple[int, int] | None,
    layout: str | None,
    target: int | None,
    baseline: str,
    compat: str,
    batch_size: int | None,
    threads: int | None,
    device: str,
    labels_file: Path | None,
    alpha: float,
    max_pixels: int,
) -> None:
    """Explain IMAGES (files or folders) with Score-CAM; write maps and records to -o."""
    files = collect_images(images)
    if not files:
        raise click.ClickException("no image files found in " + ", ".join(map(str, images)))
    explainer = Explainer(
        model, node=node, preset=preset, mean=mean, std=std, scale=scale, bgr=bgr, size=size,
        layout=layout, baseline=baseline, compat=compat, batch_size=batch_size, threads=threads,
        device=device, labels=labels_file, max_pixels=max_pixels,
    )  # fmt: skip
    ensure_dir(out_dir)
    for note in explainer.notes:
        click.echo(f"note: {note}", err=True)
    failures = 0
    records = []
    stems = _stems(files)
    show_bar = len(files) > 1
    with click.progressbar(
        list(zip(files, stems, strict=True)), label="explaining", file=sys.stderr,
        hidden=not show_bar,
    ) as bar:  # fmt: skip
        for path, stem in bar:
            try:
                result = explainer.explain(path, target=target)
                paths = result.save(out_dir, stem=stem, alpha=alpha)
            except (ConfigError, OutputError):
                raise  # not about this image: stop the run
            except OnnxCamError as exc:
                failures += 1
                click.echo(f"\nerror: {exc}" if show_bar else f"error: {exc}", err=True)
                continue
            record = result.to_record()
            records.append(record)
            label = f" {result.label}" if result.label else ""
            click.echo(
                f"{path}: class {result.class_index}{label} (p={result.score:.3f}), "
                f"{result.channels_used}/{result.channels_total} channels, "
                f"{result.timings['total_s']:.2f}s -> {paths['overlay']}"
            )
    if len(files) > 1:
        lines = "".join(json.dumps(r) + "\n" for r in records)
        try:
            (out_dir / "results.jsonl").write_text(lines, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {out_dir / 'results.jsonl'}: {exc}") from exc
    if failures and len(files) == 1:
        sys.exit(1)  # the error line above says it all
    if failures:
        raise click.ClickException(f"{failures} of {len(files)} images failed")


def main() -> None:
    """Console-script entry point."""
    _quiet_opencv()
    cli(prog_name="onnxcam")


def _quiet_opencv() -> None:
    # OpenCV writes decoder warnings straight to stderr; onnxcam reports bad images itself.
    import cv2

    with contextlib.suppress(AttributeError):
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
