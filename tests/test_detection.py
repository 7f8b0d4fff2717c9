"""Detection targets on tiny detectors in every layout (tests/tiny_heads.py): the layouts
read alike, scores in closed form, masking behaves, letterbox geometry, bad specs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_heads import CELL_BOXES, DET_SIZE, build_detector, reference, scene

from onnxcam import Explainer
from onnxcam.cli import cli
from onnxcam.errors import ConfigError, TargetError
from onnxcam.geometry import Geometry, fit_image
from onnxcam.targets import parse_target

FORMATS = ["yolov8", "yolov8-t", "yolov5", "yolox", "nms", "boxes-scores"]
NAMES = "{0: 'red', 1: 'green', 2: 'blue'}"
TWO = ((0, (0, 0, 8, 8)), (2, (16, 16, 32, 32)))  # a red and a blue object


def detector(tmp_path: Path, fmt: str, **options) -> Explainer:  # type: ignore[no-untyped-def]
    metadata = {"names": NAMES} if fmt == "yolov8-t" else None
    path = build_detector(tmp_path / f"{fmt}.onnx", fmt, metadata=metadata)
    options.setdefault("preset", "unit")
    return Explainer(path, node="backbone/relu", **options)


def unit(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]


def iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Naive IoU, one pair at a time."""
    out = []
    for b in boxes:
        w = max(0.0, min(b[2], box[2]) - max(b[0], box[0]))
        h = max(0.0, min(b[3], box[3]) - max(b[1], box[1]))
        inter = w * h
        union = (b[2] - b[0]) * (b[3] - b[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
        out.append(inter / union if union > 0 else 0.0)
    return np.array(out)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_layout_gives_the_same_detections(tmp_path, fmt):
    explainer = detector(tmp_path, fmt, resize="stretch")
    image = scene(objects=TWO)
    fwd = explainer.forward(image)
    found = explainer.bind(fwd, "detection")
    described = [t.describe() for t in found]
    assert described[0]["format"] == fmt.replace("-t", "")
    # The reference: best class per candidate, conf 0.25, greedy class-wise NMS.
    boxes, obj, cls = reference(unit(image))
    scores = obj[0, :, None] * cls[0]
    best, label = scores.max(axis=1), scores.argmax(axis=1)
    order = [j for j in np.argsort(-best, kind="stable") if best[j] >= 0.25]
    iou_limit = 0.7 if fmt in ("yolov8", "yolov8-t", "nms") else 0.45
    kept: list[int] = []
    for j in order:
        if all(label[k] != label[j] or iou(boxes[[k]], boxes[j])[0] <= iou_limit for k in kept):
            kept.append(j)
    assert [d["class_index"] for d in described] == [int(label[j]) for j in kept[:10]]
    for d, j in zip(described, kept, strict=False):
        assert d["box"] == pytest.approx(boxes[j].tolist(), abs=0.01)
        assert d["score"] == pytest.approx(best[j], rel=1e-5)


@pytest.mark.parametrize("mode", ["iou", "drise", "grad-cam"])
def test_object_scores_in_closed_form(tmp_path, mode):
    explainer = detector(tmp_path, "yolov5", resize="stretch")
    image = scene(objects=TWO)
    box = np.array([16.0, 16.0, 32.0, 32.0])
    target = explainer.bind(explainer.forward(image), f"detection:box=16,16,32,32:mode={mode}")[0]
    assert target.describe()["class_index"] == 2  # the blue object's class, from the box
    rng = np.random.default_rng(3)
    batch = np.concatenate([unit(image), rng.uniform(0, 1, (3, 3, DET_SIZE, DET_SIZE))])
    outputs = explainer.session.run(batch.astype(np.float32))
    boxes, obj, cls = reference(batch)
    overlap = iou(boxes, box)
    if mode == "iou":
        expected = (overlap * obj * cls[:, :, 2]).max(axis=1)
    elif mode == "drise":
        clean = cls[0, np.argmax(overlap * obj[0] * cls[0].max(axis=1))]
        cosine = cls @ clean / (np.linalg.norm(cls, axis=2) * np.linalg.norm(clean))
        expected = (overlap * obj * cosine).max(axis=1)
    else:
        scores = obj[:, :, None] * cls
        expected = []
        for s in scores:
            pool = np.where(s.max(axis=1) >= 0.05, overlap, -1.0)
            j = int(np.argmax(pool))
            hit = pool[j] > 0.5 and int(np.argmax(s[j])) == 2
            expected.append(overlap[j] + s[j].max() if hit else 0.0)
    assert target(outputs) == pytest.approx(np.asarray(expected), rel=1e-5, abs=1e-7)


def test_masking_the_object_lowers_its_score_and_equal_background_does_not(tmp_path):
    explainer = detector(tmp_path, "yolov8", resize="stretch")
    image = scene(objects=((2, (16, 16, 32, 32)),))
    target = explainer.bind(explainer.forward(image), "detection:box=16,16,32,32:class=2")[0]
    x = unit(image)
    on_object, on_background = x.copy(), x.copy()
    on_object[..., 16:32, 16:32] = 0
    on_background[..., 0:16, 0:16] = 0
    clean, hidden, elsewhere = target(
        explainer.session.run(np.concatenate([x, on_object, on_background]))
    )
    assert hidden < 0.1 * clean
    assert elsewhere >= 0.99 * clean


def test_letterbox_geometry_matches_ultralytics_and_inverts():
    g = Geometry.of("letterbox", (480, 640), (640, 640))  # h, w
    assert (g.left, g.top, g.content_w, g.content_h) == (0, 80, 640, 480)
    g = Geometry.of("letterbox", (100, 37), (64, 64))
    r = min(64 / 100, 64 / 37)
    cw, ch = round(37 * r), round(100 * r)
    assert (g.content_w, g.content_h) == (cw, ch)
    assert g.left == round((64 - cw) / 2 - 0.1) and g.top == round((64 - ch) / 2 - 0.1)
    box = np.array([3.0, 10.0, 30.0, 90.0])
    assert g.to_image(g.to_input(box)) == pytest.approx(box)
    image = np.full((100, 37, 3), 200, np.uint8)
    fitted, same = fit_image(image, 64, 64, "letterbox")
    assert same == g and fitted.shape == (64, 64, 3)
    assert (fitted[:, : g.left] == 114).all() and (fitted[:, g.left + cw :] == 114).all()
    assert (g.crop(fitted[..., 0]) == 200).all()


def test_boxes_and_maps_map_back_through_the_letterbox_of_a_wide_image(tmp_path):
    explainer = detector(tmp_path, "yolov8")  # a YOLO layout: letterboxed by default
    image = scene(size=(32, 64), objects=((2, (32, 0, 48, 16)),))  # one stride-8 cell
    result = explainer.explain(image, target="detection:box=32,0,48,16")
    info = result.targets[0].info
    assert result.options["resize"] == "letterbox" and result.options["pad"] == [0, 8]
    assert info["box"] == pytest.approx([32, 0, 48, 16], abs=0.01)  # back in image pixels
    assert info["box_input"] == pytest.approx([16, 8, 24, 16], abs=0.01)  # scale 1/2, pad 8
    assert result.saliency.shape == (32, 64)
    x, y = result.targets[0].map_stats()["peak"]
    assert 32 <= x < 48 and 0 <= y < 16
    # Every clean detection of the default target lies on the image, not the padding.
    for target in explainer.explain(image).targets:
        x0, y0, x1, y1 = target.info["box"]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 32


def test_a_detector_gets_detection_targets_by_default_from_one_set_of_passes(tmp_path):
    explainer = detector(tmp_path, "nms", resize="stretch")
    image = scene(objects=TWO)
    many = explainer.explain(image)
    one = explainer.explain(image, target="detection:index=0")
    assert {t.kind for t in many.targets} == {"detection"} and len(many.targets) > 1
    assert many.masked_passes == one.masked_passes
    np.testing.assert_allclose(many.targets[0].saliency, one.targets[0].saliency, atol=1e-6)


def test_yolox_boxes_are_decoded_from_the_grids(tmp_path):
    explainer = detector(tmp_path, "yolox", resize="stretch")
    fwd = explainer.forward(scene(objects=TWO))
    targets = explainer.bind(fwd, "detection:conf=0:max=100:iou=1")
    assert {t.describe()["format"] for t in targets} == {"yolox"}
    found = sorted(tuple(t.describe()["box"]) for t in targets)
    assert found == sorted(tuple(map(float, b)) for b in CELL_BOXES)


def test_the_detections_output_is_named_when_two_could_be_meant(tmp_path):
    import onnx
    from onnx import helper

    path = build_detector(tmp_path / "d.onnx", "yolov8")
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Identity", ["output0"], ["copy"]))
    copy = helper.make_tensor_value_info("copy", onnx.TensorProto.FLOAT, ["N", 7, 21])
    model.graph.output.append(copy)
    onnx.save(model, str(tmp_path / "two.onnx"))
    explainer = Explainer(tmp_path / "two.onnx", node="backbone/relu", preset="unit")
    fwd = explainer.forward(scene(objects=TWO))
    with pytest.raises(ConfigError, match="several outputs could hold detections"):
        explainer.bind(fwd, "detection")
    assert explainer.bind(fwd, "detection:output=copy")[0].describe()["output"] == "copy"


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("detection:box=1,2,3", "box='1,2,3' is not valid"),
        ("detection:box=5,5,1,1", "x1 > x0"),
        ("detection:format=yolo9", "auto, yolov8, yolov5, yolox, nms, boxes-scores"),
        ("detection:mode=gradcam", "iou, drise, grad-cam"),
        ("detection:conf=2", "in [0, 1]"),
        ("detection:klass=1", "did you mean 'class'"),
    ],
)
def test_bad_detection_specs_say_what_is_valid(text, phrase):
    with pytest.raises(ConfigError, match=None) as info:
        parse_target(text)
    assert phrase in str(info.value)


