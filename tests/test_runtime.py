"""Provider selection, CUDA options, sessions and the chunked runner."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcam import DeviceError, runtime
from onnxcam.runtime import Session

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def test_providers_for_each_device():
    assert runtime.providers_for("cpu", [CUDA, CPU]) == [CPU]
    assert runtime.providers_for("auto", [CPU]) == [CPU]
    assert runtime.providers_for("auto", [CUDA, CPU], has_gpu=lambda: False) == [CPU]
    auto_gpu = runtime.providers_for("auto", [CUDA, CPU], has_gpu=lambda: True)
    assert auto_gpu[0][0] == CUDA and auto_gpu[1] == CPU
    assert runtime.providers_for("cuda", [CUDA, CPU])[0][0] == CUDA


def test_cuda_on_a_build_without_it_says_what_to_install():
    with pytest.raises(DeviceError, match=r"no CUDAExecutionProvider.*onnxcam\[gpu\]"):
        runtime.providers_for("cuda", [CPU])
    with pytest.raises(DeviceError, match="unknown device"):
        runtime.providers_for("tpu", [CPU])


def test_cuda_provider_options():
    options = runtime.cuda_provider_options(device_id=1, memory_limit_bytes=2**30)
    assert options == {
        "device_id": "1",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": "1",
        "gpu_mem_limit": str(2**30),
    }
    assert "gpu_mem_limit" not in runtime.cuda_provider_options()


def test_session_reports_the_provider_that_serves(tiny):
    session = Session(tiny.read_bytes(), device="cpu", threads=1)
    assert session.info.provider == CPU and session.info.threads == 1
    if not runtime.gpu_visible():
        assert Session(tiny.read_bytes(), device="auto").info.provider == CPU


@pytest.mark.skipif(runtime.gpu_visible(), reason="a GPU serves here")
def test_cuda_without_gpu_is_an_error_not_a_silent_cpu_run(tiny):
    import onnxruntime as ort

    with pytest.raises(DeviceError):
        if CUDA not in ort.get_available_providers():
            raise DeviceError("no CUDA provider in this build")
        Session(tiny.read_bytes(), device="cuda")


def test_run_chunks_pads_to_a_fixed_shape_and_trims(tiny):
    session = Session(tiny.read_bytes(), device="cpu")
    rng = np.random.default_rng(0)
    batches = [rng.uniform(size=(n, 3, 16, 16)).astype(np.float32) for n in (4, 4, 1)]
    outs = list(session.run_chunks(iter(batches), ["logits"], pad_to=4))
    assert [o["logits"].shape[0] for o in outs] == [4, 4, 1]
    single = session.run(batches[2], ["logits"])["logits"]
    np.testing.assert_allclose(outs[2]["logits"], single, rtol=1e-5)


def test_installed_runtimes_lists_exactly_one_here():
    assert len(runtime.installed_runtimes()) == 1
