"""Pictures and files from arrays and records; nothing here knows the Explainer or Result."""

from __future__ import annotations

from .files import ensure_dir, write_atomic, write_explanation
from .overlay import overlay, saliency_image

__all__ = ["ensure_dir", "overlay", "saliency_image", "write_atomic", "write_explanation"]
