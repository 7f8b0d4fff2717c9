"""Input inspection and the default batch size."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_tiny
from onnx import TensorProto, helper

from onnxcam import ConfigError, ModelError, graph, modelinfo


def test_input_spec_layouts(tmp_path, weights):
    nchw = graph.GraphIndex(graph.load_model(build_tiny(tmp_path / "a.onnx", weights)))
    nhwc = graph.GraphIndex(
        graph.load_model(build_tiny(tmp_path / "b.onnx", weights, layout="NHWC"))
    )
    a, b = modelinfo.input_spec(nchw), modelinfo.input_spec(nhwc)
    assert (a.layout, a.height, a.width, a.channels, a.dtype) == ("NCHW", 16, 16, 3, np.float32)
    assert (b.layout, b.height, b.width, b.channels) == ("NHWC", 16, 16, 3)
    assert modelinfo.input_spec(nchw, size=(32, 48)).height == 32


def _model(shape):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    )


def test_input_spec_refuses_what_cannot_take_an_image():
    with pytest.raises(ConfigError, match="--size"):
        modelinfo.input_spec(graph.GraphIndex(_model(["N", 3, "H", "W"])))
    with pytest.raises(ModelError, match="rank 4"):
        modelinfo.input_spec(graph.GraphIndex(_model(["N", 100])))
    with pytest.raises(ModelError, match="channels"):
        modelinfo.input_spec(graph.GraphIndex(_model(["N", 7, 32, 32])))


def test_default_batch_by_device_and_activation_budget(tiny):
    index = graph.GraphIndex(graph.load_model(tiny))
    spec = modelinfo.input_spec(index)
    from onnxcam.backends.ort import device_batch

    def default_batch(spec, provider):  # the ort backend's choice
        return modelinfo.batch_cap(index, spec, device_batch(provider))

    assert default_batch(spec, "CPUExecutionProvider") == modelinfo.CPU_BATCH
    assert default_batch(spec, "CUDAExecutionProvider") == modelinfo.CUDA_BATCH
    big = modelinfo.input_spec(index, size=(2048, 2048))  # 3 x 12.6M floats per image
    assert default_batch(big, "CPUExecutionProvider") == 1
