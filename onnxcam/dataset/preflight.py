"""Preflight: refuse, before anything starts, what a cluster could never run.

Ray itself would wait: for a GPU on a cluster without one (in silence, for 30 minutes and more),
for CPUs that a pool larger than the cluster never gets, for files on a node that does not
mount the output folder. These checks are plain functions of what the cluster reports, so they
are testable without one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from ..errors import ClusterError

__all__ = ["check_resources", "sees_shared"]


def check_resources(
    resources: Mapping[str, float],
    *,
    workers: tuple[int, int] | None,
    cpus_per_worker: float,
    gpus_per_worker: float,
    reserve_cpus: float = 0.0,
) -> tuple[int, int]:
    """The pool to start on a cluster with ``resources``, or a :class:`ClusterError` saying
    why Ray would wait forever.

    ``reserve_cpus`` are left for the tasks that read the Dataset and write its output: a
    pool that takes every CPU deadlocks a Dataset that has such tasks (its actors wait for
    blocks that no task can run to make). The managed job reads its manifest and writes its
    table in its own process, outside Ray's accounting, so it reserves none. A pool that does
    not fit would wait (for a GPU: in silence, for 30 minutes and more). Default: as many
    workers as fit.
    """
    cpus = max(0.0, float(resources.get("CPU", 0.0)) - reserve_cpus)
    gpus = float(resources.get("GPU", 0.0))
    have = f"the cluster has {float(resources.get('CPU', 0.0)):g} CPUs and {gpus:g} GPUs"
    if reserve_cpus > 0:
        have += f" ({reserve_cpus:g} CPU left for reading and writing)"
    if gpus_per_worker > 0 and gpus == 0:
        raise ClusterError(
            f"--gpus-per-worker {gpus_per_worker:g} asks for GPUs, but {have}; Ray would wait "
            "for one forever. Leave it out, or connect to a cluster with GPUs (--address)"
        )
    fits = [cpus / cpus_per_worker]
    if gpus_per_worker > 0:
        fits.append(gpus / gpus_per_worker)
    fit = math.floor(min(fits) + 1e-9)
    need = f"{cpus_per_worker:g} CPUs" + (
        f" and {gpus_per_worker:g} GPUs" if gpus_per_worker > 0 else ""
    )
    if fit < 1:
        raise ClusterError(
            f"a worker needs {need} (--cpus-per-worker/--gpus-per-worker), but {have}"
        )
    if workers is None:
        return fit, fit
    low, high = workers
    if low > fit:
        raise ClusterError(
            f"{low} workers of {need} each do not fit: {have}, so at most {fit} can run and "
            f"the rest would wait forever; use --workers {fit} (or MIN:MAX to autoscale)"
        )
    return low, high


def sees_shared(out_dir: str, token: str, files: list[str]) -> str | None:
    """Run on each node: what it cannot see of the driver's output folder (``token`` is a
    file the driver just wrote there) and of ``files``; None when it sees everything."""
    if not os.path.isfile(os.path.join(out_dir, token)):
        return f"does not see the output folder {out_dir}"
    if not os.access(out_dir, os.W_OK):
        return f"cannot write to the output folder {out_dir}"
    for file in files:
        if not os.path.isfile(file):
            return f"does not see {file}"
    return None
