"""Metrics on constructed cases whose values are known in closed form, and `evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TinyWeights

from onnxcam import ConfigError, Explainer, metrics
from onnxcam.cli import cli
from onnxcam.evaluate import evaluate, summarize


def mean_scorer(chunk):
    """A "model" whose score is the mean input value (curves have closed forms), reading its
    inputs ``chunk`` at a time."""

    def score(count, inputs):
        rows = np.concatenate([b.reshape(b.shape[0], -1).mean(axis=1) for b in inputs(chunk)])
        assert rows.shape == (count,)
        return rows

    return score


def test_auc_trapezoid_on_unit_interval():
    assert metrics.auc(np.array([1.0, 0.75, 0.5, 0.25, 0.0])) == pytest.approx(0.5)
    assert metrics.auc(np.ones(7)) == pytest.approx(1.0)
    assert metrics.auc(np.array([0.0, 1.0])) == pytest.approx(0.5)


def test_average_drop_and_increase_in_confidence():
    clean, explained = np.array([0.8, 0.5]), np.array([0.4, 0.6])
    assert metrics.average_drop(clean, explained) == pytest.approx(25.0)  # (0.5 + 0) / 2
    assert metrics.increase_in_confidence(clean, explained) == pytest.approx(50.0)


def test_deletion_of_uniform_image_is_half():
    x = np.ones((1, 1, 4, 4), np.float32)
    sal = np.random.default_rng(0).uniform(size=(4, 4))
    curve = metrics.causal_curve(mean_scorer(2), x, np.zeros_like(x), sal, steps=4, layout="NCHW")
    np.testing.assert_allclose(curve, [1, 0.75, 0.5, 0.25, 0])
    assert metrics.auc(curve) == pytest.approx(0.5)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_good_map_deletes_fast_and_inserts_fast(layout):
    img = np.zeros((4, 4), np.float32)
    img[:, :2] = 1.0  # the "object": left half
    x = img[None, None] if layout == "NCHW" else img[None, :, :, None]
    good = img + 0.01 * np.arange(16).reshape(4, 4)  # object first
    bad = 1.0 - good  # background first
    zero = np.zeros_like(x)

    def curve(start, finish, sal, chunk=3):
        return metrics.causal_curve(mean_scorer(chunk), start, finish, sal, steps=4, layout=layout)

    np.testing.assert_allclose(curve(x, zero, good), [0.5, 0.25, 0, 0, 0])
    assert metrics.auc(curve(x, zero, good)) == pytest.approx(0.125)
    assert metrics.auc(curve(zero, x, good)) == pytest.approx(0.375)
    assert metrics.auc(curve(zero, x, bad)) == pytest.approx(0.125)
    for chunk in (1, 2, 100):  # chunking never changes the curve
        np.testing.assert_array_equal(curve(x, zero, good, chunk), curve(x, zero, good))


def test_masked_by_map_blur_and_center_prior():
    x = np.full((1, 3, 4, 6), 2.0, np.float32)
    sal = np.linspace(0, 1, 24).reshape(4, 6).astype(np.float32)
    np.testing.assert_allclose(metrics.masked_by_map(x, sal, "NCHW")[0, 1], 2 * sal)
    assert np.allclose(metrics.blur_input(x, "NCHW"), 2.0)  # a flat image stays flat
    prior = metrics.center_prior(5, 7)
    assert prior.max() == pytest.approx(1.0) and np.unravel_index(prior.argmax(), (5, 7)) == (2, 3)


def test_evaluate_on_tiny_model_matches_numpy(tiny, weights: TinyWeights, image):
    explainer = Explainer(tiny, preset="unit", batch_size=4)
    records = evaluate(explainer, image, steps=8)
    assert [r.method for r in records] == ["scorecam", "activation", "center", "random"]
    x = (image / 255.0).transpose(2, 0, 1)[None]

    def prob(inp):
        z = weights.logits(inp)[0]
        return np.exp(z - z.max())[records[0].class_index] / np.exp(z - z.max()).sum()

    sal = explainer.explain(image).saliency_input
    sc = records[0]
    assert sc.score == pytest.approx(prob(x), abs=1e-5)
    assert sc.explained_score == pytest.approx(prob(x * sal[None, None]), abs=1e-5)
    assert sc.deletion.shape == (9,) and sc.deletion[0] == pytest.approx(sc.score, abs=1e-6)
    assert sc.deletion[-1] == pytest.approx(prob(np.zeros_like(x)), abs=1e-5)
    assert sc.insertion[-1] == pytest.approx(sc.score, abs=1e-6)
    table = summarize(records)
    assert set(table) == {"scorecam", "activation", "center", "random"}
    assert table["scorecam"]["average_drop"] == pytest.approx(sc.drop)
    with pytest.raises(ConfigError, match="unknown method"):
        evaluate(explainer, image, methods=["gradcam"])


def test_cli_evaluate_prints_table_and_writes_json(tiny, image, tmp_path):
    import cv2

    path = tmp_path / "img.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        cli,
        ["evaluate", str(tiny), str(path), "--preset", "unit", "--steps", "4", "-o", str(out),
         "--method", "scorecam", "--method", "center"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "avg drop %" in result.output and "scorecam" in result.output
    document = json.loads(out.read_text())
    assert set(document["summary"]) == {"scorecam", "center"}
    assert len(document["records"]) == 2 and len(document["records"][0]["deletion_curve"]) == 5
