"""The former name of :mod:`onnxcam.dataset.ray` (imports Ray)."""

from ..dataset.ray import (
    JobOptions,
    JobSummary,
    Progress,
    check_resources,
    explain_dataset,
    ray_session,
    run_job,
)

__all__ = [
    "JobOptions",
    "JobSummary",
    "Progress",
    "check_resources",
    "explain_dataset",
    "ray_session",
    "run_job",
]
