"""Explainer on tiny models whose Score-CAM map is computed independently in the test."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import SIZE, TinyWeights, build_tiny, nan_weights

from onnxcam import ConfigError, Explainer, NumericalError
from onnxcam.config import MAX_THREADS
from onnxcam.methods import RiseOptions
from onnxcam.methods.sscam import SmoothOptions


def reference_map(weights: TinyWeights, image: np.ndarray, target: int | None = None):
    """Score-CAM (default semantics), naively: one channel at a time, cv2 resize."""
    x = (image.astype(np.float64) / 255.0).transpose(2, 0, 1)[None]
    acts = weights.features(x)[0]
    logits = weights.logits(x)[0]
    c = int(np.argmax(logits)) if target is None else target
    cam = np.zeros((SIZE, SIZE))
    skipped = 0
    scores = {}
    for k in range(acts.shape[0]):
        if acts[k].max() == acts[k].min():
            skipped += 1
            continue
        up = cv2.resize(acts[k].astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        mask = (up - up.min()) / (up.max() - up.min())
        z = weights.logits(x * mask[None, None])[0]
        prob = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        scores[k] = prob[c]
        cam += prob[c] * up
    cam = np.maximum(cam, 0)
    return cam / cam.max(), c, skipped, scores


def test_map_matches_naive_reference(tiny, weights, image):
    result = Explainer(tiny, preset="unit").explain(image)
    ref, c, skipped, _ = reference_map(weights, image)
    assert result.class_index == c
    assert result.saliency.shape == image.shape[:2]
    np.testing.assert_allclose(result.saliency, ref, atol=1e-4)
    assert result.channels_total == 5
    assert result.channels_skipped == skipped == 1
    assert result.channels_used == 4
    assert result.masked_passes == 3  # channel 3 is a copy of channel 1: run once


def test_target_class_changes_the_map(tiny, weights, image):
    explainer = Explainer(tiny, preset="unit")
    for target in range(3):
        result = explainer.explain(image, target=target)
        ref, _, _, _ = reference_map(weights, image, target)
        assert result.class_index == target
        np.testing.assert_allclose(result.saliency, ref, atol=1e-4)


def test_map_is_finite_in_range_and_independent_of_batch_size(tiny, image):
    maps = [
        Explainer(tiny, preset="unit", batch_size=b).explain(image).saliency for b in (1, 7, 64)
    ]
    for m in maps:
        assert np.isfinite(m).all() and m.min() >= 0.0 and m.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(maps[0], maps[1])
    np.testing.assert_array_equal(maps[0], maps[2])


def test_saliency_is_at_the_original_image_size(tiny):
    big = cv2.resize(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8), (50, 30))
    result = Explainer(tiny, preset="unit").explain(big)
    assert result.saliency.shape == (30, 50) and result.saliency.dtype == np.float32


@pytest.mark.parametrize(
    "style",
    [
        {"fixed_batch": True, "reshape_head": True},
        {"layout": "NHWC"},
        {"softmax": True},
        {"empty_names": True},
    ],
    ids=["fixed-batch-reshape", "nhwc", "softmax-head", "empty-names"],
)
def test_export_styles_give_the_same_map(tmp_path, weights, image, style):
    model = build_tiny(tmp_path / "m.onnx", weights, **style)
    explainer = Explainer(model, preset="unit")
    result = explainer.explain(image)
    ref, c, _, _ = reference_map(weights, image)
    assert result.class_index == c
    np.testing.assert_allclose(result.saliency, ref, atol=1e-4)
    if style.get("fixed_batch"):
        assert explainer.max_batch is None  # the batch dimension was freed and proven
        assert not explainer.notes


def test_softmax_head_score_is_not_softmaxed_twice(tmp_path, weights, image):
    model = build_tiny(tmp_path / "m.onnx", weights, softmax=True)
    result = Explainer(model, preset="unit").explain(image)
    x = (image / 255.0).transpose(2, 0, 1)[None]
    z = weights.logits(x)[0]
    prob = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert result.score == pytest.approx(prob.max(), abs=1e-5)


def test_unsafe_batch_freeing_falls_back_to_single_passes(tmp_path, weights, image):
    model = build_tiny(tmp_path / "m.onnx", weights, fixed_batch=True, mix_batch=True)
    explainer = Explainer(model, preset="unit", batch_size=16)
    assert explainer.max_batch == 1 and explainer.batch_size() == 1
    assert any("fixed to 1" in note for note in explainer.notes)
    ref, _, _, _ = reference_map(weights, image)
    np.testing.assert_allclose(explainer.explain(image).saliency, ref, atol=1e-4)


def test_input_model_is_untouched(tiny, image):
    before = tiny.read_bytes()
    proto = onnx.load(str(tiny))
    Explainer(tiny, preset="unit", node="features/conv").explain(image)
    assert tiny.read_bytes() == before
    assert onnx.load(str(tiny)) == proto
    assert sorted(p.name for p in tiny.parent.iterdir()) == ["tiny.onnx"]


def test_baselines_subtract_the_baseline_score(tiny, weights, image):
    _, _, _, scores = reference_map(weights, image)
    x0 = Explainer(tiny, preset="unit", baseline="zero")
    result = x0.explain(image)
    zero_logits = weights.logits(np.zeros((1, 3, SIZE, SIZE)))[0]
    p0 = np.exp(zero_logits - zero_logits.max())
    p0 = p0[result.class_index] / p0.sum()
    x = (image / 255.0).transpose(2, 0, 1)[None]
    acts = weights.features(x)[0]
    cam = sum(
        (scores[k] - p0) * cv2.resize(acts[k].astype(np.float32), (SIZE, SIZE)) for k in scores
    )
    cam = np.maximum(cam, 0)
    expected = cam / cam.max() if cam.max() > 0 else cam
    np.testing.assert_allclose(result.saliency, expected, atol=1e-4)
    for kind in ("black", "blur"):
        out = Explainer(tiny, preset="unit", baseline=kind).explain(image).saliency
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_explainer_pickles_as_its_config(tiny, image):
    explainer = Explainer(tiny, preset="unit", batch_size=3)
    clone = pickle.loads(pickle.dumps(explainer))
    assert clone.config == explainer.config
    np.testing.assert_array_equal(clone.explain(image).saliency, explainer.explain(image).saliency)


def test_labels_from_metadata_and_argument(tmp_path, weights, image):
    meta = {"labels": '["cat", "dog", "cup"]', "onnxcam.preset": "unit"}
    model = build_tiny(tmp_path / "m.onnx", weights, metadata=meta)
    result = Explainer(model).explain(image)
    assert result.label == ["cat", "dog", "cup"][result.class_index]
    assert result.options["preprocess"]["scale"] == pytest.approx(1 / 255)
    named = Explainer(model, labels=["a", "b", "c"]).explain(image)
    assert named.label == "abc"[named.class_index]
    assert [t[1] for t in named.top5] == [("abc")[t[0]] for t in named.top5]


def test_bad_target_and_options(tiny, image):
    with pytest.raises(ConfigError, match="out of range"):
        Explainer(tiny).explain(image, target=3)
    with pytest.raises(ConfigError, match="baseline"):
        Explainer(tiny, baseline="gray")
    with pytest.raises(ConfigError, match="preset"):
        Explainer(tiny, preset="nope")


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"time_limit_s": INF}, "time_limit_s must be a number above 0 and at most 604800 seconds"),
        ({"time_limit_s": NAN}, "time_limit_s must be"),
        ({"budget_s": INF}, "budget_s must be a number above 0 and at most 604800 seconds"),
        ({"budget_s": -1.0}, "budget_s must be"),
        ({"std": (INF,)}, "each std value must be a number from 1e-06 to 1e+06, got inf"),
        ({"std": (0.2, 0.0, 0.2)}, "each std value must be"),
        ({"mean": (NAN, 0, 0)}, "each mean value must be a number from -1e+06 to 1e+06, got nan"),
        ({"mean": "0.5"}, "each mean value must be a number"),
        ({"scale": 1e308}, "scale must be a number above 0 and at most 1e+06, got 1e+308"),
        ({"scale": np.float32(NAN)}, "scale must be"),
        ({"threads": 100_000}, f"threads must be an integer from 1 to {MAX_THREADS}, got 100000"),
        ({"threads": 2.5}, "threads must be an integer"),
        ({"batch_size": 0}, "batch_size must be an integer of at least 1, got 0"),
        ({"size": (SIZE, NAN)}, "each size value must be an integer"),
        ({"method": "sscam", "options": SmoothOptions(noise=INF)}, "--noise must be a number"),
        ({"method": "rise", "options": RiseOptions(keep=NAN)}, "--keep must be a number above 0"),
        ({"method": "rise", "options": RiseOptions(samples=2.5)}, "--samples must be an integer"),
    ],
)
def test_every_number_out_of_range_is_refused(tiny, settings, message):
    """NaN, the infinities and absurd sizes never reach a session, a timer or a record."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        Explainer(tiny, **settings)


