"""``onnxcam explain``: maps, overlays and records for images and folders."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..config import RENDER_LIMITS
from ..errors import OnnxCamError, OutputError
from ..methods import METHODS
from ..outdir import OutputFolder, relative_stems
from ..records import RecordCounts
from ..render import report_files
from ..render.report import write_report
from ..result import Result, file_names
from .common import (
    InRange,
    echo,
    explainer_options,
    finish,
    image_files,
    open_explainer,
    report_error,
    run_settings,
    target_specs,
)
from .dataset import engine_options, explain_on_ray, refuse_ray_options


def _channels(result: Result) -> str:
    info = result.targets[0].info
    if "masks_run" in info:
        fidelity = info.get("fidelity_estimate")
        shown = "" if fidelity is None else f", fidelity estimate {fidelity:.3f}"
        return f", {info['masks_run']}/{info['masks_planned']} masks within the budget{shown}"
    if "channels_used" not in result.stats:
        return ""
    return f", {result.channels_used}/{result.channels_total} channels"


def _skipped(counts: RecordCounts) -> None:
    if counts.skipped:
        echo(f"results.jsonl: {counts.skipped} lines skipped ({counts.describe()})", err=True)


def _report(path: Path, result: Result, paths: dict[str, Path]) -> None:
    cost = f"{_channels(result)}, {result.timings['total_s']:.2f}s"
    if len(result.targets) == 1:
        echo(f"{path}: {result.targets[0].info['summary']}{cost} -> {paths['overlay']}")
        return
    echo(f"{path}: {len(result.targets)} targets{cost} -> {paths['json']}")
    for i, target in enumerate(result.targets):
        echo(f"  t{i}: {target.info['summary']} -> {paths[f't{i}_overlay'].name}")


def _new_notes(result: Result, shown: set[str]) -> None:
    """The result's notes not printed yet in this run (an all-zero map and the node to try
    instead), each once."""
    for note in result.notes:
        if note not in shown:
            shown.add(note)
            echo(f"note: {note}", err=True)


def _error_line(path: Path, exc: OnnxCamError) -> dict[str, Any]:
    return {"status": "error", "source": str(path), "error_type": type(exc).__name__,
            "error": str(exc)}  # fmt: skip


def _names(targets: int, overlay: bool, emphasized: bool) -> Callable[[str], list[str]]:
    def names(stem: str) -> list[str]:
        files = file_names(stem, targets, overlay=overlay, emphasized=emphasized)
        own = [name for f in files for name in f.values()]
        return [f"{stem}.json", *own, *report_files(stem).values()]

    return names


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path())
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
    "--method",
    type=click.Choice(list(METHODS)),
    default="scorecam",
    show_default=True,
    help="Saliency method (README: Methods).",
)
@explainer_options
@click.option(
    "--alpha",
    type=InRange(RENDER_LIMITS["alpha"]),
    default=0.5,
    show_default=True,
    help="Weight of the heat map in the overlay.",
)
@click.option(
    "--emphasize",
    is_flag=True,
    help="Also write an overlay of the map through a steep sigmoid (the attended region stands "
    "out, the rest fades).",
)
@click.option(
    "--emphasize-threshold",
    type=InRange(RENDER_LIMITS["emphasize"]),
    default=0.5,
    show_default=True,
    help="Where the emphasized map's sigmoid is centred.",
)
@click.option(
    "--report/--no-report",
    default=None,
    help="Write OUT/index.html and OUT/contact_sheet.png (default: when there are several images).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue a run in -o: skip images already explained with the same settings "
    "(what a rerun does anyway; refuses a folder made with other settings).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the results in -o, even those made with other settings.",
)
@engine_options
def explain(
    model: Path,
    images: tuple[str, ...],
    out_dir: Path,
    alpha: float,
    emphasize: bool,
    emphasize_threshold: float,
    report: bool | None,
    resume: bool,
    overwrite: bool,
    method: str,
    **options: Any,
) -> None:
    """Explain IMAGES (files or folders) with a saliency method (Score-CAM unless --method);
    write maps and records to -o.

    A rerun into the same folder continues where the last one stopped; files are never
    overwritten unless --overwrite.
    """
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    emphasis = emphasize_threshold if emphasize else None
    if options["engine"] == "ray":  # a whole dataset on Ray Data (onnxcam.cli.dataset)
        explain_on_ray(
            model, images, out_dir=out_dir, alpha=alpha, emphasis=emphasis, report=report,
            overwrite=overwrite, options=options, method=method,
        )  # fmt: skip
        return
    refuse_ray_options(options)
    targets = target_specs(options)
    files = image_files(tuple(map(Path, images)), exclude=out_dir)
    explainer = open_explainer(model, options, method)
    settings = run_settings(explainer, targets, alpha)
    settings["emphasize"] = emphasis
    stems = dict(zip(files, relative_stems(files), strict=True))
    with_report = report if report is not None else len(files) > 1
    with OutputFolder(out_dir, settings=settings, inputs=files, overwrite=overwrite) as folder:
        todo = [path for path in files if not folder.is_finished(path)]
        if len(todo) < len(files):
            skipped = len(files) - len(todo)
            echo(f"{skipped} already explained, skipped; --overwrite to redo", err=True)
        failures = 0
        shown = set(explainer.notes)  # printed when the model was opened
        show_bar = len(todo) > 1
        outcomes = explainer.explain_many(todo, target=targets)
        with click.progressbar(
            outcomes, length=len(todo), label="explaining", file=sys.stderr, hidden=not show_bar
        ) as bar:
            for path, (_, result) in zip(todo, bar, strict=True):
                if isinstance(result, OnnxCamError):
                    failures += 1
                    report_error(result, show_bar)
                    folder.record(_error_line(path, result))
                    continue
                names = _names(len(result.targets), result.image is not None, emphasize)
                try:
                    stem = folder.claim(stems[path], names, source=str(path))
                    paths = result.save(
                        folder.out, stem=stem, alpha=alpha, emphasize=emphasis,
                        thumbnails=with_report,
                    )  # fmt: skip
                except OutputError as exc:  # this image's files: the others may still fit
                    failures += 1
                    report_error(exc, show_bar)
                    folder.record(_error_line(path, exc))
                    continue
                record = result.to_record(stem=stem, emphasized=emphasis is not None)
                folder.record({"status": "ok", **record})
                _report(path, result, paths)
                _new_notes(result, shown)
        if with_report:
            written = write_report(out_dir)
            echo(f"report: {written.page}", err=True)
        _skipped(folder.skipped)
    finish(failures, len(todo))
