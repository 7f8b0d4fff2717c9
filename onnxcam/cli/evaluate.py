"""``onnxcam evaluate``: faithfulness metrics of methods and references on images."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, OnnxCamError
from ..evaluate import METHODS, SUBSTRATES, summarize
from ..evaluate import evaluate as run_evaluation
from ..render import ensure_dir, write_atomic
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
            "node": explainer.candidate.label,
            "steps": steps,
            "substrate": substrate,
            "summary": table,
            "records": [e.to_record() for e in evaluations],
            "onnxcam_version": version(),
        }
        if out_file.parent != Path(""):
            ensure_dir(out_file.parent)
        write_atomic(out_file, (json.dumps(document, indent=2) + "\n").encode())
        echo(f"\nwrote {out_file}")
    finish(failures, len(files))
