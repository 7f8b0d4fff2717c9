"""Shared array operations: interpolation, normalisation, masking, blending."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from onnxcam import ops


@pytest.mark.parametrize(("h", "w", "out"), [(7, 7, (224, 224)), (3, 5, (17, 40)), (12, 9, (5, 4))])
def test_upsample_matches_opencv_inter_linear(h, w, out):
    maps = np.random.default_rng(0).normal(size=(4, h, w)).astype(np.float32)
    ours = ops.upsample(maps, out)
    for k in range(4):
        ref = cv2.resize(maps[k], (out[1], out[0]), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(ours[k], ref, atol=1e-5)


def test_align_corners_hits_the_corners_and_is_linear_between():
    mat = ops.interp_matrix(3, 5, align_corners=True)
    np.testing.assert_allclose(mat @ np.array([0.0, 1.0, 2.0]), [0, 0.5, 1, 1.5, 2], atol=1e-6)
    assert np.allclose(mat.sum(axis=1), 1.0)


def test_minmax_maps_to_unit_range_and_constant_to_zero():
    maps = np.stack([np.arange(9.0).reshape(3, 3), np.full((3, 3), 4.0)])
    out = ops.minmax(maps)
    assert out[0].min() == 0.0 and out[0].max() == 1.0
    assert not out[1].any()


def test_apply_masks_broadcasts_over_colour_in_both_layouts():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    masks = np.random.default_rng(0).uniform(size=(5, 3, 4)).astype(np.float32)
    out = ops.apply_masks(x, masks, "NCHW")
    assert out.shape == (5, 2, 3, 4)
    np.testing.assert_allclose(out[2, 1], x[0, 1] * masks[2])
    nhwc = np.transpose(x, (0, 2, 3, 1))
    out_nhwc = ops.apply_masks(nhwc, masks, "NHWC")
    np.testing.assert_allclose(np.transpose(out_nhwc, (0, 3, 1, 2)), out)


def test_blend_takes_finish_where_true_in_both_layouts():
    start = np.zeros((1, 2, 3, 3), np.float32)
    finish = np.ones_like(start)
    taken = np.zeros((2, 3, 3), bool)
    taken[1, 0, 0] = True
    out = ops.blend(start, finish, taken, "NCHW")
    assert out.shape == (2, 2, 3, 3) and out.sum() == 2.0 and out[1, :, 0, 0].tolist() == [1, 1]
    nhwc = ops.blend(start.transpose(0, 2, 3, 1), finish.transpose(0, 2, 3, 1), taken, "NHWC")
    np.testing.assert_array_equal(nhwc.transpose(0, 3, 1, 2), out)
