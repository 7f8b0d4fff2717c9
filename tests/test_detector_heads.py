"""Where a detector's head begins, on the head shapes the YOLO exporters write
(tests/yolo_heads.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from yolo_heads import HEADS, NECK, build_yolo

from onnxcam import Explainer, graph
from onnxcam.cli import cli

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


def test_earlier_maps_are_one_layer_before_and_every_path_passes_through_them(tmp_path):
    path = build_yolo(tmp_path / "v8.onnx", "v8-8.2")
    index = graph.GraphIndex(graph.load_model(path))
    picked = Explainer(path).candidates
    # n3/act's input is n3's conv of the concatenation: the same features one layer earlier
    assert [c.node for c in graph.earlier_maps(index, picked)] == ["cat3", "cat_d4", "cat_d5"]
