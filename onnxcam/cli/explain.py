"""``onnxcam explain``: maps, overlays and records for images and folders."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ..config import RENDER_LIMITS, model_sha256
from ..errors import OnnxCamError
from ..explain import Explainer
from ..methods import METHODS
from ..outdir import OutputFolder, relative_stems
from ..render import build_report, report_files, write_thumbnails
from ..result import Result, file_names, version
from ..targets import TargetSpec
from .common import (
    InRange,
    echo,
    explainer_options,
    finish,
    image_files,
    open_explainer,
    report_error,
    target_specs,
)
from .scale import engine_options, explain_on_ray, refuse_ray_options


def _channels(result: Result) -> str:
    info = result.targets[0].info
    if "masks_run" in info:
        fidelity = info.get("fidelity_estimate")
        shown = "" if fidelity is None else f", fidelity estimate {fidelity:.3f}"
        return f", {info['masks_run']}/{info['masks_planned']} masks within the budget{shown}"
    if "channels_used" not in result.stats:
        return ""
    return f", {result.channels_used}/{result.channels_total} channels"


def _report(path: Path, result: Result, paths: dict[str, Path]) -> None:
    cost = f"{_channels(result)}, {result.timings['total_s']:.2f}s"
    if len(result.targets) == 1:
        echo(f"{path}: {result.targets[0].info['summary']}{cost} -> {paths['overlay']}")
        return
    echo(f"{path}: {len(result.targets)} targets{cost} -> {paths['json']}")
    for i, target in enumerate(result.targets):
        echo(f"  t{i}: {target.info['summary']} -> {paths[f't{i}_overlay'].name}")


def run_settings(
    explainer: Explainer, targets: list[TargetSpec] | None, alpha: float
) -> dict[str, Any]:
    """What decides the contents of a run's files (see :mod:`onnxcam.outdir`)."""
    config = explainer.config
    return {
        "model_sha256": model_sha256(config.model),
        "node": ",".join(c.tensor for c in explainer.candidates),
        "method": explainer.method.name,
        "method_options": explainer.method.options(),
        "preprocess": asdict(explainer.norm),
        "input": [explainer.spec.height, explainer.spec.width, explainer.spec.layout],
        "targets": None if targets is None else [t.spec for t in targets],
        "labels": config.labels,
        "fp16": config.fp16,
        "alpha": alpha,
        "onnxcam_version": version(),
    }


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
    if options["engine"] == "ray":  # a whole dataset on Ray Data (onnxcam.cli.scale)
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
        show_bar = len(todo) > 1
        outcomes = explainer.explain_many(todo, target=targets)
        with click.progressbar(
            outcomes, length=len(todo), label="explaining", file=sys.stderr, hidden=not show_bar
        ) as bar:
            for path, (_, result) in zip(todo, bar, strict=True):
                if isinstance(result, OnnxCamError):
                    failures += 1
                    report_error(result, show_bar)
                    folder.record(
                        {"status": "error", "source": str(path),
                         "error_type": type(result).__name__, "error": str(result)}
                    )  # fmt: skip
                    continue
                names = _names(len(result.targets), result.image is not None, emphasize)
                stem = folder.claim(stems[path], names)
                paths = result.save(out_dir, stem=stem, alpha=alpha, emphasize=emphasis)
                if with_report:
                    write_thumbnails(
                        out_dir, stem, result.image, result.saliency, alpha=alpha,
                        marks=result.targets[0].marks(),
                    )  # fmt: skip
                record = result.to_record(stem=stem, emphasized=emphasis is not None)
                folder.record({"status": "ok", **record})
                _report(path, result, paths)
        if with_report:
            echo(f"report: {build_report(out_dir)}", err=True)
    finish(failures, len(todo))