def test_rendering_values_out_of_range_are_refused(tiny, image, tmp_path):
    result = Explainer(tiny, preset="unit").explain(image)
    for settings in ({"alpha": NAN}, {"alpha": 1.5}, {"emphasize": INF}, {"emphasize": -0.1}):
        name = next(iter(settings))
        with pytest.raises(ConfigError, match=f"^{name} must be a number from 0 to 1"):
            result.save(tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()


def test_records_hold_no_nan_or_infinity_at_the_edges_of_every_range(tiny, image, tmp_path):
    """JSON has no NaN or Infinity (JSON.parse refuses them): a record of valid settings,
    however extreme, holds none."""

    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))

    for settings in (
        {"budget_s": 1e-9, "time_limit_s": 604800.0},
        {"scale": 1e6, "mean": (-1e6,), "std": (1e-6,)},
        {"method": "sscam", "options": SmoothOptions(noise=1e3, samples=1)},
        {"method": "rise", "options": RiseOptions(samples=4, cells=256, keep=1e-300)},
    ):
        explainer = Explainer(tiny, preset="unit", **settings)
        try:
            result = explainer.explain(image)
        except NumericalError:
            continue  # reported, precisely: nothing is recorded
        strict(json.dumps(result.to_record()))
        paths = result.save(tmp_path, alpha=0.0, emphasize=1.0)
        strict(paths["json"].read_text())


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_a_model_as_bytes_of_any_kind(tiny, image, kind):
    explainer = Explainer(kind(tiny.read_bytes()), preset="unit")
    assert isinstance(explainer.config.model, bytes)
    np.testing.assert_array_equal(
        explainer.explain(image).saliency, Explainer(tiny, preset="unit").explain(image).saliency
    )


