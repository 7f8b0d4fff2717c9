"""End to end on the shipped EfficientNet-Lite0 and the shipped photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import EXAMPLES, REAL_MODEL

from onnxcam import Explainer
from onnxcam.cli import cli

# The espresso cup in examples/coffee.png (600x400), rim to base, handle excluded; picked by
# looking at the photo: x0, y0, x1, y1.
COFFEE_CUP = (170, 15, 415, 275)


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    return Explainer(REAL_MODEL, threads=2)


@pytest.fixture(scope="module")
def coffee(explainer):
    return explainer.explain(EXAMPLES / "coffee.png")


def test_chelsea_is_a_cat(explainer):
    result = explainer.explain(EXAMPLES / "chelsea.png")
    assert 281 <= result.class_index <= 285, result.top5
    assert "cat" in (result.label or "")
    assert result.saliency.shape == (300, 451)


def test_coffee_is_espresso_and_the_map_sits_on_the_cup(coffee):
    assert coffee.class_index == 967 and coffee.label == "espresso"
    sal = coffee.saliency
    assert sal.shape == (400, 600) and np.isfinite(sal).all()
    assert sal.min() >= 0.0 and sal.max() == pytest.approx(1.0, abs=1e-3)
    x0, y0, x1, y1 = COFFEE_CUP
    share = (x1 - x0) * (y1 - y0) / sal.size
    energy = sal[y0:y1, x0:x1].sum() / sal.sum()
    assert energy > 2.0 * share, (energy, share)
    peak_y, peak_x = np.unravel_index(np.argmax(sal), sal.shape)
    assert x0 <= peak_x < x1 and y0 <= peak_y < y1


def test_dead_channels_are_skipped_and_counted(coffee):
    assert coffee.channels_total == 1280
    assert coffee.channels_skipped > 0
    assert coffee.channels_used + coffee.channels_skipped == 1280
    assert coffee.masked_passes <= coffee.channels_used


def test_cli_on_the_shipped_model(tmp_path, coffee):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["explain", str(REAL_MODEL), str(EXAMPLES / "coffee.png"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "coffee.json").read_text())
    assert record["class_index"] == 967 and record["label"] == "espresso"
    np.testing.assert_allclose(np.load(out / "coffee.npy"), coffee.saliency, atol=1e-5)
    assert (out / "coffee_overlay.png").stat().st_size > 0
