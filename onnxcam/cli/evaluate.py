"""``onnxcam evaluate``: faithfulness metrics of methods and references on images."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from ..config import unused_flags
from ..confined import Confined
from ..errors import ConfigError, OnnxCamError
from ..evaluate import COMPARED, REFERENCES, SUBSTRATES, Evaluation, format_table, summarize
from ..evaluate import evaluate as run_evaluation
from ..methods import METHODS as METHOD_CLASSES
from ..outdir import relative_stems
from ..quantus import quantus_npz
from ..records import to_json
from ..render import ensure_dir, write_atomic
from ..render.evalreport import write_evaluation_report
from ..render.files import check_replaceable
from ..render.overlay import overlay
from ..render.sheet import thumbnail, write_jpeg
from ..result import version
from ..smallfiles import read_small_text
from .common import (
    echo,
    explainer_options,
    finish,
    flags_given,
    image_files,
    method_settings,
    open_explainer,
    report_error,
    target_specs,
)

MAX_BOXES_BYTES = 64 * 2**20  # boxes for every image of a large evaluation fit in far less


def _map_pictures(folder: Path, evaluations: list[Evaluation]) -> list[tuple[str, dict[str, str]]]:
    """A small overlay of each method's map on each image, for the report's grid."""
    out = Confined(folder)
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
        write_jpeg(out, name, overlay(small, np.clip(cam, 0, 1)))
        grid[str(ev.source)][ev.method] = name
    return list(grid.items())


def _methods(given: tuple[str, ...]) -> tuple[str, ...]:
    """The methods named by ``--method`` (comma-separated or repeated), in order, once each."""
    if not given:
        return ("scorecam", "activation", *REFERENCES)
    names = [name.strip() for text in given for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in COMPARED]
    if unknown:
        raise click.BadParameter(
            f"unknown method '{unknown[0]}'; valid: {', '.join(COMPARED)}",
            param_hint="'--method'",
        )
    return tuple(dict.fromkeys(names))


def _boxes(path: Path) -> dict[str, Any]:
    """The ``--boxes`` file: image file name -> its boxes."""
    try:
        found = json.loads(read_small_text(path, what="file", limit=MAX_BOXES_BYTES))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--boxes'") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="'--boxes'") from None
    if not isinstance(found, dict):
        raise click.BadParameter(
            "expected a JSON object of file name -> boxes", param_hint="'--boxes'"
        )
    return found


def _image_boxes(truth: dict[str, Any], files: list[Path]) -> dict[Path, list[Any]]:
    """Each image's boxes: under its path as given, or its file name."""
    found = {}
    for path in files:
        boxes = truth.get(str(path), truth.get(path.name))
        if not isinstance(boxes, list):
            why = "no entry" if boxes is None else "not a list of boxes"
            raise click.BadParameter(f"{why} for {path.name}", param_hint="'--boxes'")
        found[path] = boxes
    return found


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--method",
    "methods",
    multiple=True,
    metavar="NAME[,NAME...]",
    help=f"Methods and references to compare (comma-separated or repeated; from "
    f"{', '.join(COMPARED)}; default: scorecam, activation, center, random).",
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
@click.option(
    "--boxes",
    "boxes_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Ground-truth boxes for the pointing games: JSON mapping image file names to lists "
    'of [x0, y0, x1, y1] or {"box": [...], "class": N} in image pixels.',
)
@click.option("--road/--no-road", default=True, show_default=True, help="Run ROAD.")
@click.option(
    "--adcc/--no-adcc",
    default=True,
    show_default=True,
    help="Compute ADCC (each method's map of its explanation input: its passes once more).",
)
@click.option(
    "--quantus",
    "quantus_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the maps, inputs and targets as a .npz for Quantus (README: Evaluate).",
)
@explainer_options
def evaluate(
    model: Path,
    images: tuple[Path, ...],
    methods: tuple[str, ...],
    steps: int,
    substrate: str,
    out_path: Path,
    boxes_file: Path | None,
    road: bool,
    adcc: bool,
    quantus_file: Path | None,
    **options: Any,
) -> None:
    """Faithfulness metrics of saliency methods and reference maps on IMAGES.

    Average Drop (lower is better), Increase in Confidence (higher), Deletion AUC (lower),
    Insertion AUC (higher), ROAD MoRF (lower) and LeRF (higher), ADCC (higher) and, with
    --boxes, the pointing game and the energy-based pointing game (higher); see the README
    for the formulas. With several targets, the first one is evaluated. Method flags
    (--samples, --groups, ...) and --compat go to the methods that take them.
    """
    if quantus_file is not None and not quantus_file.name:  # checked before any pass runs
        raise click.BadParameter("needs a file name, e.g. maps.npz", param_hint="--quantus")
    if quantus_file is not None:
        check_replaceable(quantus_file)
    folder = out_path.parent if out_path.suffix == ".json" else out_path
    out_file = out_path if out_path.suffix == ".json" else out_path / "evaluation.json"
    if folder.exists() and not folder.is_dir():  # before any pass runs, not after the table
        raise click.BadParameter(f"{folder} exists and is not a folder", param_hint="--output")
    chosen = _methods(methods)
    targets = target_specs(options)
    files = image_files(images)
    truth = None if boxes_file is None else _image_boxes(_boxes(boxes_file), files)
    explained = [m for m in chosen if m not in REFERENCES]
    own = explained[0] if explained else "scorecam"
    head = any(METHOD_CLASSES[m].space in ("head", "linear") for m in explained)
    explainer = open_explainer(model, options, own, strict=False, split_head=head)
    settings = {m: method_settings(m, options, strict=False) for m in explained}
    unused = unused_flags(explained, flags_given(options))
    if unused:
        raise click.UsageError(f"none of the methods compared takes {', '.join(unused)}")
    seed = options["seed"] or 0
    evaluations = []
    failures = 0
    show_bar = len(files) > 1
    with click.progressbar(files, label="evaluating", file=sys.stderr, hidden=not show_bar) as bar:
        for path in bar:
            try:
                evaluations += run_evaluation(
                    explainer, path, methods=chosen, settings=settings, steps=steps,
                    substrate=substrate, seed=seed, target=targets, road=road, adcc=adcc,
                    boxes=None if truth is None else truth[path],
                )  # fmt: skip
            except ConfigError:
                raise
            except OnnxCamError as exc:
                failures += 1
                report_error(exc, show_bar)
    if evaluations:
        table = summarize(evaluations)
        for line in format_table(table):
            echo(line)
        document = {
            "model": str(model),
            "node": explainer.node_label,
            "steps": steps,
            "substrate": substrate,
            "summary": table,
            "records": [e.to_record() for e in evaluations],
            "onnxcam_version": version(),
        }
        ensure_dir(folder)
        write_atomic(out_file, (to_json(document, indent=2) + "\n").encode())
        grid = _map_pictures(folder, evaluations)
        report = write_evaluation_report(folder, document, grid)
        echo("")
        echo(f"wrote {out_file} and {report}")
        if quantus_file is not None:
            write_atomic(quantus_file, quantus_npz(evaluations))
            echo(f"wrote {quantus_file}")
    finish(failures, len(files))
