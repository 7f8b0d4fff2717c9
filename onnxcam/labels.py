"""Class labels from a file or from the model's ``metadata_props``."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError

__all__ = ["METADATA_KEYS", "labels_from_metadata", "load_labels", "parse_labels"]

# Keys exporters use for class names; the first present one wins.
METADATA_KEYS = ("labels", "classes", "class_names", "names", "character")


def parse_labels(text: str) -> list[str] | None:
    """Labels from JSON (list, or dict of index to name), a Python dict literal, or lines."""
    text = text.strip()
    if not text:
        return None
    value: object = None
    if text[0] in "[{":
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(text)  # literals only, e.g. "{0: 'person'}"
            except (ValueError, SyntaxError):
                value = None
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        try:
            items = sorted((int(k), str(v)) for k, v in value.items())
        except ValueError:
            return None
        names = [""] * (items[-1][0] + 1) if items else []
        for i, name in items:
            names[i] = name
        return names
    return [line.strip() for line in text.splitlines()]


def load_labels(path: str | Path) -> list[str]:
    """Read a labels file: one name per line, or a JSON list / dict."""
    path = Path(path)
    try:
        labels = parse_labels(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read labels file {path}: {exc}") from exc
    if not labels:
        raise ConfigError(f"labels file {path} holds no labels (one name per line, or JSON)")
    return labels


def labels_from_metadata(metadata: Mapping[str, str]) -> list[str] | None:
    """Labels stored in the model's ``metadata_props``, if any."""
    for key in METADATA_KEYS:
        if key in metadata:
            labels = parse_labels(metadata[key])
            if labels:
                return labels
    return None
