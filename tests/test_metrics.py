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
    for steps in (0, 16 * 16 + 1, 10**18, 2.5):  # more steps than the input's 256 pixels
        with pytest.raises(ConfigError, match="steps must be an integer from 1 to 256"):
            evaluate(explainer, image, methods=["center"], steps=steps)


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


# ----------------------------------------------------------------------------- ROAD


def test_linear_imputation_reproduces_a_ramp_and_fills_everything_with_the_mean():
    ys, xs = np.mgrid[0:12, 0:10].astype(np.float32)
    x = np.stack([ys, xs, ys + 2 * xs])[None]  # linear planes: harmonic for the stencil
    removed = np.zeros((12, 10), bool)
    removed[3:9, 2:8] = True  # a hole away from the border
    filled = metrics.impute_linear(x, removed, "NCHW")
    np.testing.assert_allclose(filled, x, atol=1e-4)
    nhwc = metrics.impute_linear(x.transpose(0, 2, 3, 1), removed, "NHWC")
    np.testing.assert_allclose(nhwc, x.transpose(0, 2, 3, 1), atol=1e-4)
    everything = metrics.impute_linear(x, np.ones((12, 10), bool), "NCHW")
    np.testing.assert_allclose(everything[0, 2], np.full((12, 10), (ys + 2 * xs).mean()))
    noisy = metrics.impute_linear(x, removed, "NCHW", noise=0.5, rng=np.random.default_rng(0))
    assert np.array_equal(noisy[:, :, ~removed], x[:, :, ~removed])  # kept pixels stay
    assert 0.3 < np.std(noisy[:, :, removed] - x[:, :, removed]) < 0.7


def test_road_removes_the_most_or_least_relevant_share_at_each_level():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(1, 1, 20, 20)).astype(np.float32)
    saliency = np.zeros((20, 20), np.float32)
    saliency[:10, :10] = 1.0 + rng.uniform(size=(10, 10))  # the top-left quarter matters

    def changed_in_quarter(count, inputs):  # how many top-left pixels were imputed
        rows = np.concatenate(list(inputs(3)))
        return (rows[:, 0, :10, :10] != x[0, 0, :10, :10]).sum(axis=(1, 2)).astype(float)

    levels = (0.1, 0.2, 0.5, 0.9)
    morf = metrics.road_curve(changed_in_quarter, x, saliency, most_first=True, layout="NCHW",
                              levels=levels)  # fmt: skip
    lerf = metrics.road_curve(changed_in_quarter, x, saliency, most_first=False, layout="NCHW",
                              levels=levels)  # fmt: skip
    np.testing.assert_array_equal(morf, [40, 80, 100, 100])  # ceil(level · 400), up to 100
    np.testing.assert_array_equal(lerf, [0, 0, 0, 60])  # 360 least relevant: 300 + 60


# ----------------------------------------------------------------------------- ADCC


def test_adcc_coherency_and_complexity_on_known_cases():
    assert metrics.adcc(1.0, 0.0, 0.0) == pytest.approx(1.0)
    assert metrics.adcc(0.5, 0.5, 0.5) == pytest.approx(0.5)
    assert metrics.adcc(0.8, 0.25, 0.1) == pytest.approx(3 / (1 / 0.8 + 1 / 0.75 + 1 / 0.9))
    assert metrics.adcc(0.9, 1.0, 0.1) == 0.0  # a map of all ones is as complex as it gets
    a = np.linspace(0, 1, 16).reshape(4, 4)
    assert metrics.coherency(a, a) == pytest.approx(1.0)
    assert metrics.coherency(a, 1 - a) == pytest.approx(0.0)
    assert metrics.coherency(a, np.ones((4, 4))) == pytest.approx(0.5)  # constant: no correlation
    assert metrics.complexity(np.ones((3, 3))) == 1.0
    assert metrics.complexity(a) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- pointing games


def test_pointing_game_and_energy_on_a_box():
    inside = metrics.box_mask([[2, 2, 4, 4]], (6, 6))
    assert inside.sum() == 4 and inside[2:4, 2:4].all()  # pixel centres 2.5 and 3.5
    peak = np.zeros((6, 6))
    peak[3, 3] = 1.0
    assert metrics.pointing_hit(peak, inside)
    peak = np.zeros((6, 6))
    peak[0, 0] = 1.0
    assert not metrics.pointing_hit(peak, inside)
    assert not metrics.pointing_hit(np.ones((6, 6)), inside)  # a flat map points nowhere
    assert metrics.energy_in_boxes(np.ones((6, 6)), inside) == pytest.approx(4 / 36)
    assert metrics.energy_in_boxes(np.zeros((6, 6)), inside) == 0.0


def test_evaluate_scores_the_pointing_games_road_and_adcc(tiny, image):
    explainer = Explainer(tiny, preset="unit", batch_size=4)
    whole, corner = evaluate(explainer, image, methods=["center", "scorecam"], steps=4,
                             boxes=[[0, 0, 16, 16]])  # fmt: skip
    assert whole.pointing and whole.energy == pytest.approx(1.0)
    assert whole.coherency == pytest.approx(1.0)  # a reference map ignores the image
    assert len(whole.road_morf) == 9 and np.isfinite(whole.road_morf).all()
    assert corner.coherency is not None and 0.0 <= corner.coherency <= 1.0
    (small,) = evaluate(explainer, image, methods=["center"], steps=4, boxes=[[0, 0, 4, 4]])
    prior = metrics.center_prior(16, 16)
    assert not small.pointing
    assert small.energy == pytest.approx(prior[:4, :4].sum() / prior.sum(), rel=1e-5)
    table = summarize([whole, corner])
    assert table["center"]["pointing_game"] == 100.0
    assert table["center"]["road_morf"] == pytest.approx(whole.road_morf.mean())
    assert "adcc" in table["scorecam"] and 0 <= table["scorecam"]["adcc"] <= 100


def test_cli_evaluate_takes_a_method_list_boxes_and_writes_quantus_arrays(tiny, image, tmp_path):
    import cv2

    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), image[:, :, ::-1])
    boxes = {"a.png": [[4, 4, 12, 12]], "b.png": [{"box": [0, 0, 8, 8], "class": 0}]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out = tmp_path / "eval"
    args = ["evaluate", str(tiny), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--preset",
            "unit", "--steps", "4", "-o", str(out), "--method", "recipro,rise,center",
            "--samples", "32", "--boxes", str(tmp_path / "boxes.json"),
            "--quantus", str(tmp_path / "maps.npz")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "pointing %" in result.output and "ROAD MoRF" in result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("method"))
    assert [line.split()[0] for line in lines[header + 1 : header + 4]] == [
        "recipro", "rise", "center"]  # fmt: skip
    arrays = np.load(tmp_path / "maps.npz")
    assert arrays["x_batch"].shape == (2, 3, 16, 16) and arrays["y_batch"].dtype == np.int64
    assert arrays["a_batch_rise"].shape == (2, 1, 16, 16)
    assert list(arrays["methods"]) == ["recipro", "rise", "center"]
    assert arrays["s_batch"][0, 0, 4:12, 4:12].all() and arrays["s_batch"][0].sum() == 64
    document = json.loads((out / "evaluation.json").read_text())
    assert document["records"][0]["pointing_hit"] in (True, False)
    bad = CliRunner().invoke(cli, [*args[:10], "--method", "scorecam", "--groups", "4"])
    assert bad.exit_code != 0 and "none of the methods compared takes --groups" in bad.output
    bad = CliRunner().invoke(cli, [*args[:10], "--method", "gradcam"])
    assert bad.exit_code == 2 and "unknown method 'gradcam'" in bad.output
