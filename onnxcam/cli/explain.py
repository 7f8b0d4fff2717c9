"""``onnxcam explain``: maps, overlays and records for images and folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import OnnxCamError
from ..render import ensure_dir, write_atomic
from ..result import Result
from .common import (
    echo,
    explainer_options,
    finish,
    image_files,
    open_explainer,
    report_error,
    stems,
    target_specs,
)


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


@click.command()
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
    targets = target_specs(options)
    files = image_files(images)
    explainer = open_explainer(model, options)
    ensure_dir(out_dir)
    failures = 0
    records = []
    show_bar = len(files) > 1
    names = stems(files)
    outcomes = explainer.explain_many(files, target=targets)
    with click.progressbar(
        outcomes, length=len(files), label="explaining", file=sys.stderr, hidden=not show_bar
    ) as bar:
        for path, stem, (_, result) in zip(files, names, bar, strict=True):
            if isinstance(result, OnnxCamError):
                failures += 1
                report_error(result, show_bar)
                continue
            paths = result.save(out_dir, stem=stem, alpha=alpha)
            records.append(result.to_record(stem=stem))
            _report(path, result, paths)
    if len(files) > 1:
        lines = "".join(json.dumps(r) + "\n" for r in records)
        write_atomic(out_dir / "results.jsonl", lines.encode())
    finish(failures, len(files))
