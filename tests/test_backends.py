"""Backends: the ONNX Runtime one behind the protocol, and the config naming them (the remote
one is tested against a real server in tests/test_serve.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from onnxcam import ConfigError, Explainer, PredictorError, graph, modelinfo
from onnxcam.backends import BACKEND_NAMES, OpenOptions, get_backend
from onnxcam.backends.ort import BACKEND as ORT
from onnxcam.backends.remote import BACKEND as REMOTE
from onnxcam.backends.remote import Address, RemoteModel
from onnxcam.config import ExplainerConfig, validate
from onnxcam.runtime import Session

CPU = "CPUExecutionProvider"


def test_ort_is_the_default_and_remote_needs_a_predictor():
    assert BACKEND_NAMES == ("ort", "remote") and ExplainerConfig(model="m.onnx").backend == "ort"
    assert get_backend("ort") is ORT
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'; valid: ort, remote"):
        get_backend("tensorrt")
    with pytest.raises(ConfigError, match="remote backend and a predictor go together"):
        validate(ExplainerConfig(model="m.onnx", backend="remote"))
    with pytest.raises(ConfigError, match="remote backend and a predictor go together"):
        validate(ExplainerConfig(model="m.onnx", predictor="127.0.0.1:1/m"))


def test_ort_opens_a_session_and_says_what_serves(tiny):
    opened = ORT.open(tiny.read_bytes(), OpenOptions(device="cpu", threads=1))
    assert isinstance(opened, Session) and ORT.provider(opened) == CPU
    explainer = Explainer(tiny, preset="unit", backend="ort")
    assert explainer.provider == CPU and explainer.config.backend == "ort"
    index = graph.GraphIndex(graph.load_model(tiny))
    assert ORT.default_batch(index, explainer.spec, opened) == modelinfo.CPU_BATCH
    assert ORT.batch_consistent(opened, explainer.spec)


def test_ort_places_a_worker_by_its_resources():
    config = ExplainerConfig(model="m.onnx")
    assert (
        ORT.placed(config, cpus=3, gpus=0).threads,
        ORT.placed(config, cpus=3, gpus=0).device,
    ) == (3, "cpu")
    assert ORT.placed(config, cpus=0.5, gpus=1).device == "cuda"
    given = ExplainerConfig(model="m.onnx", threads=2, providers=(CPU,))
    assert ORT.placed(given, cpus=8, gpus=1) == ExplainerConfig(
        model="m.onnx", threads=2, providers=(CPU,)
    )
    assert ORT.placed(config, cpus=0.5, gpus=0).threads == 1


def test_a_predictor_address_is_host_port_and_model():
    assert Address.parse("127.0.0.1:8000/m") == Address("127.0.0.1", 8000, "m")
    assert Address.parse("http://triton.svc:80/effnet_feat") == Address(
        "triton.svc", 80, "effnet_feat"
    )
    assert Address.parse("[::1]:9000/m") == Address("::1", 9000, "m")
    for bad in ("host", "host:port/m", "host:8000", "host:0/m", ":8000/m", "host:99999/m"):
        with pytest.raises(ConfigError, match="is not HOST:PORT/MODEL"):
            Address.parse(bad)


class _Predictor(BaseHTTPRequestHandler):
    """A V2 predictor that serves ``logits`` = each row's sum, failing as the test says."""

    answers: ClassVar[list[int]] = []  # statuses to give before answering 200
    calls: ClassVar[list[str]] = []

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v2/models/m":
            self._send(200, {"inputs": [{"name": "x"}], "outputs": [{"name": "logits"}]})
        else:
            self._send(404, {"error": "no such thing"})

    def do_POST(self):
        type(self).calls.append(self.path)
        size = int(self.headers["Inference-Header-Content-Length"])
        body = self.rfile.read(int(self.headers["Content-Length"]))
        meta = json.loads(body[:size])
        x = np.frombuffer(body[size:], np.float32).reshape(meta["inputs"][0]["shape"])
        if type(self).answers:
            status = type(self).answers.pop(0)
            self._send(status, {"error": f"status {status}\nsecond line"})
            return
        sums = x.reshape(len(x), -1).sum(axis=1, keepdims=True)
        out = [{"name": "logits", "shape": list(sums.shape), "datatype": "FP32",
                "data": sums.ravel().tolist()}]  # fmt: skip
        self._send(200, {"outputs": out})


@pytest.fixture
def predictor():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Predictor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Predictor.answers, _Predictor.calls = [], []
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_remote_model_retries_a_5xx_and_reports_a_4xx_in_one_line(predictor):
    host, port = predictor.split(":")
    remote = RemoteModel(Address(host, int(port), "m"), "v2", ["x"], ["logits"])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    _Predictor.answers = [503]
    np.testing.assert_allclose(remote.run(x)["logits"], x.sum(axis=1, keepdims=True))
    assert len(_Predictor.calls) == 2  # the batch again after the 503
    _Predictor.answers = [400]
    with pytest.raises(PredictorError, match="answered 400: status 400") as refused:
        remote.run(x)
    assert "\n" not in str(refused.value)
    _Predictor.answers = [503, 503, 503]
    with pytest.raises(PredictorError, match="failed: 503"):
        remote.run(x)
    with pytest.raises(PredictorError, match="did not return 'probs'"):
        remote.run(x, ["probs"])


def test_the_remote_backend_checks_what_the_predictor_serves(predictor, tiny):
    with pytest.raises(ConfigError, match="takes 'x', not 'input': it serves another model"):
        REMOTE.open(tiny.read_bytes(), OpenOptions(predictor=f"{predictor}/m"))
    with pytest.raises(PredictorError, match="is not ready: 404"):
        REMOTE.open(tiny.read_bytes(), OpenOptions(predictor=f"{predictor}/other"))
