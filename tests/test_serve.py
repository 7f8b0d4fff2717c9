"""``onnxcam serve`` as it runs: real servers on 127.0.0.1 (subprocesses on free ports, stopped
by SIGTERM), real HTTP; the maps equal ``Explainer.explain``'s, in-process and through a
predictor served by a second server."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import EXAMPLES, ROOT

pytest.importorskip("kserve", reason="onnxcam serve needs the serve extra (kserve)")
requests = pytest.importorskip("requests")

from onnxcam import ConfigError, Explainer, PredictorError  # noqa: E402
from onnxcam.ingraph import expose  # noqa: E402

MODELS = ROOT / "models"
SHAPES = MODELS / "shapes_cnn.onnx"
PHOTOS = sorted(EXAMPLES.glob("*.png"))[:4]
START_S = 120  # a server that is not ready by then has failed
OPTIONS = ["--device", "cpu", "--threads", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running ``onnxcam serve``: its base URL and process."""

    def __init__(self, model: Path, name: str, *extra: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "onnxcam.cli", "serve", str(model), "--name", name,
                   "--http-port", str(self.port), "--grpc-port", "0", *OPTIONS, *extra]  # fmt: skip
        self.log = io.BytesIO()
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.write(line)

    def wait_ready(self) -> Server:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited: {self.output()[-2000:]}")
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the server was not ready in {START_S} s: {self.output()[-2000:]}")

    def output(self) -> str:
        return self.log.getvalue().decode("utf-8", "replace")

    def explain(self, body: dict, **kwargs) -> requests.Response:
        return requests.post(f"{self.url}/v1/models/{self.name}:explain", json=body, timeout=120,
                             **kwargs)  # fmt: skip

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


@contextmanager
def serving(model: Path, name: str, *extra: str) -> Iterator[Server]:
    server = Server(model, name, *extra)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def b64(path: Path) -> dict[str, str]:
    return {"b64": base64.b64encode(path.read_bytes()).decode()}


def maps_of(explanation: dict) -> list[np.ndarray]:
    return [np.load(io.BytesIO(base64.b64decode(m["b64"]))) for m in explanation["maps"]]


def assert_same_maps(explanation: dict, result, tol: float = 1e-6) -> None:
    maps = maps_of(explanation)
    assert len(maps) == len(result.targets) == len(explanation["record"]["targets"])
    for got, want in zip(maps, result.targets, strict=True):
        assert got.dtype == np.float32 and got.shape == want.saliency.shape
        assert float(np.abs(got - want.saliency).max()) <= tol


@pytest.fixture(scope="module")
def shapes() -> Iterator[Server]:
    with serving(SHAPES, "shapes") as server:
        yield server


@pytest.fixture(scope="module")
def local() -> Explainer:
    return Explainer(SHAPES, device="cpu", threads=1, split_head=True)


# ----------------------------------------------------------------------------- endpoints


def test_health_and_model_readiness(shapes):
    assert requests.get(f"{shapes.url}/v2/health/ready", timeout=5).json()["ready"] is True
    assert requests.get(f"{shapes.url}/v1/models/shapes", timeout=5).json() == {
        "name": "shapes", "ready": True,
    }  # fmt: skip
    assert requests.get(f"{shapes.url}/v1/models/other", timeout=5).status_code == 404


def test_predict_gives_the_model_outputs(shapes, local):
    x = local.preprocess(PHOTOS[0])
    want = local.forward(tensor=x).outputs["logits"]
    for instance in (x[0].tolist(), {"image": b64(PHOTOS[0])}):
        answer = requests.post(f"{shapes.url}/v1/models/shapes:predict",
                               json={"instances": [instance]}, timeout=30)  # fmt: skip
        assert answer.status_code == 200
        np.testing.assert_allclose(answer.json()["predictions"], want, atol=1e-5)


def test_explain_maps_equal_the_library_for_images_and_tensors(shapes, local):
    body = {"instances": [{"image": b64(p), "target": "top:2"} for p in PHOTOS[:2]]}
    answer = shapes.explain(body)
    assert answer.status_code == 200
    explanations = answer.json()["explanations"]
    for path, explanation in zip(PHOTOS[:2], explanations, strict=True):
        result = local.explain(path, target="top:2")
        assert_same_maps(explanation, result)
        record = explanation["record"]
        assert [t["spec"] for t in record["targets"]] == ["top:2", "top:2"]
        assert record["targets"][0]["class_index"] == result.targets[0].class_index
    x = local.preprocess(PHOTOS[0])
    per_request = {"instances": [{"tensor": x[0].tolist()}],
                   "parameters": {"method": "ablation", "target": 1}}  # fmt: skip
    answer = shapes.explain(per_request)
    assert answer.status_code == 200, answer.text
    ablation = Explainer(SHAPES, device="cpu", threads=1, method="ablation")
    assert_same_maps(answer.json()["explanations"][0], ablation.explain(tensor=x, target=1))


