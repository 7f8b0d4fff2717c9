"""Pictures and files from arrays and records; nothing here knows the Explainer or Result."""

from __future__ import annotations

from .files import ensure_dir, write_atomic, write_explanation
from .overlay import Mark, draw_marks, emphasize, overlay, saliency_image
from .report import build_report, report_files, write_thumbnails

__all__ = [
    "Mark",
    "build_report",
    "draw_marks",
    "emphasize",
    "ensure_dir",
    "overlay",
    "report_files",
    "saliency_image",
    "write_atomic",
    "write_explanation",
    "write_thumbnails",
]
