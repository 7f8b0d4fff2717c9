"""What every target is: it declares the outputs it reads, binds once to the clean image, and
turns a batch of outputs into one finite score per sample.

A *spec* (:class:`TargetSpec`) is what the user asks for (``class:281``, ``top:5``,
``embedding:ref=b.jpg``); binding it to one image's clean outputs gives one or more *bound
targets* (:class:`Target`), e.g. the five classes of ``top:5``. A bound target is a callable
``outputs -> (B,)`` that also describes itself for the record. Any callable of that shape is
a target too (see :mod:`onnxcam.targets.custom`).
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError, TargetError
from ..geometry import Geometry
from ..graph import Dim
from ..ops import sigmoid, softmax

__all__ = [
    "BindContext",
    "Key",
    "OutputInfo",
    "OutputTarget",
    "Target",
    "TargetSpec",
    "checked_scores",
    "describe_outputs",
    "is_distribution",
    "pick_output",
    "sigmoid",
    "softmax",
]

Outputs = Mapping[str, np.ndarray]


@runtime_checkable
class Target(Protocol):
    """A target bound to one image: ``target(outputs) -> (B,)`` finite scores."""

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model outputs the target reads."""
        ...

    def __call__(self, outputs: Outputs) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        """``kind``, ``spec``, ``class_index``, ``label``, clean ``score`` and ``summary``."""
        ...


@dataclass(frozen=True)
class OutputTarget:
    """Base of the built-in bound targets: one output read, a record to describe itself.

    Subclasses add their parameters and ``__call__``.
    """

    output: str
    record: dict[str, Any]

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def describe(self) -> dict[str, Any]:
        return dict(self.record)


@dataclass(frozen=True)
class OutputInfo:
    """A model output as the graph declares it.

    Attributes:
        name: the output's name.
        shape: its declared shape (ints, symbols or None per axis), None when unknown.
        activation: ``"softmax"`` or ``"sigmoid"`` when the graph ends in one (looking
            through shape-only ops), else None.
    """

    name: str
    shape: tuple[Dim, ...] | None
    activation: str | None


@dataclass(frozen=True)
class BindContext:
    """What binding needs beyond the clean outputs.

    Attributes:
        outputs: the model's outputs, in graph order.
        labels: class names, when known.
        score_kind: what the method scores when a class target leaves ``prob`` at ``auto``:
            ``"probability"`` or ``"logit"``.
        embed: the clean outputs of another image (a path), run through the same model.
        input_hw: the model input's (height, width) for this image.
        geometry: where the image sits in the input (boxes and regions given in image
            pixels map through it), None when a tensor came without its image.
        metadata: the model's metadata (Ultralytics ``task``, ``names`` ...).
        detection_mode: how a detection target left at its default mode scores an object
            (the method's choice: ``iou``, or ``drise`` for RISE).
    """

    outputs: tuple[OutputInfo, ...]
    labels: Sequence[str] | None
    score_kind: str
    embed: Callable[[str], Outputs]
    input_hw: tuple[int, int] = (0, 0)
    geometry: Geometry | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    detection_mode: str = "iou"

    def label(self, index: int) -> str | None:
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return None

    def info(self, name: str) -> OutputInfo:
        return next(o for o in self.outputs if o.name == name)


@dataclass(frozen=True)
class Key:
    """One ``key=value`` a target kind takes: how to read the text, and what is valid."""

    parse: Callable[[str], Any]
    valid: str
    show: Callable[[Any], str] = str


class TargetSpec(ABC):
    """A target kind's parameters, before binding. Subclasses are frozen dataclasses.

    Class attributes:
        kind: the name in ``KIND[:VALUE][:key=value...]``.
        value: the field that ``VALUE`` sets, or None when the kind takes no value.
        keys: the closed set of keys (field name -> :class:`Key`); ``value`` is among them.
    """

    kind: ClassVar[str]
    value: ClassVar[str | None] = None
    keys: ClassVar[dict[str, Key]] = {}
    aliases: ClassVar[dict[str, str]] = {}  # the key as written -> the field (``class``)

    @abstractmethod
    def bind(self, ctx: BindContext, clean: Outputs) -> list[Target]:
        """The targets this spec means for one image, given its clean outputs.

        Raises:
            ConfigError: the spec does not fit the model (no such output, class out of range).
        """

    @property
    def spec(self) -> str:
        """The canonical text of the spec: the kind, then every setting not at its default."""
        parts = [self.kind]
        for f in fields(self):  # type: ignore[arg-type]
            current = getattr(self, f.name)
            if current == f.default:
                continue
            shown = self.keys[f.name].show(current)
            written = next((k for k, v in self.aliases.items() if v == f.name), f.name)
            parts.append(shown if f.name == self.value else f"{written}={shown}")
        return ":".join(parts)

    @classmethod
    def from_parts(cls, value: str | None, keys: Mapping[str, str], text: str) -> TargetSpec:
        """Build from parsed text, each part checked against the kind's closed set of keys.

        Raises:
            ConfigError: a value where the kind takes none, an unknown key, or a bad value.
        """
        given = dict(keys)
        if value is not None:
            if cls.value is None:
                raise ConfigError(
                    f"target '{text}': kind '{cls.kind}' takes no value after '{cls.kind}:'; "
                    f"use key=value ({', '.join(cls.keys) or 'no keys'})"
                )
            if cls.value in given:
                raise ConfigError(f"target '{text}': {cls.value} is given twice")
            given[cls.value] = value
        settings = {}
        for written, text_value in given.items():
            name = cls.aliases.get(written, written)
            if name in settings:
                raise ConfigError(f"target '{text}': {written} is given twice")
            hidden = written in cls.aliases.values() and written != cls.value  # behind an alias
            key = None if hidden else cls.keys.get(name)
            if key is None:
                raise ConfigError(_unknown_key(text, cls, written))
            try:
                settings[name] = key.parse(text_value)
            except (ValueError, TypeError):
                raise ConfigError(
                    f"target '{text}': {written}={text_value!r} is not valid; {written} takes "
                    f"{key.valid}"
                ) from None
        return cls(**settings)


