"""The command line: a thin click adapter over the library. The only module that prints."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from . import graph, preprocess
from .errors import ConfigError, OnnxCamError, OutputError
from .evaluate import METHODS, SUBSTRATES, summarize
from .evaluate import evaluate as run_evaluation
from .explain import BASELINES, Explainer, version
from .render import ensure_dir
from .runtime import DEVICES
from .scorecam import COMPAT, RANKS

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


# Options shared by every command that builds an Explainer, in the order --help shows them.
_EXPLAINER_OPTIONS = [
    click.option("--node", default="auto", show_default=True,
                 help="Node name, tensor name, or auto."),
    click.option("--preset", type=click.Choice(sorted(preprocess.PRESETS)),
                 help="Input normalisation (default: the model's metadata, else imagenet)."),
    click.option("--mean", callback=_floats, help="Per-channel mean, e.g. 0.485,0.456,0.406."),
    click.option("--std", callback=_floats, help="Per-channel std, e.g. 0.229,0.224,0.225."),
    click.option("--scale", type=float, help="Pixel (0..255) multiplier applied before mean/std."),
    click.option("--bgr/--rgb", default=None, help="Colour order the model expects."),
    click.option("--size", callback=_size, help="Input size HxW when the model's is dynamic."),
    click.option("--layout", type=click.Choice(["NCHW", "NHWC"]),
                 help="Override layout detection."),
    click.option("--target", type=int, help="Class index to explain (default: the top class)."),
    click.option("--baseline", type=click.Choice(BASELINES), default="none", show_default=True,
                 help="Score subtracted from each masked score."),
    click.option("--compat", type=click.Choice(list(COMPAT)), default="official",
                 show_default=True, help="Reproduce another implementation's Score-CAM."),
    click.option("--channels", type=click.IntRange(min=1),
                 help="Fast mode: score only the top N channels (default: all, exact)."),
    click.option("--rank", type=click.Choice(RANKS), default="std", show_default=True,
                 help="Fast-mode ranking: spatial std (Faster Score-CAM) or max (CSKIP)."),
    click.option("--batch-size", type=click.IntRange(min=1), help="Masked passes per run."),
    click.option("--threads", type=click.IntRange(min=1), help="CPU threads for ONNX Runtime."),
    click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
    click.option("--fp16", is_flag=True,
                 help="Run the model in float16 (for CUDA; needs onnxcam[fp16])."),
    click.option("--labels", "labels_file", type=click.Path(path_type=Path),
                 help="Class names: one per line, or JSON."),
    click.option("--max-pixels", type=click.IntRange(min=1),
                 default=preprocess.DEFAULT_MAX_PIXELS, show_default=True,
                 help="Refuse images larger than this many pixels."),
]  # fmt: skip


def explainer_options(command: Any) -> Any:
    """Decorate a command with the shared Explainer options."""
    for option in reversed(_EXPLAINER_OPTIONS):
        command = option(command)
    return command


def open_explainer(model: Path, options: dict[str, Any]) -> Explainer:
    """Build the Explainer from the shared options (``target`` is per call, not per model)."""
    scorecam_options = replace(
        COMPAT[options["compat"]], top_channels=options["channels"], rank=options["rank"]
    )
    explainer = Explainer(
        model,
        node=options["node"],
        preset=options["preset"],
        mean=options["mean"],
        std=options["std"],
        scale=options["scale"],
        bgr=options["bgr"],
        size=options["size"],
        layout=options["layout"],
        baseline=options["baseline"],
        options=scorecam_options,
        batch_size=options["batch_size"],
        threads=options["threads"],
        device=options["device"],
        fp16=options["fp16"],
        labels=options["labels_file"],
        max_pixels=options["max_pixels"],
    )
    for note in explainer.notes:
        click.echo(f"note: {note}", err=True)
    return explainer


def _files(images: tuple[Path, ...]) -> list[Path]:
    files = collect_images(images)
    if not files:
        raise click.ClickException("no image files found in " + ", ".join(map(str, images)))
    return files


def _error(exc: OnnxCamError, after_bar: bool) -> None:
    click.echo(f"\nerror: {exc}" if after_bar else f"error: {exc}", err=True)


def _finish(failures: int, total: int) -> None:
    if failures and total == 1:
        sys.exit(1)  # the error line already says it all
    if failures:
        raise click.ClickException(f"{failures} of {total} images failed")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("onnxcam_out"),
    show_default=True,
    help="Folder for the results.",
)
@explainer_options
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Weight of the heat map in the overlay.",
)
def explain(
    model: Path, images: tuple[Path, ...], out_dir: Path, alpha: float, **options: Any
) -> None:
    """Explain IMAGES (files or folders) with Score-CAM; write maps and records to -o."""
    files = _files(images)
    explainer = open_explainer(model, options)
    ensure_dir(out_dir)
    failures = 0
    records = []
    show_bar = len(files) > 1
    stems = _stems(files)
    outcomes = explainer.explain_many(files, target=options["target"])
    with click.progressbar(
        outcomes, length=len(files), label="explaining", file=sys.stderr, hidden=not show_bar
    ) as bar:
        for path, stem, (_, result) in zip(files, stems, bar, strict=True):
            if isinstance(result, OnnxCamError):
                failures += 1
                _error(result, show_bar)
                continue
            paths = result.save(out_dir, stem=stem, alpha=alpha)
            records.append(result.to_record())
            label = f" {result.label}" if result.label else ""
            click.echo(
                f"{path}: class {result.class_index}{label} (p={result.score:.3f}), "
                f"{result.channels_used}/{result.channels_total} channels, "
                f"{result.timings['total_s']:.2f}s -> {paths['overlay']}"
            )
    if len(files) > 1:
        _write_text(out_dir / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    _finish(failures, len(files))


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(METHODS),
    help="Methods to compare (repeatable; default: all).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Deletion/insertion steps.",
)
@click.option(
    "--substrate",
    type=click.Choice(SUBSTRATES),
    default="zero",
    show_default=True,
    help="What deleted pixels become (insertion always starts from a blur).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random map.")
@click.option(
    "-o",
    "--output",
    "out_file",
    type=click.Path(path_type=Path),
    default=Path("onnxcam_eval.json"),
    show_default=True,
    help="JSON file for per-image records and the summary.",
)
@explainer_options
def evaluate(
    model: Path,
    images: tuple[Path, ...],
    methods: tuple[str, ...],
    steps: int,
    substrate: str,
    seed: int,
    out_file: Path,
    **options: Any,
) -> None:
    """Faithfulness metrics of Score-CAM and reference maps on IMAGES.

    Average Drop (lower is better), Increase in Confidence (higher), Deletion AUC (lower) and
    Insertion AUC (higher); see the README for the formulas.
    """
    files = _files(images)
    explainer = open_explainer(model, options)
    chosen = methods or METHODS
    evaluations = []
    failures = 0
    show_bar = len(files) > 1
    with click.progressbar(files, label="evaluating", file=sys.stderr, hidden=not show_bar) as bar:
        for path in bar:
            try:
                evaluations += run_evaluation(
                    explainer, path, methods=chosen, steps=steps, substrate=substrate,
                    seed=seed, target=options["target"],
                )  # fmt: skip
            except ConfigError:
                raise
            except OnnxCamError as exc:
                failures += 1
                _error(exc, show_bar)
    if evaluations:
        table = summarize(evaluations)
        header = f"{'method':<12}{'images':>7}{'avg drop %':>12}{'increase %':>12}"
        click.echo(header + f"{'deletion':>10}{'insertion':>11}")
        for method, row in table.items():
            click.echo(
                f"{method:<12}{int(row['images']):>7}{row['average_drop']:>12.2f}"
                f"{row['increase_in_confidence']:>12.2f}{row['deletion_auc']:>10.4f}"
                f"{row['insertion_auc']:>11.4f}"
            )
        document = {
            "model": str(model),
            "node": explainer.candidate.label,
            "steps": steps,
            "substrate": substrate,
            "summary": table,
            "records": [e.to_record() for e in evaluations],
            "onnxcam_version": version(),
        }
        if out_file.parent != Path(""):
            ensure_dir(out_file.parent)
        _write_text(out_file, json.dumps(document, indent=2) + "\n")
        click.echo(f"\nwrote {out_file}")
    _finish(failures, len(files))


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


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
