"""Target specs from text and JSON: ``KIND[:VALUE][:key=value...]``, parsed, never evaluated.

Each kind has a closed set of keys with typed values; an unknown kind or key is an error that
names the closest valid one. A bare number is a class (``281`` = ``class:281``). Values may
not contain ``:``. A target file holds a JSON object or a list of them, with ``kind`` and the
same keys (``{"kind": "top", "value": 5, "prob": "logit"}``).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..smallfiles import read_small_text
from .auto import AutoSpec
from .base import TargetSpec
from .classify import ClassSpec, TopSpec
from .custom import CallableSpec
from .detection import DetectionSpec
from .embedding import EmbeddingSpec
from .index import IndexSpec
from .segmentation import SegmentationSpec

__all__ = ["KINDS", "TargetLike", "load_target_file", "parse_target", "resolve_targets"]

MAX_TARGET_FILE_BYTES = 16 * 2**20  # thousands of boxes fit in far less

#: Target kinds by name; adding a kind is one module and one line here.
KINDS: dict[str, type[TargetSpec]] = {
    spec.kind: spec
    for spec in (
        ClassSpec,
        TopSpec,
        DetectionSpec,
        SegmentationSpec,
        EmbeddingSpec,
        IndexSpec,
        AutoSpec,
    )
}

TargetLike = int | str | TargetSpec | Callable[..., Any]


def _kind(name: str, text: str) -> type[TargetSpec]:
    if name in KINDS:
        return KINDS[name]
    close = difflib.get_close_matches(name, list(KINDS), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(
        f"target '{text}': unknown kind '{name}'; {hint}valid kinds: {', '.join(KINDS)} "
        "(or a class number)"
    )


def parse_target(text: str) -> TargetSpec:
    """One spec from text, e.g. ``281``, ``class:281:prob=logit``, ``top:5``.

    Raises:
        ConfigError: empty text, unknown kind or key, a malformed part or a bad value.
    """
    text = str(text).strip()
    if not text:
        raise ConfigError("empty target; valid: a class number, or KIND[:VALUE][:key=value...]")
    head, *rest = text.split(":")
    kind: type[TargetSpec]
    if head.lstrip("+-").isdigit():
        kind, rest = ClassSpec, [head, *rest]
    else:
        kind = _kind(head, text)
    value: str | None = None
    keys: dict[str, str] = {}
    for position, part in enumerate(rest):
        if "=" in part:
            key, _, raw = part.partition("=")
            if key in keys:
                raise ConfigError(f"target '{text}': key '{key}' is given twice")
            keys[key] = raw
        elif position == 0:
            value = part
        else:
            raise ConfigError(
                f"target '{text}': '{part}' is not key=value (only the part right after the "
                "kind may be a bare value)"
            )
    return kind.from_parts(value, keys, text)


def _from_mapping(entry: Mapping[str, Any], where: str) -> TargetSpec:
    if not isinstance(entry, Mapping) or "kind" not in entry:
        raise ConfigError(f"{where}: each target is a JSON object with a 'kind', got {entry!r:.80}")
    kind = _kind(str(entry["kind"]), where)
    keys: dict[str, str] = {}
    for key, raw in entry.items():
        if key == "kind":
            continue
        if isinstance(raw, list) and all(isinstance(v, (int, float)) for v in raw):
            keys[key] = ",".join(str(v) for v in raw)
        elif isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            keys[key] = str(raw)
        else:
            raise ConfigError(f"{where}: {key}={raw!r:.80} must be a string, a number or numbers")
    value = keys.pop("value", None)
    return kind.from_parts(value, keys, where)


def load_target_file(path: str | Path) -> list[TargetSpec]:
    """Specs from a JSON file: one object or a list of objects (``kind`` plus its keys).

    Raises:
        ConfigError: unreadable file, invalid JSON, or a bad spec.
    """
    path = Path(path)
    text = read_small_text(path, what="target file", limit=MAX_TARGET_FILE_BYTES)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"target file {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"target file {path} is nested too deeply to hold targets") from None
    entries = document if isinstance(document, list) else [document]
    if not entries:
        raise ConfigError(f"target file {path} holds no targets")
    return [_from_mapping(e, f"target file {path.name} entry {i}") for i, e in enumerate(entries)]


def resolve_targets(target: TargetLike | Iterable[TargetLike] | None) -> list[TargetSpec]:
    """Specs from what the API takes: None (``auto``: detections for a detector, the main
    class for a segmenter, else the top class), a class number, spec text, a
    spec, a callable ``outputs -> (B,)``, or a list of these.

    Raises:
        ConfigError: a value of another type, or a bad spec.
    """
    if target is None:
        return [AutoSpec()]
    if isinstance(target, TargetSpec):
        return [target]
    if isinstance(target, str):
        return [parse_target(target)]
    if isinstance(target, bool):
        raise ConfigError(f"target {target!r} is not a class number, a spec or a callable")
    if isinstance(target, int) or hasattr(target, "__index__"):
        index = int(target)  # type: ignore[arg-type]
        if index < 0:
            raise ConfigError(f"target class {index} is negative; classes count from 0")
        return [ClassSpec(index=index)]
    if callable(target):
        return [CallableSpec(fn=target)]
    if isinstance(target, Iterable):
        specs = [spec for item in target for spec in resolve_targets(item)]
        if not specs:
            raise ConfigError("the list of targets is empty")
        return specs
    raise ConfigError(
        f"target of type {type(target).__name__} is not a class number, a spec or a callable"
    )