def test_bad_binds_name_the_fix(tmp_path):
    explainer = detector(tmp_path, "yolov8", resize="stretch")
    fwd = explainer.forward(scene(objects=TWO))
    with pytest.raises(ConfigError, match=r"class 7 is out of range.*3 classes"):
        explainer.bind(fwd, "detection:class=7")
    with pytest.raises(TargetError, match=r"detection\(s\) scoring at least conf=0.5"):
        explainer.bind(fwd, "detection:index=9:conf=0.5")
    with pytest.raises(TargetError) as info:
        explainer.bind(fwd, "detection:conf=0.9")
    assert "conf=0.9" in str(info.value) and "lower it" in str(info.value)
    assert "--target detection:conf=0.58" in str(info.value)  # 0.9 of the best, 0.640
    with pytest.raises(TargetError, match=r"finds nothing in this image.*--preset"):
        explainer.bind(explainer.forward(scene(objects=())), "detection")
    with pytest.raises(ConfigError, match="format=yolox expects"):
        explainer.bind(fwd, "detection:format=yolox:output=output0")


def test_the_cli_draws_the_box_on_each_overlay(tmp_path):
    model = build_detector(tmp_path / "det.onnx", "yolov8")
    image = scene(size=(64, 64), objects=((2, (32, 32, 64, 64)),))
    photo = tmp_path / "scene.png"
    cv2.imwrite(str(photo), image[..., ::-1])
    out = tmp_path / "out"
    done = CliRunner().invoke(
        cli,
        ["explain", str(model), str(photo), "-o", str(out), "--node", "backbone/relu",
         "--target", "detection:box=32,32,64,64"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    overlay = cv2.imread(str(out / "scene_overlay.png"))[..., ::-1]
    edge = overlay[32:63, 32]  # the box's left edge: white line over a black outline
    assert (edge.min(axis=1) >= 200).mean() > 0.5
    assert "class 2" in done.output
