"""Ground-truth localisation on the synthetic shapes task: the pointing game.

``models/shapes_cnn.onnx`` was trained by tools/train_shapes.py on images from
tools/synthetic.py; here fresh images (a seed the training never used) are explained and the
map's maximum must fall inside the target object's box.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from onnxcam import Explainer
from tools.synthetic import CLASSES, make_samples

SHAPES_MODEL = ROOT / "models" / "shapes_cnn.onnx"
N_IMAGES = 300
TOLERANCE = 3  # pixels around the box, as in the usual pointing game (15 px at 224)


@pytest.fixture(scope="module")
def outcomes():
    samples = make_samples(N_IMAGES, seed=20261125)
    explainer = Explainer(SHAPES_MODEL, threads=2)
    results = [r for _, r in explainer.explain_many([s.image for s in samples], group=32)]
    return samples, results


def test_shapes_model_is_accurate_on_fresh_images(outcomes):
    samples, results = outcomes
    accuracy = np.mean([r.class_index == s.label for s, r in zip(samples, results, strict=True)])
    assert accuracy >= 0.95
    assert results[0].label in CLASSES


def test_pointing_game_and_energy(outcomes, record_property):
    samples, results = outcomes
    hits, energy, shares = [], [], []
    for sample, result in zip(samples, results, strict=True):
        sal = result.saliency
        x0, y0, x1, y1 = sample.box
        peak_y, peak_x = np.unravel_index(np.argmax(sal), sal.shape)
        hits.append(
            x0 - TOLERANCE <= peak_x < x1 + TOLERANCE and y0 - TOLERANCE <= peak_y < y1 + TOLERANCE
        )
        total = float(sal.sum())
        energy.append(float(sal[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0)
        shares.append((x1 - x0) * (y1 - y0) / sal.size)
    hit_rate, mean_energy = float(np.mean(hits)), float(np.mean(energy))
    record_property("pointing_hit_rate", hit_rate)
    record_property("energy_in_box", mean_energy)
    print(f"\npointing game {hit_rate:.3f}; energy in box {mean_energy:.3f} "
          f"(box share {np.mean(shares):.3f}) over {len(hits)} images")  # fmt: skip
    assert hit_rate >= 0.90
    assert mean_energy > 2 * float(np.mean(shares))
