"""The numpy core: interpolation, masks, channel bookkeeping, combination."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from onnxcam import scorecam
from onnxcam.scorecam import ScoreCamOptions


@pytest.mark.parametrize(("h", "w", "out"), [(7, 7, (224, 224)), (3, 5, (17, 40)), (12, 9, (5, 4))])
def test_upsample_matches_opencv_inter_linear(h, w, out):
    maps = np.random.default_rng(0).normal(size=(4, h, w)).astype(np.float32)
    ours = scorecam.upsample(maps, out)
    for k in range(4):
        ref = cv2.resize(maps[k], (out[1], out[0]), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(ours[k], ref, atol=1e-5)


def test_align_corners_hits_the_corners_and_is_linear_between():
    mat = scorecam.interp_matrix(3, 5, align_corners=True)
    np.testing.assert_allclose(mat @ np.array([0.0, 1.0, 2.0]), [0, 0.5, 1, 1.5, 2], atol=1e-6)
    assert np.allclose(mat.sum(axis=1), 1.0)


def test_minmax_maps_to_unit_range_and_constant_to_zero():
    maps = np.stack([np.arange(9.0).reshape(3, 3), np.full((3, 3), 4.0)])
    out = scorecam.minmax(maps)
    assert out[0].min() == 0.0 and out[0].max() == 1.0
    assert not out[1].any()


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


def test_apply_masks_broadcasts_over_colour_in_both_layouts():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    masks = np.random.default_rng(0).uniform(size=(5, 3, 4)).astype(np.float32)
    out = scorecam.apply_masks(x, masks, "NCHW")
    assert out.shape == (5, 2, 3, 4)
    np.testing.assert_allclose(out[2, 1], x[0, 1] * masks[2])
    nhwc = np.transpose(x, (0, 2, 3, 1))
    out_nhwc = scorecam.apply_masks(nhwc, masks, "NHWC")
    np.testing.assert_allclose(np.transpose(out_nhwc, (0, 3, 1, 2)), out)


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
