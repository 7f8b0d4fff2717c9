"""Class labels from a file or from the model's ``metadata_props``, read within limits."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError
from .smallfiles import read_small_text

__all__ = [
    "MAX_LABELS",
    "MAX_LABELS_BYTES",
    "METADATA_KEYS",
    "LabelError",
    "labels_from_metadata",
    "load_labels",
    "parse_labels",
]

# Keys exporters use for class names; the first present one wins.
METADATA_KEYS = ("labels", "classes", "class_names", "names", "character")
# Limits that keep a hostile labels text from costing gigabytes (a dict with the key 10**9
# would otherwise become a list of a billion names).
MAX_LABELS = 100_000
MAX_LABELS_BYTES = 16 * 2**20


class LabelError(ValueError):
    """A labels text that cannot be read as class names, or exceeds the limits."""


def parse_labels(text: str) -> list[str] | None:
    """Labels from JSON (list, or dict of index to name), a Python dict literal (read as a
    literal, never evaluated), or lines; None for an empty text.

    Raises:
        LabelError: beyond :data:`MAX_LABELS` names or :data:`MAX_LABELS_BYTES`, or a dict
            whose keys are not class indices 0..MAX_LABELS-1.
    """
    if len(text) > MAX_LABELS_BYTES:
        raise LabelError(f"{len(text):,} characters of labels, more than {MAX_LABELS_BYTES:,}")
    text = text.strip()
    if not text:
        return None
    value: object = None
    if text[0] in "[{":
        try:
            value = json.loads(text)
        except RecursionError:
            raise LabelError("labels nested too deeply to be class names") from None
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(text)  # literals only, e.g. "{0: 'person'}"
            except RecursionError:
                raise LabelError("labels nested too deeply to be class names") from None
            except (ValueError, SyntaxError, MemoryError, TypeError):
                value = None
    if isinstance(value, list):
        names = [str(v) for v in value]
    elif isinstance(value, dict):
        names = _from_dict(value)
    else:
        names = [line.strip() for line in text.splitlines()]
    if len(names) > MAX_LABELS:
        raise LabelError(f"{len(names):,} labels, more than {MAX_LABELS:,}")
    return names


def _from_dict(value: dict) -> list[str]:
    try:
        items = sorted((int(k), str(v)) for k, v in value.items())
    except (TypeError, ValueError):
        raise LabelError("a dict of labels needs class indices as keys") from None
    if items and (items[0][0] < 0 or items[-1][0] >= MAX_LABELS):
        bad = items[0][0] if items[0][0] < 0 else items[-1][0]
        raise LabelError(f"label key {bad} is not a class index 0..{MAX_LABELS - 1}")
    names = [""] * (items[-1][0] + 1) if items else []
    for i, name in items:
        names[i] = name
    return names


def load_labels(path: str | Path) -> list[str]:
    """Read a labels file: one name per line, or a JSON list / dict.

    Raises:
        ConfigError: unreadable, empty, or beyond the limits.
    """
    path = Path(path)
    text = read_small_text(path, what="labels file", limit=MAX_LABELS_BYTES)
    try:
        labels = parse_labels(text)
    except LabelError as exc:
        raise ConfigError(f"labels file {path}: {exc}") from None
    if not labels:
        raise ConfigError(f"labels file {path} holds no labels (one name per line, or JSON)")
    return labels


def labels_from_metadata(metadata: Mapping[str, str]) -> list[str] | None:
    """Labels stored in the model's ``metadata_props``, if any.

    Raises:
        LabelError: the labels there are beyond the limits or malformed (the caller may go on
            without them).
    """
    for key in METADATA_KEYS:
        if key in metadata:
            try:
                labels = parse_labels(metadata[key])
            except LabelError as exc:
                raise LabelError(f"metadata '{key}': {exc}") from None
            if labels:
                return labels
    return None
