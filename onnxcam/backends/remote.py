"""The remote backend (``"remote"``): passes sent to a served predictor over HTTP.

The predictor serves the model that onnxcam would run itself: the feature maps exposed as extra
outputs (what ``onnxcam export --expose`` writes for deployment), on Triton, KServe, MLServer or
``onnxcam serve``. Batches go as Open Inference Protocol V2 requests (``/v2/models/NAME/infer``,
tensors in the binary extension both ways, as Triton and KServe take them) or, with protocol
``v1``, as KServe V1 ``:predict`` instances. A batch is idempotent: a connection that fails or a
5xx answer is retried; a 4xx answer is the predictor's refusal and is reported as it is.

Only the standard library speaks HTTP here: the backend needs nothing that ``onnxcam serve``
installs.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from .. import modelinfo
from ..errors import ConfigError, ModelError, PredictorError
from ..runner import Feed, Runnable
from . import OpenOptions

if TYPE_CHECKING:
    from ..config import ExplainerConfig
    from ..graph import GraphIndex
    from ..preprocess import InputSpec

__all__ = [
    "BACKEND",
    "BINARY_HEADER",
    "DATATYPES",
    "DATATYPE_NAMES",
    "PROTOCOLS",
    "Address",
    "RemoteBackend",
    "RemoteModel",
]

PROTOCOLS = ("v2", "v1")
#: Seconds one batch may take on the predictor (a run's own time limit is shorter when set).
TIMEOUT_S = 120.0
#: Tries of one batch after the first, on a broken connection or a 5xx answer.
RETRIES = 2
#: The header of the V2 binary extension: the length of the JSON before the raw tensors.
BINARY_HEADER = "Inference-Header-Content-Length"
#: The V2 datatypes onnxcam carries, and their numpy dtypes.
DATATYPES = {
    "FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64,
    "INT32": np.int32, "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip
#: The V2 datatype of each numpy dtype.
DATATYPE_NAMES = {np.dtype(kind): name for name, kind in DATATYPES.items()}


@dataclass(frozen=True)
class Address:
    """Where the predictor is: ``host``, ``port``, and the ``model`` name it serves."""

    host: str
    port: int
    model: str

    @classmethod
    def parse(cls, text: str) -> Address:
        """``HOST:PORT/MODEL`` (an ``http://`` in front is allowed).

        Raises:
            ConfigError: anything else.
        """
        rest = text.removeprefix("http://")
        where, _, model = rest.partition("/")
        host, _, port = where.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or not model:
            raise ConfigError(
                f"predictor '{text[:200]}' is not HOST:PORT/MODEL, e.g. "
                "triton.default.svc:8000/efficientnet (MODEL: the name the predictor serves)"
            )
        return cls(host.strip("[]"), int(port), model.strip("/"))

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port} model '{self.model}'"


class RemoteModel:
    """A model served elsewhere, run batch by batch (a :class:`~onnxcam.runner.Runnable`).

    Args:
        address: the predictor.
        protocol: ``v2`` or ``v1``.
        inputs: the model's input names (an array feed goes to the first).
        outputs: the model's output names (what ``run`` returns when none are named).
        max_batch: the most rows the predictor takes at once (from its configuration), if known.
    """

    def __init__(
        self,
        address: Address,
        protocol: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        max_batch: int | None = None,
    ) -> None:
        self.address = address
        self.protocol = protocol
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.max_batch = max_batch
        self._local = threading.local()  # one keep-alive connection per thread

    def run(
        self, feed: Feed, outputs: Sequence[str] | None = None, *, time_limit: float | None = None
    ) -> dict[str, np.ndarray]:
        """One batch through the predictor: the named outputs (default: all).

        Raises:
            PredictorError: unreachable, an error answer, or an output missing from the answer.
        """
        names = list(outputs or self.outputs)
        arrays = dict(feed) if isinstance(feed, Mapping) else {self.inputs[0]: feed}
        timeout = TIMEOUT_S if time_limit is None else max(0.001, min(TIMEOUT_S, time_limit))
        if self.protocol == "v1":
            return self._v1(arrays, names, timeout)
        return self._v2(arrays, names, timeout)

    def _v2(
        self, arrays: Mapping[str, np.ndarray], names: list[str], timeout: float
    ) -> dict[str, np.ndarray]:
        raw = [np.ascontiguousarray(a) for a in arrays.values()]
        header = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(a.shape),
                    "datatype": _datatype(a, name),
                    "parameters": {"binary_data_size": a.nbytes},
                }
                for name, a in zip(arrays, raw, strict=True)
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in names],
        }
        head = json.dumps(header).encode()
        path = f"/v2/models/{self.address.model}/infer"
        status, headers, body = self.request(
            "POST", path, head + b"".join(a.tobytes() for a in raw),
            {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(head))}, timeout,
        )  # fmt: skip
        if status != 200:
            raise PredictorError(
                f"the predictor at {self.address} answered {status}: {_said(body)}"
            )
        return _pick(_v2_outputs(body, headers.get(BINARY_HEADER.lower())), names, self.address)

    def _v1(
        self, arrays: Mapping[str, np.ndarray], names: list[str], timeout: float
    ) -> dict[str, np.ndarray]:
        if len(arrays) != 1:
            raise ConfigError(
                "protocol v1 sends one input tensor; this model part takes "
                f"{', '.join(map(repr, arrays))}: use --predictor-protocol v2"
            )
        x = next(iter(arrays.values()))
        body = json.dumps({"instances": x.tolist()}).encode()
        status, _, answer = self.request(
            "POST", f"/v1/models/{self.address.model}:predict", body,
            {"Content-Type": "application/json"}, timeout,
        )  # fmt: skip
        if status != 200:
            raise PredictorError(
                f"the predictor at {self.address} answered {status}: {_said(answer)}"
            )
        predictions = _json(answer, self.address).get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(x):
            raise PredictorError(
                f"the predictor at {self.address} did not answer one prediction per instance"
            )
        if not all(isinstance(p, dict) for p in predictions):
            if len(self.outputs) != 1:
                raise PredictorError(
                    f"the predictor at {self.address} answers plain predictions, but the model "
                    f"has outputs {', '.join(self.outputs)}: V1 needs one mapping per instance"
                )
            predictions = [{self.outputs[0]: p} for p in predictions]
        values = {
            name: np.asarray([p[name] for p in predictions], np.float32)
            for name in names
            if all(name in p for p in predictions)
        }
        return _pick(values, names, self.address)

    def request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str],
        timeout: float,
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """One HTTP exchange; a broken connection or a 5xx answer is tried again
        (:data:`RETRIES` times), on a fresh connection.

        Raises:
            PredictorError: still failing after the retries.
        """
        problem = ""
        for attempt in range(RETRIES + 1):
            conn = self._connection(timeout)
            try:
                conn.request(method, path, body=body, headers=dict(headers))
                response = conn.getresponse()
                data = response.read()
                answer = {k.lower(): v for k, v in response.getheaders()}
            except (OSError, http.client.HTTPException) as exc:
                self._local.conn = None
                conn.close()
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if isinstance(exc, TimeoutError):
                    break  # a slow model is not made faster by asking again
            else:
                if response.status < 500:
                    return response.status, answer, data
                problem = f"{response.status}: {_said(data)}"
            time.sleep(0.05 * 2**attempt)
        raise PredictorError(f"the predictor at {self.address} failed: {problem}")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.address.host, self.address.port)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn


class RemoteBackend:
    """A predictor served elsewhere (``ExplainerConfig.predictor``)."""

    name = "remote"

    def notes(self) -> list[str]:
        return []

    def open(self, model: bytes, options: OpenOptions) -> RemoteModel:
        """The predictor, checked: ready, and serving the inputs and outputs of ``model``.

        Raises:
            ConfigError: no predictor given, or it does not serve this part of the model.
            PredictorError: unreachable or not ready.
        """
        if options.predictor is None:
            raise ConfigError("the remote backend needs a predictor: --predictor-host HOST:PORT")
        address = Address.parse(options.predictor)
        try:
            proto = onnx.load_from_string(model)
        except Exception as exc:  # a truncated or foreign model
            raise ModelError(f"the model could not be read: {exc}") from None
        known = {init.name for init in proto.graph.initializer}
        inputs = [i.name for i in proto.graph.input if i.name not in known]
        outputs = [o.name for o in proto.graph.output]
        opened = RemoteModel(address, options.protocol, inputs, outputs)
        served_in, served_out = _served(opened)
        if served_in is not None and not set(inputs) <= set(served_in):
            raise ConfigError(
                f"the predictor at {address} takes {', '.join(map(repr, served_in))}, not "
                f"{', '.join(map(repr, inputs))}: it serves another model (serve the one that "
                "`onnxcam export --expose` writes)"
            )
        missing = [name for name in outputs if served_out is not None and name not in served_out]
        if missing:
            raise PredictorError(
                f"the predictor at {address} does not serve {', '.join(map(repr, missing))} "
                "(serve the model that `onnxcam export --expose` writes, with the same --node)"
            )
        opened.max_batch = _max_batch(opened)
        return opened

    def provider(self, opened: Runnable) -> str:
        remote = _remote(opened)
        return f"remote {remote.protocol} {remote.address}"

    def default_batch(self, index: GraphIndex, spec: InputSpec, opened: Runnable) -> int:
        cap = modelinfo.batch_cap(index, spec, modelinfo.CPU_BATCH)
        served = _remote(opened).max_batch
        return served if served else cap

    def batch_consistent(
        self, opened: Runnable, spec: InputSpec, *, time_limit: float | None = None
    ) -> bool:
        return modelinfo.batch_consistent(opened, spec, time_limit=time_limit)

    def placed(self, config: ExplainerConfig, *, cpus: float, gpus: float) -> ExplainerConfig:
        """Nothing runs the model here: the config as it is."""
        return config


def _served(opened: RemoteModel) -> tuple[list[str] | None, list[str] | None]:
    """The input and output names the predictor declares (V2 metadata); None where it does not
    say (V1 only says whether the model is ready).

    Raises:
        PredictorError: unreachable, or the model is not there or not ready.
    """
    address, v1 = opened.address, opened.protocol == "v1"
    path = f"/v1/models/{address.model}" if v1 else f"/v2/models/{address.model}"
    status, _, body = opened.request("GET", path, None, {}, 10.0)
    if status != 200:
        raise PredictorError(f"the predictor at {address} is not ready: {status} {_said(body)}")
    if v1:
        return None, None
    meta = _json(body, address)
    return (
        [str(t.get("name")) for t in meta.get("inputs") or []] or None,
        [str(t.get("name")) for t in meta.get("outputs") or []] or None,
    )


def _max_batch(opened: RemoteModel) -> int | None:
    """Triton's ``max_batch_size`` (GET .../config), when the predictor says it."""
    if opened.protocol != "v2":
        return None
    try:
        status, _, body = opened.request(
            "GET", f"/v2/models/{opened.address.model}/config", None, {}, 10.0
        )
        value = json.loads(body).get("max_batch_size") if status == 200 else None
    except (PredictorError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def _v2_outputs(body: bytes, json_length: str | None) -> dict[str, np.ndarray]:
    """The arrays of a V2 answer, in JSON or with the binary extension."""
    size = int(json_length) if json_length and json_length.isdigit() else len(body)
    meta = json.loads(body[:size])
    values = {}
    offset = size
    for out in meta.get("outputs", []):
        kind = DATATYPES.get(out.get("datatype"))
        if kind is None:
            raise PredictorError(f"output '{out.get('name')}' has datatype {out.get('datatype')}")
        nbytes = (out.get("parameters") or {}).get("binary_data_size")
        flat: np.ndarray
        if nbytes is not None:
            flat = np.frombuffer(body[offset : offset + int(nbytes)], kind)
            offset += int(nbytes)
        else:
            flat = np.asarray(out.get("data"), kind)
        values[str(out["name"])] = flat.reshape(out["shape"])
    return values


def _pick(values: Mapping[str, np.ndarray], names: list[str], address: Address) -> dict:
    missing = [name for name in names if name not in values]
    if missing:
        raise PredictorError(
            f"the predictor at {address} did not return {', '.join(map(repr, missing))} "
            "(serve the model that `onnxcam export --expose` writes, with the same --node)"
        )
    return {name: values[name] for name in names}


def _json(body: bytes, address: Address) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise PredictorError(f"the predictor at {address} did not answer JSON") from None
    if not isinstance(value, dict):
        raise PredictorError(f"the predictor at {address} did not answer a JSON object")
    return value


def _datatype(array: np.ndarray, name: str) -> str:
    if array.dtype not in DATATYPE_NAMES:
        raise ConfigError(f"input '{name}' has dtype {array.dtype}, which V2 does not carry")
    return DATATYPE_NAMES[array.dtype]


def _said(body: bytes) -> str:
    """What an error answer says, briefly (its ``error`` field when it is JSON)."""
    try:
        value = json.loads(body)
        text = value.get("error", value) if isinstance(value, dict) else value
    except ValueError:
        text = body.decode("utf-8", "replace")
    return str(text)[:300]


def _remote(opened: Runnable) -> RemoteModel:
    if not isinstance(opened, RemoteModel):
        raise TypeError(f"the remote backend did not open {type(opened).__name__}")
    return opened


BACKEND = RemoteBackend()
