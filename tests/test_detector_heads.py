"""Where a detector's head begins, on the head shapes the YOLO exporters write
(tests/yolo_heads.py); how several maps are fused (``fuse``: ``equal`` or ``sum``); and an
all-zero map on a node ``auto`` picked names the node to try instead."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import save_graph
from onnx import TensorProto, helper, numpy_helper
from test_multinode import SIZE, two_node_model
from yolo_heads import HEADS, NECK, build_yolo

from onnxcam import Explainer, graph
from onnxcam.cli import cli
from onnxcam.errors import ConfigError

FORMATS = {"v8-8.2": "yolov8", "v8-split": "yolov8", "v5": "yolov5", "v10": "nms"}


@pytest.mark.parametrize("head", HEADS)
def test_auto_takes_the_neck_maps_where_each_scale_begins(tmp_path, head):
    """Ultralytics 8.2 concatenates each scale's box (64-channel DFL) and class convolutions
    into one map and computes the anchors from ``Shape`` of it: the last map of each scale
    that all of the scale's ends descend from is then the class branch's last convolution,
    which the earlier rule took. Every path to the ends passes through the neck's map only."""
    path = build_yolo(tmp_path / f"{head}.onnx", head)
    explainer = Explainer(path)
    assert explainer.prepared.kind.detection is not None
    assert explainer.prepared.kind.detection.format == FORMATS[head]
    assert [c.node for c in explainer.candidates] == list(NECK)
    assert [c.spatial for c in explainer.candidates] == [(8, 8), (4, 4), (2, 2)]


def test_nodes_marks_the_neck_maps_of_an_8_2_head(tmp_path):
    path = build_yolo(tmp_path / "v8.onnx", "v8-8.2")
    listing = CliRunner().invoke(cli, ["nodes", str(path)])
    assert listing.exit_code == 0, listing.output
    marked = [line.split()[1] for line in listing.output.splitlines() if line.startswith("* ")]
    assert marked == [*NECK, "auto"]
    assert "cv3" not in listing.output.split("auto picks", 1)[1]


def test_an_8_2_head_is_explained_on_its_neck_maps_with_either_fuse(tmp_path):
    path = build_yolo(tmp_path / "v8.onnx", "v8-8.2")
    image = np.random.default_rng(5).integers(0, 255, (64, 64, 3), np.uint8)
    maps = {}
    for fuse in ("equal", "sum"):
        result = Explainer(path, fuse=fuse).explain(image, target="detection:conf=0:max=1")
        record = result.to_record()
        assert record["options"]["fuse"] == fuse
        assert record["node"] == ",".join(NECK)
        maps[fuse] = result.saliency
        assert np.isfinite(result.saliency).all() and result.saliency.min() >= 0
        assert result.saliency.max() <= 1
    assert not np.allclose(maps["equal"], maps["sum"])


def test_earlier_maps_are_one_layer_before_and_every_path_passes_through_them(tmp_path):
    path = build_yolo(tmp_path / "v8.onnx", "v8-8.2")
    index = graph.GraphIndex(graph.load_model(path))
    picked = Explainer(path).candidates
    # n3/act's input is n3's conv of the concatenation: the same features one layer earlier
    assert [c.node for c in graph.earlier_maps(index, picked)] == ["cat3", "cat_d4", "cat_d5"]


# --------------------------------------------------------------------------- fuse


