"""Segmentation targets on a tiny segmenter (tests/tiny_heads.py): values in closed form,
regions through the letterbox and the output's lower resolution, defaults, bad specs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_heads import SEG_SIZE, build_segmenter, scene, seg_reference

from onnxcam import Explainer
from onnxcam.errors import ConfigError, TargetError

# Class 1 is the red plane, class 3 the blue one; class 0 the dark background.
SCENE = ((0, (0, 0, 16, 16)), (2, (16, 16, 32, 32)), (2, (24, 0, 32, 8)))


def segmenter(tmp_path: Path, **options) -> Explainer:  # type: ignore[no-untyped-def]
    path = build_segmenter(tmp_path / "seg.onnx", **options.pop("build", {}))
    return Explainer(path, node="backbone/relu", preset="unit", **options)


def unit(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_mean_class_probability_over_the_predicted_region(tmp_path):
    explainer = segmenter(tmp_path)
    image = scene(objects=SCENE)
    target = explainer.bind(explainer.forward(image), "segmentation:3")[0]
    probs = softmax(seg_reference(unit(image)))
    region = probs[0].argmax(axis=0) == 3
    assert region.sum() == 16 + 4 == target.describe()["region_pixels"]
    rng = np.random.default_rng(5)
    batch = np.concatenate([unit(image), rng.uniform(0, 1, (2, 3, SEG_SIZE, SEG_SIZE))])
    probs = softmax(seg_reference(batch))
    expected = np.array([p[3][region].mean() for p in probs])
    outputs = explainer.session.run(batch.astype(np.float32))
    assert target(outputs) == pytest.approx(expected, rel=1e-5)
    summed = explainer.bind(explainer.forward(image), "segmentation:3:region=all:reduce=sum")[0]
    assert summed(outputs) == pytest.approx(probs[:, 3].sum(axis=(1, 2)), rel=1e-5)


def test_masking_the_region_lowers_the_score_and_equal_background_does_not(tmp_path):
    explainer = segmenter(tmp_path)
    image = scene(objects=((2, (16, 16, 32, 32)),))
    target = explainer.bind(explainer.forward(image), "segmentation:3")[0]
    x = unit(image)
    hidden, elsewhere = x.copy(), x.copy()
    hidden[..., 16:32, 16:32] = 0
    elsewhere[..., 0:16, 0:16] = 0
    clean, masked, background = target(
        explainer.session.run(np.concatenate([x, hidden, elsewhere]))
    )
    assert masked < 0.1 * clean and background >= 0.99 * clean


def test_the_default_is_the_most_present_class_other_than_background(tmp_path):
    explainer = segmenter(tmp_path)
    result = explainer.explain(scene(objects=SCENE))
    (target,) = result.targets
    assert target.kind == "segmentation" and target.class_index == 3  # 20 blocks against 16
    x, y = target.map_stats()["peak"]
    assert (x >= 16 and y >= 16) or (x >= 24 and y < 8)  # on a blue object


def test_a_box_region_maps_through_the_letterbox_to_output_pixels(tmp_path):
    explainer = segmenter(tmp_path, resize="letterbox")
    image = scene(size=(16, 32), objects=((0, (0, 0, 8, 8)),))  # h 16, w 32: padded 8 top
    target = explainer.bind(explainer.forward(image), "segmentation:1:box=0,0,16,8")[0]
    info = target.describe()
    # Image box (0, 0, 16, 8) -> input (0, 8, 16, 16) (scale 1, 8 rows of padding on top)
    # -> output blocks of 4 pixels: rows 2..3, columns 0..3.
    assert info["region_pixels"] == 8 and info["region"] == "box [0,0,16,8]"
    assert np.argwhere(target.region).tolist() == [[r, c] for r in (2, 3) for c in range(4)]


def test_a_mask_file_the_size_of_the_image_picks_the_region(tmp_path):
    explainer = segmenter(tmp_path)
    image = scene(objects=SCENE)
    mask = np.zeros((SEG_SIZE, SEG_SIZE), np.uint8)
    mask[0:8, 0:8] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    target = explainer.bind(
        explainer.forward(image), f"segmentation:1:mask={tmp_path / 'mask.png'}"
    )[0]
    assert target.describe()["region_pixels"] == 4
    wrong = np.zeros((10, 10), np.uint8)
    cv2.imwrite(str(tmp_path / "small.png"), wrong)
    with pytest.raises(ConfigError, match="must be the size of the image, 32×32"):
        explainer.bind(explainer.forward(image), f"segmentation:1:mask={tmp_path / 'small.png'}")


def test_nhwc_outputs_are_read_and_argmax_outputs_refused(tmp_path):
    nhwc = segmenter(tmp_path, build={"nhwc": True})
    image = scene(objects=SCENE)
    assert nhwc.explain(image).targets[0].class_index == 3
    labels = segmenter(tmp_path, build={"argmax": True})
    with pytest.raises(ConfigError, match="without its final ArgMax"):
        labels.explain(image, target="segmentation:1")


def test_bad_segmentation_targets_say_what_to_do(tmp_path):
    explainer = segmenter(tmp_path)
    fwd = explainer.forward(scene(objects=((0, (0, 0, 16, 16)),)))
    with pytest.raises(TargetError, match=r"predicted nowhere.*region=all"):
        explainer.bind(fwd, "segmentation:2")
    with pytest.raises(ConfigError, match=r"class 9 is out of range.*0\.\.3"):
        explainer.bind(fwd, "segmentation:9")
    with pytest.raises(ConfigError, match="box= or mask=, not both"):
        explainer.bind(fwd, "segmentation:1:box=0,0,4,4:mask=m.png")
    assert explainer.bind(fwd, "segmentation:2:region=all")[0].describe()["region_pixels"] == 64
