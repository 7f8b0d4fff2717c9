"""The model the KServe model server serves: ``:predict`` and V2 infer give the model's own
outputs, ``:explain`` (and V2 infer with ``explain``) the saliency maps, their passes shared with
every other request in flight through one :class:`~onnxcam.batcher.Batcher`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response
from fastapi.responses import ORJSONResponse
from kserve import InferInput, InferOutput, InferRequest, InferResponse, Model
from kserve.protocol.infer_type import RequestedOutput, to_http_parameters
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError

from ..backends.remote import BINARY_HEADER, DATATYPE_NAMES
from ..batcher import Batcher
from ..errors import BusyError, ConfigError, OnnxCamError, PredictorError
from ..explain import Explainer
from ..jobs import Job
from ..result import Result
from ..runner import one_input
from ..targets import TargetSpec
from ..text import first_line
from . import codec

__all__ = ["SALIENCY", "ExplainerModel", "HttpError", "v2_infer"]

#: The V2 output that carries the maps of ``explain: true``: (B, T, H, W) float32.
SALIENCY = "saliency"


class ExplainerModel(Model):
    """One explainer behind the V1 and V2 endpoints.

    Args:
        name: what the endpoints call it (``/v1/models/NAME``).
        explainer: the model and its settings.
        batcher: shares the passes of concurrent requests.
        default_target: the targets of a request that names none (None: the model's default).
    """

    def __init__(
        self, name: str, explainer: Explainer, batcher: Batcher,
        default_target: Sequence[TargetSpec] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(name)
        self.explainer = explainer
        self.batcher = batcher
        self.default_target = None if default_target is None else tuple(default_target)
        prepared = explainer.prepared
        self.outputs = tuple(
            dict.fromkeys([*(o.name for o in prepared.outputs), *prepared.feature_outputs])
        )

    def load(self) -> bool:
        """Warm up: a clean pass and one full batch, so the first request is not the slow one."""
        explainer = self.explainer
        x = np.zeros(explainer.spec.shape(), explainer.spec.dtype)
        explainer.forward(tensor=x)
        explainer.runner.run([_job(np.repeat(x, explainer.runner.batch, axis=0), self.outputs)])
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        spec = self.explainer.spec
        shape = [-1, *spec.shape()[1:]]
        return [
            {"name": spec.name, "datatype": DATATYPE_NAMES[np.dtype(spec.dtype)], "shape": shape}
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": name, "datatype": "FP32", "shape": [-1]} for name in self.outputs]

    # ----------------------------------------------------------------- :explain

    async def explain(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        t0 = time.perf_counter()
        spec, limit = self.explainer.spec, self.explainer.config.max_pixels
        try:
            given = codec.parameters(_mapping(payload).get("parameters"))
            items = await asyncio.to_thread(codec.instances, payload, spec, max_pixels=limit)
        except OnnxCamError as exc:
            raise _http(exc) from None
        futures = [
            self._submit(item.image, item.tensor, item.target or given.target, given, t0)
            for item in items
        ]
        results = await asyncio.gather(*futures)
        return {
            "explanations": [codec.answer(r, request_s=time.perf_counter() - t0) for r in results]
        }

    async def _submit(
        self, image: np.ndarray | None, tensor: np.ndarray | None, target: Any,
        given: codec.Parameters, arrived: float,
    ) -> Result:  # fmt: skip
        try:
            future = self.batcher.submit(
                image, tensor=tensor, target=list(target or self.default_target or ()) or None,
                method=given.method, budget_s=given.budget_s, arrived=arrived,
            )  # fmt: skip
            return await asyncio.wrap_future(future)
        except OnnxCamError as exc:
            raise _http(exc) from None

    # ----------------------------------------------------------------- :predict, V2 infer

    async def predict(
        self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict | InferResponse:  # fmt: skip
        if isinstance(payload, InferRequest):
            return await self.infer_v2(payload)
        try:
            return await asyncio.to_thread(self._predict, payload)
        except OnnxCamError as exc:
            raise _http(exc) from None

    def _predict(self, payload: Any) -> dict[str, Any]:
        """V1 ``:predict``: each instance's model outputs (a mapping of output name to value
        when the model has several)."""
        explainer = self.explainer
        items = codec.instances(payload, explainer.spec, max_pixels=explainer.config.max_pixels)
        inputs = [item.model_input(explainer.preprocess) for item in items]
        names = [o.name for o in explainer.prepared.outputs]
        values = self._run(np.concatenate(inputs), names)
        if len(names) == 1:
            return {"predictions": values[names[0]].tolist()}
        return {
            "predictions": [
                {name: values[name][row].tolist() for name in names} for row in range(len(inputs))
            ]
        }

    async def infer_v2(self, request: InferRequest) -> InferResponse:
        """V2 infer: the outputs asked for (default: the model's own), and with the parameter
        ``explain`` the maps as the output ``saliency``."""
        t0 = time.perf_counter()
        try:
            params = to_http_parameters(request.parameters or {})  # gRPC's, unwrapped
            given = codec.parameters(params)
            explain = params.get("explain", False)
            if not isinstance(explain, bool):
                raise ConfigError("the parameter explain must be true or false")
            x = self._v2_input(request)
            own = [o.name for o in self.explainer.prepared.outputs]  # feature maps on request
            wanted = [o.name for o in request.request_outputs or []] or own
            if explain and SALIENCY not in wanted:
                wanted.append(SALIENCY)
            unknown = [n for n in wanted if n not in self.outputs and n != SALIENCY]
            if unknown:
                raise ConfigError(
                    f"the model has no output '{unknown[0][:80]}'; it has "
                    f"{', '.join(self.outputs)}"
                    + (f", {SALIENCY} (with explain)" if explain else "")
                )
            if SALIENCY in wanted and not explain:
                raise ConfigError(f"output '{SALIENCY}' needs the parameter explain: true")
            plain = [n for n in wanted if n != SALIENCY]
            values = await asyncio.to_thread(self._run, x, plain) if plain else {}
        except OnnxCamError as exc:
            raise _http(exc) from None
        if explain:
            results = await asyncio.gather(
                *(self._submit(None, x[i : i + 1], given.target, given, t0) for i in range(len(x)))
            )
            values[SALIENCY] = _stacked(results)
        outputs = [
            InferOutput(
                name, list(values[name].shape), DATATYPE_NAMES[values[name].dtype], values[name]
            )
            for name in wanted
        ]
        return InferResponse(
            request.id or str(uuid.uuid4()), self.name, outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )  # fmt: skip

    def _v2_input(self, request: InferRequest) -> np.ndarray:
        spec = self.explainer.spec
        if len(request.inputs) != 1 or request.inputs[0].name != spec.name:
            shown = ", ".join(repr(i.name[:80]) for i in request.inputs)
            raise ConfigError(f"the model takes one input '{spec.name}', not {shown or 'none'}")
        try:
            x = np.asarray(request.inputs[0].as_numpy())
        except Exception as exc:  # kserve's own complaint about a malformed tensor
            raise ConfigError(f"input '{spec.name}': {exc}") from None
        if x.ndim != 4 or x.dtype != spec.dtype or len(x) < 1:
            raise ConfigError(
                f"input '{spec.name}' takes (N, ...) {spec.dtype} like {spec.shape()}, not "
                f"{tuple(x.shape)} {x.dtype}"
            )
        return x

    def _run(self, x: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The model's outputs ``names`` for the rows of ``x``, through the explainer's runner."""
        outcome = self.explainer.runner.run([_job(x, tuple(names))])[0]
        if isinstance(outcome, OnnxCamError):
            raise outcome
        return outcome.values


def v2_infer(model: ExplainerModel) -> Callable[[Request], Awaitable[Response]]:
    """The V2 infer endpoint of ``model``, reading tensors of the binary extension (the
    ``Inference-Header-Content-Length`` header) straight into arrays: kserve's own decoder
    makes Python lists of them, which took 0.36 s of each 0.38 s masked batch sent by the
    remote backend (16 × 3 × 96 × 96 float32, loopback)."""

    async def infer(request: Request) -> Response:
        body = await request.body()
        length = request.headers.get(BINARY_HEADER)
        try:
            parsed = _v2_request(body, None if length is None else int(length), model.name)
        except (ValueError, TypeError, KeyError, ValidationError) as exc:
            raise HttpError(400, f"malformed V2 request: {first_line(exc)}") from None
        answer, json_length = (await model.infer_v2(parsed)).to_rest()
        if json_length is None:
            return ORJSONResponse(answer)
        headers = {BINARY_HEADER: str(json_length)}
        return Response(answer, headers=headers, media_type="application/octet-stream")

    return infer


def _v2_request(body: bytes, json_length: int | None, name: str) -> InferRequest:
    """A V2 request from its body: JSON, or JSON then raw tensors (binary extension)."""
    meta = orjson.loads(body if json_length is None else body[:json_length])
    if json_length is None:
        return InferRequest.from_inference_request(InferenceRequest.model_validate(meta), name)
    inputs, offset = [], json_length
    for given in meta["inputs"]:
        tensor = InferInput(given["name"], given["shape"], given["datatype"], given.get("data"))
        size = (given.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            tensor._raw_data = body[offset : offset + int(size)]  # read by as_numpy, no copy
            offset += int(size)
        inputs.append(tensor)
    outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in meta.get("outputs") or []]
    return InferRequest(
        name, inputs, request_id=meta.get("id"), parameters=meta.get("parameters"),
        request_outputs=outputs or None,
    )  # fmt: skip


def _job(x: np.ndarray, names: tuple[str, ...]) -> Job:
    return Job(len(x), one_input(x), names, dict, what="inputs")


def _stacked(results: Sequence[Result]) -> np.ndarray:
    """The maps of several results as (B, T, H, W) float32; a result with fewer targets than
    the most (a detector's images differ) is padded with zero maps."""
    most = max(len(r.targets) for r in results)
    h, w = results[0].targets[0].saliency.shape
    out = np.zeros((len(results), most, h, w), np.float32)
    for i, result in enumerate(results):
        for t, target in enumerate(result.targets):
            out[i, t] = target.saliency
    return out


def _mapping(payload: Any) -> Mapping[str, Any]:
    return payload if isinstance(payload, Mapping) else {}


class HttpError(Exception):
    """A library error as the HTTP status it answers (the server's handler writes it as
    ``{"error": message}``, one line, and logs no traceback).

    Attributes:
        status: 400 what the request asked was wrong, 503 the queue is full (with
            ``retry_after_s``), 502 the predictor failed.
    """

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


def _http(exc: OnnxCamError) -> HttpError:
    if isinstance(exc, BusyError):
        return HttpError(503, str(exc), exc.retry_after_s)
    if isinstance(exc, PredictorError):
        return HttpError(502, str(exc))
    return HttpError(400, str(exc))