def naive_sum(path: Path, explainer: Explainer, image: np.ndarray) -> np.ndarray:
    """Score-CAM with every channel of both nodes in one sum, as a loop: masks from each
    channel (both nodes are at the input's resolution), the class-0 probability of each
    masked input, ``ReLU(Σ_k s_k A_k)`` scaled to a maximum of 1."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = explainer.preprocess(image)
    acts = explainer.forward(image).acts.astype(np.float64)
    total = np.zeros(acts.shape[1:])
    for a in acts:
        if a.max() - a.min() < 1e-6:
            continue  # a constant channel carries no location
        mask = (a - a.min()) / (a.max() - a.min())
        (logits,) = session.run(None, {"input": (x * mask).astype(np.float32)})
        probs = np.exp(logits[0] - logits[0].max())
        total += probs[0] / probs.sum() * a
    cam = np.maximum(total, 0)
    return cam / cam.max()


@pytest.mark.parametrize("scale_b", [1.0, 1000.0])
def test_fuse_sum_is_one_weighted_sum_over_every_channel(tmp_path, scale_b):
    path = two_node_model(tmp_path / "m.onnx", scale_b)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
    image[2:7, 3:9] = (250, 40, 40)
    explainer = Explainer(path, node="a,b", preset="unit", fuse="sum")
    result = explainer.explain(image, target="class:0")
    np.testing.assert_allclose(result.saliency, naive_sum(path, explainer, image), atol=1e-5)
    assert result.to_record()["options"]["fuse"] == "sum"
    equal = Explainer(path, node="a,b", preset="unit").explain(image, target="class:0")
    assert equal.to_record()["options"]["fuse"] == "equal"
    one = Explainer(path, node="a", preset="unit").explain(image, target="class:0")
    assert "fuse" not in one.to_record()["options"]  # one node: nothing is fused


def test_fuse_is_checked_and_on_the_command_line(tmp_path):
    path = two_node_model(tmp_path / "m.onnx", 1.0)
    with pytest.raises(ConfigError, match="fuse"):
        Explainer(path, fuse="mean")
    assert "--fuse [equal|sum]" in CliRunner().invoke(cli, ["explain", "--help"]).output


# --------------------------------------------------------------- an all-zero map


def negated_classifier(path: Path) -> Path:
    """conv + ReLU ``c1`` -> conv + ReLU ``c2`` -> Neg -> GAP -> Gemm: the map the head pools
    (``auto``'s pick) is never positive, so no weighted sum of its channels is."""
    rng = np.random.default_rng(11)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1] * 4, name="c1/conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="c1/relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1] * 4, name="c2/conv"),
        helper.make_node("Relu", ["c2"], ["r2"], name="c2/relu"),
        helper.make_node("Neg", ["r2"], ["neg"], name="neg"),
        helper.make_node("GlobalAveragePool", ["neg"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1, name="fc"),
    ]
    g = helper.make_graph(
        nodes, "negated",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits,
    )  # fmt: skip
    return save_graph(path, g)


def test_an_all_zero_map_on_an_auto_node_names_the_node_to_try(tmp_path):
    path = negated_classifier(tmp_path / "neg.onnx")
    image = np.random.default_rng(2).integers(0, 255, (SIZE, SIZE, 3), np.uint8)
    result = Explainer(path, preset="unit").explain(image)
    assert result.node == "neg" and not result.saliency.any()
    (note,) = [n for n in result.to_record()["notes"] if "all zero" in n]
    assert "--node auto picked 'neg': try --node 'c1/relu'" in note
    better = Explainer(path, preset="unit", node="c1/relu").explain(image)
    assert better.saliency.max() == pytest.approx(1.0)
    assert not any("all zero" in n for n in better.notes)
    named = Explainer(path, preset="unit", node="neg").explain(image)  # named: no suggestion
    assert any("all zero" in n and "try --node" not in n for n in named.notes)


def test_the_command_line_says_which_node_to_try(tmp_path):
    path = negated_classifier(tmp_path / "neg.onnx")
    png = tmp_path / "img.png"
    cv2.imwrite(str(png), np.random.default_rng(2).integers(0, 255, (SIZE, SIZE, 3), np.uint8))
    out = tmp_path / "out"
    run = CliRunner().invoke(
        cli, ["explain", str(path), str(png), "-o", str(out), "--preset", "unit"]
    )
    assert run.exit_code == 0, run.output
    assert "all zero" in run.stderr and "try --node 'c1/relu'" in run.stderr
    record = json.loads((out / "img.json").read_text())
    assert any("try --node 'c1/relu'" in n for n in record["notes"])