def test_v2_infer_gives_the_outputs_and_with_explain_the_saliency(shapes, local):
    x = local.preprocess(PHOTOS[1])
    both = np.concatenate([x, local.preprocess(PHOTOS[2])])
    body = {"inputs": [{"name": local.spec.name, "shape": list(both.shape), "datatype": "FP32",
                        "data": both.ravel().tolist()}]}  # fmt: skip
    plain = requests.post(f"{shapes.url}/v2/models/shapes/infer", json=body, timeout=30).json()
    assert [o["name"] for o in plain["outputs"]] == ["logits"]
    explained = requests.post(
        f"{shapes.url}/v2/models/shapes/infer",
        json={**body, "parameters": {"explain": True, "target": "top:2"}}, timeout=60,
    ).json()  # fmt: skip
    outputs = {o["name"]: np.reshape(o["data"], o["shape"]) for o in explained["outputs"]}
    assert outputs["saliency"].shape == (2, 2, *x.shape[2:])
    for row in range(2):
        want = local.explain(tensor=both[row : row + 1], target="top:2")
        for t in range(2):
            assert np.abs(outputs["saliency"][row, t] - want.targets[t].saliency).max() <= 1e-6
    logits = plain["outputs"][0]
    np.testing.assert_allclose(outputs["logits"], np.reshape(logits["data"], logits["shape"]))


def test_bad_requests_get_400_in_one_line_and_the_server_keeps_serving(shapes, local):
    x = local.preprocess(PHOTOS[0])[0].tolist()
    explain = f"{shapes.url}/v1/models/shapes:explain"
    bad = {
        "not json": b"{not json",
        "bad base64": json.dumps({"instances": [{"image": {"b64": "!!"}}]}),
        "not an image": json.dumps({"instances": [{"image": {"b64": "bm90IGFuIGltYWdl"}}]}),
        "unknown method": json.dumps({"instances": [x], "parameters": {"method": "nope"}}),
        "unknown target": json.dumps({"instances": [{"tensor": x, "target": "class:99"}]}),
        "server file": json.dumps({"instances": [{"tensor": x, "target": "embedding:ref=/etc/x"}]}),
        "wrong tensor": json.dumps({"instances": [{"tensor": [[1.0, 2.0]]}]}),
        "no instances": json.dumps({"instance": []}),
        "budget": json.dumps({"instances": [x], "parameters": {"budget_s": -1}}),
    }
    for what, body in bad.items():
        answer = requests.post(explain, data=body, headers={"content-type": "application/json"},
                               timeout=30)  # fmt: skip
        assert answer.status_code == 400, (what, answer.text)
        message = answer.json()["error"]
        assert message and "\n" not in message and "Traceback" not in message, what
    v2 = requests.post(f"{shapes.url}/v2/models/shapes/infer", data=b"{bad",
                       headers={"content-type": "application/json"}, timeout=30)  # fmt: skip
    assert v2.status_code == 400
    assert shapes.explain({"instances": [{"tensor": x}]}).status_code == 200


def test_eight_clients_twenty_requests_each_all_answered_with_the_serial_maps(shapes, local):
    serial = {p: local.explain(p) for p in PHOTOS}
    bodies = {p: {"instances": [{"image": b64(p)}]} for p in PHOTOS}

    def client(k: int) -> list[tuple[Path, dict]]:
        with requests.Session() as session:
            got = []
            for i in range(20):
                path = PHOTOS[(k + i) % len(PHOTOS)]
                answer = session.post(f"{shapes.url}/v1/models/shapes:explain",
                                      json=bodies[path], timeout=120)  # fmt: skip
                assert answer.status_code == 200, answer.text
                got.append((path, answer.json()["explanations"][0]))
            return got

    with ThreadPoolExecutor(8) as pool:
        answers = [a for each in pool.map(client, range(8)) for a in each]
    assert len(answers) == 160
    for path, explanation in answers:
        assert_same_maps(explanation, serial[path])


# ----------------------------------------------------------------------------- other models


@pytest.mark.parametrize(
    "model, target",
    [("shapes_det_yolov8.onnx", None), ("shapes_seg.onnx", None)],
)
def test_explain_maps_equal_the_library_for_a_detector_and_a_segmenter(model, target):
    with serving(MODELS / model, "m") as server:
        instance = {"image": b64(PHOTOS[0]), **({"target": target} if target else {})}
        answer = server.explain({"instances": [instance]})
        assert answer.status_code == 200, answer.text
        result = Explainer(MODELS / model, device="cpu", threads=1).explain(
            PHOTOS[0], target=target
        )
        assert_same_maps(answer.json()["explanations"][0], result)


