"""``onnxcam report``: rebuild a run's HTML report and contact sheet from its records."""

from __future__ import annotations

from pathlib import Path

import click

from ..outdir import is_output_folder
from ..render.report import write_report
from .common import echo


@click.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
def report(out_dir: Path) -> None:
    """Rebuild OUT_DIR/index.html and OUT_DIR/contact_sheet.png from OUT_DIR/results.jsonl
    (e.g. after a run that did not write them, or one on another engine)."""
    if not is_output_folder(out_dir):
        raise click.ClickException(
            f"{out_dir} holds no onnxcam run (no run.json and results.jsonl); give the -o "
            "folder of an `onnxcam explain` run"
        )
    written = write_report(out_dir)
    echo(written.page)
    skipped = written.skipped
    if skipped.skipped:
        echo(f"results.jsonl: {skipped.skipped} lines skipped ({skipped.describe()})", err=True)