def _unknown_key(text: str, cls: type[TargetSpec], name: str) -> str:
    shown = {field: written for written, field in cls.aliases.items()}
    valid = [shown.get(k, k) for k in cls.keys if k != cls.value]
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    listed = ", ".join(valid) if valid else "none"
    return (
        f"target '{text}': unknown key '{name}' for kind '{cls.kind}'; {hint}valid keys: {listed}"
    )


def is_distribution(rows: np.ndarray, *, tol: float = 1e-3) -> bool:
    """True when every row is non-negative and sums to 1 (the model ends in a softmax)."""
    return bool(np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, atol=tol))


def describe_outputs(clean: Outputs) -> str:
    """``name (shape), ...`` of the clean outputs, for error messages."""
    return ", ".join(f"'{name}' {tuple(value.shape)}" for name, value in clean.items())


def as_vectors(value: np.ndarray) -> np.ndarray | None:
    """(B, N) or (B, N, 1, 1) outputs as (B, N); None for any other shape."""
    if value.ndim >= 2 and all(d == 1 for d in value.shape[2:]):
        return value.reshape(value.shape[0], value.shape[1])
    return None


def pick_output(ctx: BindContext, clean: Outputs, explicit: str | None, *, kind: str) -> str:
    """The output a target reads: the one named, else the only vector-per-sample output, else
    the only one among them that the graph ends in Softmax/Sigmoid or that is a distribution.

    Never guesses between equally likely outputs.

    Raises:
        ConfigError: the named output does not exist, no output fits, or several could.
    """
    if explicit is not None:
        if explicit not in clean:
            raise ConfigError(
                f"target '{kind}': the model has no output '{explicit}'; its outputs: "
                f"{describe_outputs(clean)}"
            )
        return explicit
    vectors = [name for name, value in clean.items() if as_vectors(value) is not None]
    if len(vectors) == 1:
        return vectors[0]
    if not vectors:
        raise ConfigError(
            f"target '{kind}' needs an output of shape (batch, N); the model's outputs are "
            f"{describe_outputs(clean)}; use index:output=NAME:at=... for one element"
        )
    scored = [
        name
        for name in vectors
        if ctx.info(name).activation is not None or is_distribution(as_vectors(clean[name]))  # type: ignore[arg-type]
    ]
    if len(scored) == 1 and kind != "embedding":
        return scored[0]
    listed = ", ".join(f"'{n}' {tuple(clean[n].shape)}" for n in vectors)
    raise ConfigError(
        f"target '{kind}': several outputs could be meant ({listed}); pick one with "
        f"--target {kind}:output=NAME"
    )


def checked_scores(target: Target, outputs: Outputs, rows: int) -> np.ndarray:
    """The target's scores of ``rows`` samples, checked: exactly one finite float each.

    Raises:
        TargetError: anything else, naming the target, the output shapes and what it returned.
    """
    try:
        raw = target(outputs)
    except (ConfigError, TargetError):
        raise
    except Exception as exc:
        raise TargetError(
            f"target {_name(target)} failed on outputs {describe_outputs(outputs)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    value = np.asarray(raw)
    if value.dtype == object or not np.issubdtype(value.dtype, np.number):
        raise TargetError(
            f"target {_name(target)} returned {type(raw).__name__} of dtype {value.dtype} for "
            f"outputs {describe_outputs(outputs)}; it must return one number per sample, "
            f"shape ({rows},)"
        )
    if value.shape not in ((rows,), (rows, 1)):
        raise TargetError(
            f"target {_name(target)} returned shape {value.shape} for outputs "
            f"{describe_outputs(outputs)}; it must return one number per sample, shape ({rows},)"
        )
    value = value.reshape(rows).astype(np.float64)
    if not np.isfinite(value).all():
        bad = int((~np.isfinite(value)).sum())
        raise TargetError(
            f"target {_name(target)} returned {bad} NaN or Inf value(s) of {rows} for outputs "
            f"{describe_outputs(outputs)}"
        )
    return value


def _name(target: Target) -> str:
    try:
        return f"'{target.describe()['spec']}'"
    except Exception:
        return repr(target)