@pytest.mark.parametrize("model", [5, None, ["m.onnx"]])
def test_a_model_of_another_type_is_named(model):
    with pytest.raises(ConfigError, match="the model must be a path, the model's bytes or an"):
        Explainer(model)


def test_labels_of_another_type_are_named(tiny):
    with pytest.raises(ConfigError, match="labels must be a labels file's path or a sequence"):
        Explainer(tiny, labels=5)


def test_nan_output_is_reported(tmp_path, image):
    model = build_tiny(tmp_path / "nan.onnx", nan_weights())
    with pytest.raises(NumericalError, match="NaN"):
        Explainer(model).explain(image)


def test_result_save_writes_the_four_files(tiny, image, tmp_path: Path):
    result = Explainer(tiny, preset="unit").explain(image)
    paths = result.save(tmp_path / "out", stem="img")
    assert {p.name for p in paths.values()} == {
        "img.json", "img.npy", "img_overlay.png", "img_saliency.png",
    }  # fmt: skip
    np.testing.assert_array_equal(np.load(paths["npy"]), result.saliency)


def test_explain_many_packs_images_and_matches_single_runs(tiny, image):
    explainer = Explainer(tiny, preset="unit", batch_size=4)
    flipped = np.ascontiguousarray(image[::-1])
    images = [image, "missing.png", flipped, image[:, ::-1].copy()]
    out = list(explainer.explain_many(images, group=3))
    assert [type(r).__name__ for _, r in out] == ["Result", "ImageError", "Result", "Result"]
    for (img, result), single in zip(out, images, strict=True):
        if isinstance(single, str):
            continue
        np.testing.assert_allclose(result.saliency, explainer.explain(img).saliency, atol=1e-6)


