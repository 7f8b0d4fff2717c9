"""Requests and answers of the service as plain data: what a request asks for, checked, and the
answer's JSON. Nothing here speaks HTTP or imports kserve.

An ``:explain`` request::

    {"instances": [{"image": {"b64": "<PNG/JPEG/... bytes>"}, "target": "top:3"},
                   {"tensor": [[[...]]]}],
     "parameters": {"method": "scorecam", "budget_s": 0.25, "target": "top:1"}}

An instance is an encoded image (``image``) or a model input in the model's layout and dtype
(``tensor``: nested lists, or ``{"b64": ...}`` of a ``.npy``), with or without the batch axis;
``target`` (a spec or a list of them) is per instance or in the parameters. Specs that name a
file on the server (``embedding:ref=``, ``segmentation:mask=``) are refused: a request names
nothing on the server's disk. The answer is ``{"explanations": [...]}``, one per instance: the
record (as ``onnxcam explain`` writes it) and each target's map as ``{"b64": ...}`` of a float32
``.npy`` at the image's size, in the order of the record's targets.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import MAX_SECONDS
from ..errors import ConfigError, ImageError
from ..images import decode_image
from ..methods import METHODS
from ..preprocess import InputSpec
from ..result import Result
from ..targets import TargetSpec, parse_target

__all__ = [
    "PARAMETERS",
    "Instance",
    "Parameters",
    "answer",
    "decode_npy",
    "encode_npy",
    "instances",
    "parameters",
    "tensor_of",
]

#: The request parameters an ``:explain`` (or a V2 infer with ``explain``) takes.
PARAMETERS = ("method", "budget_s", "target", "explain")
#: Instances in one request, at most (each is explained on its own; many belong in many
#: requests, which share batches anyway).
MAX_INSTANCES = 64
#: Targets of one instance, at most.
MAX_TARGETS = 100


@dataclass(frozen=True)
class Parameters:
    """What a request asks for besides its instances: ``method`` and ``budget_s`` (None: the
    server's), and the default ``target`` of its instances."""

    method: str | None = None
    budget_s: float | None = None
    target: tuple[TargetSpec, ...] | None = None


@dataclass(frozen=True)
class Instance:
    """One thing to explain: an RGB image or a model input, and its targets (None: the
    request's, else the model's default)."""

    image: np.ndarray | None
    tensor: np.ndarray | None
    target: tuple[TargetSpec, ...] | None

    def model_input(self, preprocess: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The tensor, or ``preprocess`` of the image."""
        if self.tensor is not None:
            return self.tensor
        assert self.image is not None
        return preprocess(self.image)


def parameters(given: Any) -> Parameters:
    """The request's parameters, checked.

    Raises:
        ConfigError: not a mapping, an unknown key, an unknown method, a budget out of range.
    """
    if given is None:
        return Parameters()
    if not isinstance(given, Mapping):
        raise ConfigError("parameters must be a JSON object")
    unknown = sorted(str(k) for k in given if k not in PARAMETERS)
    if unknown:
        raise ConfigError(f"unknown parameter '{unknown[0][:80]}'; valid: {', '.join(PARAMETERS)}")
    method = given.get("method")
    if method is not None and (not isinstance(method, str) or method not in METHODS):
        raise ConfigError(f"unknown method '{str(method)[:80]}'; valid: {', '.join(METHODS)}")
    budget = given.get("budget_s")
    if budget is not None and (
        isinstance(budget, bool)
        or not isinstance(budget, (int, float))
        or not 0 < budget <= MAX_SECONDS
        or not math.isfinite(budget)
    ):
        raise ConfigError(f"budget_s must be a number above 0 and at most {MAX_SECONDS:g}")
    target = given.get("target")
    return Parameters(
        method,
        None if budget is None else float(budget),
        None if target is None else targets(target),
    )


def targets(given: Any) -> tuple[TargetSpec, ...]:
    """Target specs from a request: a spec, a class number, or a list of them.

    Raises:
        ConfigError: anything else, a bad spec, or one that names a file on the server.
    """
    items = given if isinstance(given, list) else [given]
    if not items or len(items) > MAX_TARGETS:
        raise ConfigError(f"target needs 1 to {MAX_TARGETS} specs, got {len(items)}")
    specs = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ConfigError("a target is a spec such as 'top:3' or a class number")
        spec = parse_target(str(item))
        for key in ("ref", "mask"):
            if getattr(spec, key, None) is not None:
                raise ConfigError(
                    f"target '{str(item)[:80]}': {key}= names a file on the server, which a "
                    "request cannot"
                )
        specs.append(spec)
    return tuple(specs)


def instances(body: Any, spec: InputSpec, *, max_pixels: int) -> list[Instance]:
    """The instances of an ``:explain`` or ``:predict`` body, decoded and checked.

    Raises:
        ConfigError: the body is not ``{"instances": [...]}``, or an instance is malformed.
        ImageError: an image that does not decode, or is larger than ``max_pixels``.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("instances"), list):
        raise ConfigError('the request must be a JSON object with an "instances" list')
    given = body["instances"]
    if not 1 <= len(given) <= MAX_INSTANCES:
        raise ConfigError(f"instances needs 1 to {MAX_INSTANCES} items, got {len(given)}")
    return [_instance(item, i, spec, max_pixels) for i, item in enumerate(given)]


def _instance(item: Any, i: int, spec: InputSpec, max_pixels: int) -> Instance:
    if not isinstance(item, Mapping):
        # a bare tensor, as V1 predict clients send them
        return Instance(None, tensor_of(item, spec, f"instance {i}"), None)
    unknown = sorted(str(k) for k in item if k not in ("image", "tensor", "target"))
    if unknown or ("image" in item) == ("tensor" in item):
        raise ConfigError(
            f"instance {i} needs one of 'image' ({{\"b64\": ...}}) or 'tensor', and may have "
            "'target'" + (f"; unknown key '{unknown[0][:80]}'" if unknown else "")
        )
    target = None if item.get("target") is None else targets(item["target"])
    if "tensor" in item:
        return Instance(None, tensor_of(item["tensor"], spec, f"instance {i}"), target)
    data = _b64(item["image"], f"instance {i} image")
    return Instance(
        decode_image(data, name=f"instance {i} image", max_pixels=max_pixels), None, target
    )


def tensor_of(given: Any, spec: InputSpec, name: str) -> np.ndarray:
    """A model input from a request: nested lists or ``{"b64": npy}``, with a batch axis of
    one added when it has none; its shape is checked where it is explained.

    Raises:
        ConfigError: not numbers, ragged, or of the wrong rank.
    """
    if isinstance(given, Mapping):
        array = decode_npy(_b64(given, name), name)
    else:
        try:
            array = np.asarray(given, dtype=spec.dtype)
        except (ValueError, TypeError):
            raise ConfigError(f"{name}: the tensor is not an array of numbers") from None
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ConfigError(
            f"{name}: the tensor has {array.ndim} dimensions; the model takes {spec.shape()} "
            f"({spec.layout}), with or without the batch axis"
        )
    return np.ascontiguousarray(array, dtype=spec.dtype)


def _b64(given: Any, name: str) -> bytes:
    if not isinstance(given, Mapping) or not isinstance(given.get("b64"), str):
        raise ConfigError(f'{name} must be {{"b64": "<base64>"}}')
    try:
        return base64.b64decode(given["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name}: the b64 field is not valid base64") from None


def encode_npy(array: np.ndarray) -> dict[str, str]:
    """``{"b64": ...}`` of ``array`` as a ``.npy`` file."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return {"b64": base64.b64encode(buffer.getvalue()).decode("ascii")}


def decode_npy(data: bytes, name: str = "the array") -> np.ndarray:
    """The array of ``.npy`` bytes (never pickled objects).

    Raises:
        ImageError: not a ``.npy`` file of numbers.
    """
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise ImageError(f"{name} is not a .npy file of numbers") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise ImageError(f"{name} is not a .npy file of numbers")
    return array


def answer(result: Result, *, request_s: float) -> dict[str, Any]:
    """One instance's explanation: the record (with the time the request took, queue
    included) and each target's map."""
    record = result.to_record()
    record["timings"] = {**record["timings"], "request_s": request_s}
    maps = [encode_npy(np.asarray(t.saliency, np.float32)) for t in result.targets]
    return {"record": record, "maps": maps}
