"""Feature layouts: each reads its maps as (B, C, h, w) and writes them back unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcam.layouts import (
    FEATURE_LAYOUTS,
    INPUT_LAYOUTS,
    NCHW,
    NHWC,
    feature_layout,
    input_axes,
)


@pytest.mark.parametrize("name", list(FEATURE_LAYOUTS))
def test_to_chw_and_back_is_the_identity(name):
    layout = FEATURE_LAYOUTS[name]
    rng = np.random.default_rng(0)
    chw = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)
    native = layout.from_chw(chw)
    np.testing.assert_array_equal(layout.to_chw(native), chw)
    assert layout.channels(native.shape) == 5
    assert layout.grid(native.shape) == (3, 4)
    assert {layout.channel_axis, *layout.spatial_axes} == {1, 2, 3}


def test_nhwc_is_channels_last():
    maps = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (B, h, w, C)
    np.testing.assert_array_equal(NHWC.to_chw(maps), maps.transpose(0, 3, 1, 2))
    assert NCHW.to_chw(maps) is maps
    assert (NHWC.channel_axis, NHWC.spatial_axes) == (3, (1, 2))


def test_a_layout_is_its_name():
    assert NCHW == "NCHW" and NHWC != "NCHW" and NCHW != NHWC
    assert str(NHWC) == "NHWC" and feature_layout("NHWC") is NHWC
    assert feature_layout(NCHW) is NCHW
    with pytest.raises(ValueError, match="unknown feature layout 'NLC'; valid: NCHW, NHWC"):
        feature_layout("NLC")


def test_input_layouts_are_strings_with_their_axes():
    assert INPUT_LAYOUTS == ("NCHW", "NHWC")
    assert input_axes("NCHW") == (1, 2, 3) and input_axes("NHWC") == (3, 1, 2)
