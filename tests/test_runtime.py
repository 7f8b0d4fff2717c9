"""Provider selection, CUDA options and sessions."""

from __future__ import annotations

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


def test_installed_runtimes_lists_exactly_one_here():
    assert len(runtime.installed_runtimes()) == 1
