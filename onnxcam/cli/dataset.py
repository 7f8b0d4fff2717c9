"""``onnxcam explain --engine ray``: a whole dataset on Ray Data (the options and the run).

Nothing here imports Ray or pyarrow until ``--engine ray`` is given, so a local run never
loads them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import JOB_LIMITS
from .common import (
    IMAGE_SUFFIXES,
    InRange,
    collect_images,
    echo,
    finish,
    open_explainer,
    option_group,
    run_settings,
    target_specs,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from ..dataset.job import Progress

ENGINES = ("local", "ray")
_RAY_ONLY = (
    "address", "workers", "cpus_per_worker", "gpus_per_worker", "max_crashes", "stall_timeout",
)  # fmt: skip
_SHOWN_ERRORS = 10


def _workers(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    if value is None:
        return None
    low, sep, high = value.partition(":")
    try:
        bounds = (int(low), int(high) if sep else int(low))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not N or MIN:MAX, e.g. 4 or 2:8") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise click.BadParameter(f"'{value}': need 1 <= MIN <= MAX, e.g. 4 or 2:8")
    return bounds


_ENGINE_OPTIONS = [
    click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                 help="local: this process; ray: a Ray Data actor pool (pip install "
                      "'onnxcam[ray]'), for whole datasets, resumable."),
    click.option("--address", metavar="auto|ray://HOST:PORT",
                 help="Ray cluster to use (default: RAY_ADDRESS, else a new local Ray)."),
    click.option("--workers", callback=_workers, metavar="N|MIN:MAX",
                 help="Ray workers: a fixed pool, or MIN:MAX to autoscale (default: all that "
                      "fit)."),
    click.option("--cpus-per-worker", type=InRange(JOB_LIMITS["cpus_per_worker"]), default=1.0,
                 show_default=True, help="CPUs per Ray worker (also its ONNX Runtime threads)."),
    click.option("--gpus-per-worker", type=InRange(JOB_LIMITS["gpus_per_worker"]), default=0.0,
                 show_default=True, help="GPUs per Ray worker; the worker runs on CUDA."),
    click.option("--max-crashes", type=InRange(JOB_LIMITS["max_crashes"]), default=2,
                 show_default=True,
                 help="Times an image may kill its Ray worker (run alone) before it is "
                      "recorded as an error."),
    click.option("--stall-timeout", type=InRange(JOB_LIMITS["stall_timeout_s"]), default=600.0,
                 show_default=True, metavar="SECONDS",
                 help="Stop a Ray job in which no image finished for this long."),
]  # fmt: skip


engine_options = option_group(_ENGINE_OPTIONS)  # ``--engine`` and the Ray options


def refuse_ray_options(options: dict[str, Any]) -> None:
    """A Ray option without ``--engine ray`` would be ignored in silence: say so."""
    ctx = click.get_current_context()
    for name in _RAY_ONLY:
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT):
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{flag} needs --engine ray")


def dataset_manifest(images: tuple[str, ...], out_dir: Path) -> pa.Table:
    """The images to explain: one manifest (``.csv``/``.parquet``), or files and folders,
    local or URIs (folders listed recursively, outputs never taken as inputs)."""
    from ..dataset.manifest import from_paths, is_manifest, is_uri, list_folder, read_manifest

    manifests = [i for i in images if is_manifest(i)]
    if manifests:
        if len(images) > 1:
            raise click.UsageError("give one manifest (.csv or .parquet) alone, or images")
        return read_manifest(manifests[0])
    paths: list[str] = []
    for given in images:
        if not is_uri(given):
            paths += [str(p) for p in collect_images([Path(given)], exclude=out_dir)]
        elif Path(given).suffix.lower() in IMAGE_SUFFIXES:
            paths.append(given)
        else:
            paths += list_folder(given, IMAGE_SUFFIXES)
    if not paths:
        raise click.ClickException("no image files found in " + ", ".join(images))
    return from_paths(list(dict.fromkeys(paths)))


def _progress(p: Progress) -> None:
    if p.stalled:
        echo(f"no image finished for {p.idle_s:.0f} s: {p.stalled}", err=True)
        return
    left = p.total - p.done
    eta = f", {left / p.rate:.0f} s left" if p.rate > 0 and left else ""
    echo(
        f"{p.done}/{p.total} images ({p.errors} failed), {p.rate:.1f}/s, {p.elapsed_s:.0f} s{eta}",
        err=True,
    )


def explain_on_ray(
    model: Path,
    images: tuple[str, ...],
    *,
    out_dir: Path,
    alpha: float,
    emphasis: float | None,
    report: bool | None,
    overwrite: bool,
    options: dict[str, Any],
    method: str = "scorecam",
) -> None:
    """Run ``explain`` with ``method`` as a Ray job; print the progress, the failures and one
    summary line."""
    from ..dataset.ray import JobOptions, run_job  # imports Ray: only here

    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", str(out_dir)):  # click made s3://b/o s3:/b/o
        raise click.BadParameter(
            "the output must be a folder (local, or mounted on every node, e.g. NFS); "
            "object-store outputs are not supported yet",
            param_hint="-o",
        )
    targets = target_specs(options)
    manifest = dataset_manifest(images, out_dir)
    explainer = open_explainer(model, options, method)
    settings = run_settings(explainer, targets, alpha)
    settings["emphasize"] = emphasis
    job = JobOptions(
        address=options["address"],
        workers=options["workers"],
        cpus_per_worker=options["cpus_per_worker"],
        gpus_per_worker=options["gpus_per_worker"],
        max_crashes=options["max_crashes"],
        alpha=alpha,
        emphasize=emphasis,
        report=report if report is not None else manifest.num_rows > 1,
        overwrite=overwrite,
        stall_timeout_s=options["stall_timeout"],
    )
    if manifest.num_rows > 1:
        echo(f"{manifest.num_rows} images, on Ray", err=True)
    summary = run_job(
        manifest,
        explainer,
        out_dir=out_dir,
        settings=settings,
        target=targets,
        options=job,
        on_progress=_progress,
    )
    if summary.skipped:
        echo(f"{summary.skipped} already explained, skipped; --overwrite to redo", err=True)
    for _, message in summary.first_errors[:_SHOWN_ERRORS]:
        echo(f"Error: {message}", err=True)
    more = summary.errors - min(len(summary.first_errors), _SHOWN_ERRORS)
    if more > 0:
        echo(f"... and {more} more failed images: see {summary.table}", err=True)
    if summary.report:
        echo(f"report: {summary.report}", err=True)
    echo(
        f"{summary.ok} of {summary.inputs} explained ({summary.skipped} in an earlier run), "
        f"{summary.errors} failed, {summary.lost} lost, in {summary.wall_s:.1f} s -> "
        f"{summary.table}"
    )
    if summary.stopped == "interrupted":
        echo("Error: interrupted; rerun the same command to continue (--resume)", err=True)
        raise SystemExit(130)
    if summary.fatal is not None:
        raise summary.fatal
    finish(summary.errors + summary.lost, summary.inputs - summary.skipped)
