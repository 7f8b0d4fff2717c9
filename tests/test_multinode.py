"""Several nodes at once (``--node a,b``): every node's channels are masked, each node's map is
made from its own channels and the maps are fused, each node counting equally."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, save_graph
from onnx import TensorProto, helper, numpy_helper

from onnxcam import Explainer
from onnxcam.cli import cli
from onnxcam.errors import NodeError
from onnxcam.methods import ScoreCamOptions

SIZE = 16


def two_node_model(path: Path, scale_b: float) -> Path:
    """x -> 1x1 conv + ReLU ``a`` (4 ch, 16x16) -> 1x1 conv + ReLU ``b`` (4 ch, 16x16, its
    weights scaled by ``scale_b``) -> 2x2 max pool ``c`` (8x8) -> GAP -> Gemm (3 classes)."""
    rng = np.random.default_rng(7)
    wa = rng.normal(size=(4, 3, 1, 1)).astype(np.float32)
    wb = (scale_b * rng.normal(size=(4, 4, 1, 1))).astype(np.float32)
    fc = rng.normal(size=(3, 4)).astype(np.float32) / scale_b
    inits = [
        numpy_helper.from_array(wa, "wa"),
        numpy_helper.from_array(wb, "wb"),
        numpy_helper.from_array(fc, "fc"),
        numpy_helper.from_array(np.zeros(3, np.float32), "fcb"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "wa"], ["ca"], name="a/conv"),
        helper.make_node("Relu", ["ca"], ["a"], name="a/relu"),
        helper.make_node("Conv", ["a", "wb"], ["cb"], name="b/conv"),
        helper.make_node("Relu", ["cb"], ["b"], name="b/relu"),
        helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2], name="c"),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    return save_graph(path, graph)


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
    img[2:7, 3:9] = (250, 40, 40)
    img[10:14, 9:15] = (30, 220, 90)
    return img


def explain(path: Path, node: str, image: np.ndarray, **kw):  # type: ignore[no-untyped-def]
    return Explainer(path, node=node, preset="unit", **kw).explain(image, target="class:0")


@pytest.mark.parametrize("scale_b", [1.0, 1000.0])
def test_each_node_counts_equally_whatever_its_scale(tmp_path, image, scale_b):
    path = two_node_model(tmp_path / "m.onnx", scale_b)
    one_a = explain(path, "a", image).saliency.astype(np.float64)
    one_b = explain(path, "b", image).saliency.astype(np.float64)
    both = explain(path, "a,b", image)
    expected = (one_a / one_a.max() + one_b / one_b.max()) / 2
    expected /= expected.max()
    np.testing.assert_allclose(both.saliency, expected, atol=1e-5)
    assert not np.allclose(one_a, one_b, atol=0.05)  # the two nodes do disagree
    assert both.channels_total == 8


def test_nodes_on_different_grids_are_masked_on_the_finest(tmp_path, image):
    path = two_node_model(tmp_path / "m.onnx", 1.0)
    result = explain(path, "a, c", image)  # spaces after commas are fine
    assert result.saliency.shape == (SIZE, SIZE)
    assert np.isfinite(result.saliency).all() and result.saliency.max() == pytest.approx(1.0)
    assert result.masked_passes <= 8


def test_a_bad_name_in_a_list_is_named(tmp_path):
    path = two_node_model(tmp_path / "m.onnx", 1.0)
    with pytest.raises(NodeError, match="nope"):
        Explainer(path, node="a,nope")


def test_auto_on_a_detector_takes_each_scale_and_nodes_says_why():
    detector = ROOT / "models" / "shapes_det_yolov8.onnx"
    explainer = Explainer(detector)
    assert explainer.node_label == "/model.14/act/Mul,/model.17/act/Mul,/model.20/act/Mul"
    assert [c.spatial for c in explainer.candidates] == [(20, 20), (10, 10), (5, 5)]
    listing = CliRunner().invoke(cli, ["nodes", str(detector)])
    assert listing.exit_code == 0
    assert "model: a detector" in listing.output
    marked = [line.split()[1] for line in listing.output.splitlines() if line.startswith("* ")]
    assert marked[-1] == "auto"  # the line that says why
    assert marked[:-1] == ["/model.14/act/Mul", "/model.17/act/Mul", "/model.20/act/Mul"]
    assert max(len(line) for line in listing.output.splitlines()) <= 120


def test_a_fast_mode_shares_its_channels_among_the_nodes(tmp_path, image):
    """``top_channels=2`` on two nodes runs the best channel of each, and the map is the fusion
    of the two one-channel maps: a node with larger activations does not take both."""
    path = two_node_model(tmp_path / "m.onnx", 1000.0)
    fast = {"options": ScoreCamOptions(top_channels=1)}
    one_a = explain(path, "a", image, **fast).saliency.astype(np.float64)
    one_b = explain(path, "b", image, **fast).saliency.astype(np.float64)
    both = explain(path, "a,b", image, options=ScoreCamOptions(top_channels=2))
    assert both.channels_used == 2
    expected = (one_a / one_a.max() + one_b / one_b.max()) / 2
    np.testing.assert_allclose(both.saliency, expected / expected.max(), atol=1e-5)
