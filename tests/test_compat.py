"""--compat presets against deliberately naive re-implementations of each library's method."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import SIZE, TinyWeights

from onnxcam import ConfigError, Explainer
from onnxcam.scorecam import COMPAT, ScoreCamOptions


def resize_align_corners(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch bilinear with align_corners=True, written out pixel by pixel."""
    h, w = a.shape
    out = np.zeros((height, width))
    for i in range(height):
        y = i * (h - 1) / (height - 1)
        y0 = int(np.floor(y))
        y1, dy = min(y0 + 1, h - 1), y - y0
        for j in range(width):
            x = j * (w - 1) / (width - 1)
            x0 = int(np.floor(x))
            x1, dx = min(x0 + 1, w - 1), x - x0
            top = a[y0, x0] * (1 - dx) + a[y0, x1] * dx
            bottom = a[y1, x0] * (1 - dx) + a[y1, x1] * dx
            out[i, j] = top * (1 - dy) + bottom * dy
    return out


def softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def prepared(weights: TinyWeights, image: np.ndarray):
    x = (image.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None].astype(np.float64)
    acts = weights.features(x)[0]
    c = int(np.argmax(weights.logits(x)[0]))
    return x, acts, c


def naive_grad_cam(weights: TinyWeights, image: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam ScoreCAM, one channel at a time (no channel is skipped)."""
    x, acts, c = prepared(weights, image)
    scores = []
    for a in acts:
        up = resize_align_corners(a, SIZE, SIZE)
        mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
        scores.append(weights.logits(x * mask)[0, c])
    w = softmax(np.array(scores))
    cam = np.maximum(np.tensordot(w, acts, axes=1), 0)
    cam = cam - cam.min()
    cam = cam / (1e-7 + cam.max())
    cam = cv2.resize(cam.astype(np.float32), (SIZE, SIZE))
    cam = cam - cam.min()
    return cam / (1e-7 + cam.max())


def naive_torchcam(weights: TinyWeights, image: np.ndarray) -> np.ndarray:
    """torchcam ScoreCAM: normalise at feature resolution, then upsample; logit differences."""
    x, acts, c = prepared(weights, image)
    clean = weights.logits(x)[0, c]
    scores = []
    for a in acts:
        n = a - a.min()
        n = n / (n.max() + 1e-8)
        up = cv2.resize(n.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        scores.append(weights.logits(x * up)[0, c] - clean)
    w = softmax(np.array(scores))
    cam = np.maximum(np.tensordot(w, acts, axes=1), 0)
    cam = cam - cam.min()
    cam = cam / (cam.max() + 1e-8)
    return cv2.resize(cam.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize(
    ("compat", "naive"), [("grad-cam", naive_grad_cam), ("torchcam", naive_torchcam)]
)
def test_compat_preset_matches_naive_reference(tiny, weights, image, compat, naive):
    result = Explainer(tiny, preset="unit", compat=compat, batch_size=2).explain(image)
    expected = naive(weights, image)
    np.testing.assert_allclose(result.saliency, expected, atol=2e-4)
    assert result.channels_skipped == 0  # these libraries run constant channels too
    assert result.options["compat"] == compat


def test_presets_differ_from_each_other(tiny, image):
    maps = {
        name: Explainer(tiny, preset="unit", compat=name).explain(image).saliency for name in COMPAT
    }
    assert not np.allclose(maps["official"], maps["grad-cam"], atol=1e-3)
    assert not np.allclose(maps["grad-cam"], maps["torchcam"], atol=1e-3)


def test_official_is_the_default_and_options_validate(tiny, image):
    default = Explainer(tiny, preset="unit").explain(image)
    assert default.options["compat"] == "official"
    with pytest.raises(ConfigError, match=r"has no --compat keras .*official, grad-cam, torchcam"):
        Explainer(tiny, compat="keras")
    with pytest.raises(ConfigError, match="either"):
        Explainer(tiny, compat="official", options=ScoreCamOptions())
    with pytest.raises(ConfigError, match="unknown score 'margin'; valid: probability"):
        Explainer(tiny, options=ScoreCamOptions(score="margin"))
    with pytest.raises(ConfigError, match="baseline 'none'"):
        Explainer(tiny, compat="torchcam", baseline="zero")
