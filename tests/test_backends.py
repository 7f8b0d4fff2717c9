"""Backends: the ONNX Runtime one behind the protocol, and the config naming them (the remote
one is tested against a real server in tests/test_serve.py)."""

from __future__ import annotations

import pytest

from onnxcam import ConfigError, Explainer, graph, modelinfo
from onnxcam.backends import BACKEND_NAMES, OpenOptions, get_backend
from onnxcam.backends.ort import BACKEND as ORT
from onnxcam.backends.remote import Address
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
