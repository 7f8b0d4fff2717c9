"""Score-CAM's own arithmetic: channel bookkeeping, masks, weights and combination."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from onnxcam.methods import scorecam
from onnxcam.methods.scorecam import ScoreCamOptions


def test_distinct_channels_skips_constant_and_merges_equal_masks():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4, 4)).astype(np.float32)
    acts = np.stack([a[0], a[1], 2.0 * a[1], np.zeros((4, 4)), a[2], a[0]]).astype(np.float32)
    constant, reps, owner = scorecam.distinct_channels(acts)
    assert constant.tolist() == [False, False, False, True, False, False]
    assert reps.tolist() == [0, 1, 4]
    assert owner.tolist() == [0, 1, 1, -1, 2, 0]


def test_iter_masks_chunks_cover_every_channel_once():
    acts = np.random.default_rng(1).normal(size=(10, 5, 5)).astype(np.float32)
    chunks = list(scorecam.iter_masks(acts, np.arange(10), (20, 20), 3, ScoreCamOptions()))
    assert [c.shape[0] for c in chunks] == [3, 3, 3, 1]
    masks = np.concatenate(chunks)
    assert masks.min() == 0.0 and np.allclose(masks.max(axis=(1, 2)), 1.0)


def test_channel_weights_baseline_and_softmax():
    scores = np.array([0.2, 0.5, 0.3])
    np.testing.assert_allclose(scorecam.channel_weights(scores, 0.1), [0.1, 0.4, 0.2])
    soft = scorecam.channel_weights(scores, 0.1, channel_softmax=True)
    np.testing.assert_allclose(soft, np.exp(scores) / np.exp(scores).sum())


def test_combine_is_relu_of_weighted_upsampled_sum_over_its_max():
    rng = np.random.default_rng(2)
    acts = rng.uniform(size=(3, 4, 4)).astype(np.float32)
    w = np.array([1.0, -2.0, 0.5])
    cam = scorecam.combine(acts, w, (12, 12), ScoreCamOptions())
    ref = sum(
        w[k] * cv2.resize(acts[k], (12, 12), interpolation=cv2.INTER_LINEAR) for k in range(3)
    )
    ref = np.maximum(ref, 0)
    np.testing.assert_allclose(cam, ref / ref.max(), atol=1e-5)
    assert cam.dtype == np.float32 and cam.max() == pytest.approx(1.0)


def test_combine_all_negative_gives_zero_map_not_nan():
    acts = np.ones((2, 3, 3), np.float32)
    cam = scorecam.combine(acts, np.array([-1.0, -0.5]), (6, 6), ScoreCamOptions())
    assert np.isfinite(cam).all() and not cam.any()


def test_top_channels_ranking():
    from onnxcam.methods.scorecam import top_channels

    acts = np.zeros((4, 3, 3), np.float32)
    acts[0, 0, 0] = 5.0  # high max, low std
    acts[1] = np.arange(9).reshape(3, 3)  # high std, max 8
    acts[2, 1, 1] = 1.0
    assert top_channels(acts, 1, "std").tolist() == [False, True, False, False]
    assert top_channels(acts, 2, "max").tolist() == [True, True, False, False]
    assert top_channels(acts, 9, "std").tolist() == [True, True, True, False]  # never constant