# ----------------------------------------------------------------------------- a predictor


def test_passes_through_a_served_predictor_give_the_in_process_maps(tmp_path, local):
    exposed = tmp_path / "shapes_exposed.onnx"
    exposed.write_bytes(expose(SHAPES).SerializeToString())
    with serving(exposed, "shapes") as predictor:
        where = f"127.0.0.1:{predictor.port}/shapes"
        remote = Explainer(SHAPES, backend="remote", predictor=where)
        assert remote.provider.startswith("remote v2")
        for method in ("scorecam", "groupcam"):
            want = Explainer(SHAPES, device="cpu", threads=1, method=method)
            got = Explainer(SHAPES, backend="remote", predictor=where, method=method)
            a, b = want.explain(PHOTOS[0], target="top:2"), got.explain(PHOTOS[0], target="top:2")
            for x, y in zip(a.targets, b.targets, strict=True):
                assert np.abs(x.saliency - y.saliency).max() <= 1e-6
        v1 = Explainer(SHAPES, backend="remote", predictor=where, predictor_protocol="v1")
        b = v1.explain(PHOTOS[1], target=1)
        assert np.abs(b.saliency - local.explain(PHOTOS[1], target=1).saliency).max() <= 1e-6
        with pytest.raises(ConfigError, match="which the predictor does not serve"):
            Explainer(SHAPES, backend="remote", predictor=where, method="ablation")
        with pytest.raises(PredictorError, match="is not ready: 404"):
            Explainer(SHAPES, backend="remote", predictor=f"127.0.0.1:{predictor.port}/other")
        with serving(SHAPES, "shapes", "--predictor-host", f"127.0.0.1:{predictor.port}") as hop:
            answer = hop.explain({"instances": [{"image": b64(PHOTOS[1]), "target": "top:2"}]})
            assert answer.status_code == 200, answer.text
            explanation = answer.json()["explanations"][0]
            assert explanation["record"]["provider"].startswith("remote v2")
            assert_same_maps(explanation, local.explain(PHOTOS[1], target="top:2"))
            refused = hop.explain(
                {"instances": [{"image": b64(PHOTOS[1])}], "parameters": {"method": "recipro"}}
            )
            assert refused.status_code == 400
            assert "predictor does not serve" in refused.json()["error"]
    with pytest.raises(PredictorError, match="Connection refused"):
        Explainer(SHAPES, backend="remote", predictor=f"127.0.0.1:{predictor.port}/shapes")


# ----------------------------------------------------------------------------- load, shutdown


def test_a_full_queue_answers_503_and_sigterm_finishes_requests_in_flight():
    with serving(
        SHAPES, "shapes", "--max-queue", "1", "--max-pixels", "300000", "--target", "top:2"
    ) as server:
        slow = {"instances": [{"image": b64(PHOTOS[0])}], "parameters": {"method": "rise"}}
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(server.explain, slow)
            time.sleep(1.0)  # RISE's 4,000 passes take seconds
            busy = server.explain({"instances": [{"image": b64(PHOTOS[1])}]})
            assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
            assert "queue is full" in busy.json()["error"]
            assert first.result().status_code == 200
            assert len(first.result().json()["explanations"][0]["maps"]) == 2  # --target top:2
        png = cv2.imencode(".png", np.zeros((600, 600, 3), np.uint8))[1].tobytes()
        large = server.explain({"instances": [{"image": {"b64": base64.b64encode(png).decode()}}]})
        assert large.status_code == 400 and "limit of 300,000" in large.json()["error"]
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(server.explain, slow)
            time.sleep(1.0)
            server.process.send_signal(signal.SIGTERM)
            answer = in_flight.result()
            assert answer.status_code == 200, answer.text
            assert (
                maps_of(answer.json()["explanations"][0])[0].shape
                == (cv2.imread(str(PHOTOS[0])).shape[:2])
            )
        assert server.process.wait(60) is not None


def test_a_bad_option_is_one_line():
    for extra, message in (
        (["--name", "bad name!"], "is not a model name"),
        (["--server-workers", "2"], "requests share batches within one process"),
        (["--predictor-host", "nohost"], "is not HOST:PORT/MODEL"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "onnxcam.cli", "serve", str(SHAPES), *extra],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert run.returncode != 0 and message in run.stderr, run.stderr
        errors = [line for line in run.stderr.splitlines() if line.startswith("Error")]
        assert "Traceback" not in run.stderr and len(errors) == 1
