"""``onnxcam evaluate``: faithfulness metrics of methods and references on images."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from ..errors import ConfigError, OnnxCamError
from ..evaluate import METHODS, SUBSTRATES, Evaluation, summarize
from ..evaluate import evaluate as run_evaluation
from ..outdir import relative_stems
from ..render import ensure_dir, write_atomic
from ..render.evalreport import write_evaluation_report
from ..render.overlay import overlay
from ..render.sheet import thumbnail, write_jpeg
from ..result import version
from .common import (
    echo,
    explainer_options,
    finish,
    image_files,
    open_explainer,
    report_error,
    target_specs,
)


def _map_pictures(folder: Path, evaluations: list[Evaluation]) -> list[tuple[str, dict[str, str]]]:
    """A small overlay of each method's map on each image, for the report's grid."""
    sources = list(dict.fromkeys(str(e.source) for e in evaluations))
    stems = dict(zip(sources, relative_stems([Path(s) for s in sources]), strict=True))
    grid: dict[str, dict[str, str]] = {s: {} for s in sources}
    for ev in evaluations:
        if ev.image is None or ev.saliency is None:
            continue
        small = np.ascontiguousarray(thumbnail(ev.image, 160))
        cam = cv2.resize(
            ev.saliency, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA
        )
        name = f"maps/{stems[str(ev.source)]}_{ev.method}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write_jpeg(folder / name, overlay(small, np.clip(cam, 0, 1)))
        grid[str(ev.source)][ev.method] = name
    return list(grid.items())


@click.command()
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
    "out_path",
    type=click.Path(path_type=Path),
    default=Path("onnxcam_eval"),
    show_default=True,
    help="Folder for evaluation.json, report.html and the maps' pictures (a path ending in "
    ".json names the JSON file; the report goes next to it).",
)
@explainer_options
def evaluate(
    model: Path,
    images: tuple[Path, ...],
    methods: tuple[str, ...],
    steps: int,
    substrate: str,
    seed: int,
    out_path: Path,
    **options: Any,
) -> None:
    """Faithfulness metrics of Score-CAM and reference maps on IMAGES.

    Average Drop (lower is better), Increase in Confidence (higher), Deletion AUC (lower) and
    Insertion AUC (higher); see the README for the formulas. With several targets, the first
    one is evaluated.
    """
    targets = target_specs(options)
    files = image_files(images)
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
                    seed=seed, target=targets,
                )  # fmt: skip
            except ConfigError:
                raise
            except OnnxCamError as exc:
                failures += 1
                report_error(exc, show_bar)
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
            "node": explainer.node_label,
            "steps": steps,
            "substrate": substrate,
            "summary": table,
            "records": [e.to_record() for e in evaluations],
            "onnxcam_version": version(),
        }
        folder = out_path.parent if out_path.suffix == ".json" else out_path
        out_file = out_path if out_path.suffix == ".json" else out_path / "evaluation.json"
        ensure_dir(folder)
        write_atomic(out_file, (json.dumps(document, indent=2) + "\n").encode())
        grid = _map_pictures(folder, evaluations)
        report = write_evaluation_report(folder, document, grid)
        echo(f"\nwrote {out_file} and {report}")
    finish(failures, len(files))