def test_fast_mode_runs_top_n_channels_only(tiny, weights, image):
    from onnxcam import ScoreCamOptions

    exact = Explainer(tiny, preset="unit").explain(image)
    fast = Explainer(tiny, preset="unit", options=ScoreCamOptions(top_channels=1)).explain(image)
    assert fast.channels_used == 1 and fast.masked_passes == 1
    assert fast.channels_skipped == 1 and fast.channels_dropped == 3
    # With N at least the number of informative channels, the fast mode is exact.
    everything = ScoreCamOptions(top_channels=10, rank="max")
    same = Explainer(tiny, preset="unit", options=everything).explain(image)
    np.testing.assert_allclose(same.saliency, exact.saliency, atol=1e-6)
    assert same.channels_dropped == 0


def test_fp16_model_keeps_float32_io_and_the_map(tiny, image):
    exact = Explainer(tiny, preset="unit").explain(image)
    half = Explainer(tiny, preset="unit", fp16=True)
    result = half.explain(image)
    assert result.saliency.dtype == np.float32
    corr = np.corrcoef(result.saliency.ravel(), exact.saliency.ravel())[0, 1]
    assert corr > 0.99
    assert half.config.fp16 and result.class_index == exact.class_index


def test_explain_many_isolates_an_image_whose_scores_fail(tiny, image):
    """A target that returns NaN for one image fails that image only."""
    explainer = Explainer(tiny, preset="unit", batch_size=4)
    flipped = np.ascontiguousarray(image[::-1])
    flipped_logits = explainer.forward(flipped).outputs["logits"]

    def picky(outputs):  # NaN for the flipped image's clean logits
        logits = outputs["logits"]
        if np.isclose(logits, flipped_logits, atol=1e-6).all(axis=1).any():
            return np.full(len(logits), np.nan)
        return logits[:, 0]

    out = [r for _, r in explainer.explain_many([image, flipped, image], target=picky, group=3)]
    assert [type(r).__name__ for r in out] == ["Result", "TargetError", "Result"]
    assert "NaN" in str(out[1])


def test_the_explainer_takes_every_declared_setting_with_its_default():
    """The Explainer's typed keywords are ExplainerConfig's fields (the one declaration of
    every setting), with the same defaults, plus ``compat``; the command line's options are
    the declared fields that have a flag."""
    import inspect
    from dataclasses import MISSING, fields

    from onnxcam.cli.common import SETTINGS
    from onnxcam.config import ExplainerConfig

    params = inspect.signature(Explainer.__init__).parameters
    declared = {f.name: f.default for f in fields(ExplainerConfig)}
    assert set(params) - {"self"} == set(declared) | {"compat"}
    for name, default in declared.items():
        if default is MISSING:
            assert params[name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            continue
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == default, name
    flagged = [f.name for f in fields(ExplainerConfig) if f.metadata.get("flag")]
    assert [s.name for s in SETTINGS] == flagged and "threads" in flagged
