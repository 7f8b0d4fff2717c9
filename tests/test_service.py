"""Inside a service: models from memory, the pipeline's own tensors, its execution providers,
threads, and a latency budget."""

from __future__ import annotations

import itertools
import pickle
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SIZE, build_tiny, unit_input

from onnxcam import ConfigError, DeviceError, Explainer, ImageError, ModelError, runtime
from onnxcam.methods import Clean
from onnxcam.methods.scorecam import ScoreCam
from onnxcam.preprocess import InputSpec, Normalization
from onnxcam.runner import Job, Runner

# ----------------------------------------------------------------------------- models


def test_bytes_and_model_proto_explain_like_the_path(tiny, image):
    by_path = Explainer(tiny, preset="unit").explain(image)
    proto = onnx.load(str(tiny))
    before = proto.SerializeToString()
    for model in (tiny.read_bytes(), proto):
        result = Explainer(model, preset="unit").explain(image)
        np.testing.assert_array_equal(result.saliency, by_path.saliency)
        assert result.model.startswith("sha256:") and len(result.model) == 7 + 64
    assert proto.SerializeToString() == before  # never modified
    assert by_path.model == str(tiny)


def test_bytes_that_need_external_data_or_are_no_model(tmp_path, weights):
    model = onnx.load(str(build_tiny(tmp_path / "m.onnx", weights)))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="ext.data", size_threshold=0)  # fmt: skip
    data = (tmp_path / "ext.onnx").read_bytes()
    with pytest.raises(ModelError, match="external data files; pass the model's path"):
        Explainer(data)
    assert Explainer(tmp_path / "ext.onnx", preset="unit").candidate.tensor == "feat"
    with pytest.raises(ModelError, match="cannot read the model bytes"):
        Explainer(b"not a model at all")


# ----------------------------------------------------------------------------- tensors


def test_the_pipelines_tensor_explains_exactly_like_the_image(tiny, image):
    explainer = Explainer(tiny, preset="unit")
    x = explainer.preprocess(image)
    assert x.shape == (1, 3, SIZE, SIZE) and x.dtype == np.float32
    np.testing.assert_allclose(x, unit_input(image), atol=1e-6)
    from_image = explainer.explain(image)
    with_image = explainer.explain(tensor=x, image=image)
    np.testing.assert_array_equal(with_image.saliency, from_image.saliency)
    alone = explainer.explain(tensor=x)
    np.testing.assert_array_equal(alone.saliency, from_image.saliency_input)
    assert alone.image is None and alone.options["input"] == "tensor"
    assert alone.to_record()["image_size"] == [SIZE, SIZE]


def test_a_tensor_is_explained_as_given_not_renormalised(tiny, image):
    """The pipeline's own normalisation wins: its tensor is not preprocessed again."""
    theirs = Explainer(tiny, preset="imagenet")
    x = theirs.preprocess(image)
    ours = Explainer(tiny, preset="unit")  # a different preset: must not matter for tensor=
    np.testing.assert_array_equal(
        ours.explain(tensor=x).saliency, theirs.explain(tensor=x).saliency
    )
    assert not np.allclose(ours.explain(tensor=x).saliency, ours.explain(image).saliency_input)


def test_tensor_without_image_saves_maps_but_no_overlay(tiny, image, tmp_path):
    result = Explainer(tiny, preset="unit").explain(tensor=unit_input(image).astype(np.float32))
    paths = result.save(tmp_path / "out", stem="req")
    assert sorted(p.name for p in paths.values()) == ["req.json", "req.npy", "req_saliency.png"]


@pytest.mark.parametrize(
    ("tensor", "phrase"),
    [
        (np.zeros((3, SIZE, SIZE), np.float32), "shape (3, 16, 16)"),
        (np.zeros((2, 3, SIZE, SIZE), np.float32), "shape (2, 3, 16, 16)"),
        (np.zeros((1, SIZE, SIZE, 3), np.float32), "takes (1, C, H, W) float32 with C = 3"),
        (np.zeros((1, 3, SIZE, SIZE), np.float64), "dtype float64"),
        (np.zeros((1, 3, 8, 8), np.float32), "H, W = 16, 16"),
        (np.full((1, 3, SIZE, SIZE), np.nan, np.float32), "NaN or Inf"),
    ],
)
def test_tensors_that_do_not_fit_get_one_line(tiny, tensor, phrase):
    with pytest.raises(ImageError) as info:
        Explainer(tiny, preset="unit").explain(tensor=tensor)
    assert phrase in str(info.value) and "\n" not in str(info.value)


def test_explain_many_takes_tensors_with_or_without_images(tiny, image):
    explainer = Explainer(tiny, preset="unit")
    other = np.ascontiguousarray(image[::-1])
    xs = [explainer.preprocess(image), explainer.preprocess(other)]
    out = [r for _, r in explainer.explain_many(tensors=xs, images=[image, other])]
    np.testing.assert_array_equal(out[1].saliency, explainer.explain(other).saliency)
    bare = [r for _, r in explainer.explain_many(tensors=xs)]
    assert bare[0].image is None and bare[0].saliency.shape == (SIZE, SIZE)


# ----------------------------------------------------------------------------- providers


def test_providers_and_session_options_pass_straight_through(tiny, image):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    explainer = Explainer(tiny, preset="unit", providers=["CPUExecutionProvider"],
                          session_options=options)  # fmt: skip
    served = explainer.session._session
    assert served.get_providers() == ["CPUExecutionProvider"]
    reported = served.get_session_options()
    assert reported.intra_op_num_threads == 1
    assert reported.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert explainer.explain(image).provider == "CPUExecutionProvider"
    as_mapping = Explainer(tiny, preset="unit", session_options={"intra_op_num_threads": 1})
    assert as_mapping.session._session.get_session_options().intra_op_num_threads == 1


def test_a_first_provider_that_cannot_serve_fails_clearly(tiny):
    with pytest.raises(DeviceError, match="'NoSuchExecutionProvider' is not in this ONNX Runtime"):
        Explainer(tiny, providers=["NoSuchExecutionProvider", "CPUExecutionProvider"])
    available = ort.get_available_providers()
    broken = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if not broken or runtime.gpu_visible():
        pytest.skip("needs an ONNX Runtime build with a GPU provider and no GPU")
    with pytest.raises(DeviceError, match=f"{broken[0]} was asked for first, but ONNX Runtime"):
        Explainer(tiny, providers=[broken[0], "CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("providers", "message"),
    [
        ("CPUExecutionProvider", "providers must be a list of execution providers"),
        ([("CPUExecutionProvider",)], "got ('CPUExecutionProvider',)"),
        ([5], "each execution provider must be a name or a (name, {option: value}) pair"),
        ([("CPUExecutionProvider", 5)], "got ('CPUExecutionProvider', 5)"),
        ([("CPUExecutionProvider", {}, 3)], "got ('CPUExecutionProvider', {}, 3)"),
        ([("CPUExecutionProvider", {1: "a"})], "each execution provider must be"),
    ],
)
def test_malformed_providers_are_named(tiny, providers, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Explainer(tiny, providers=providers)


def test_providers_as_lists_pickle_as_tuples(tiny, image):
    explainer = Explainer(tiny, preset="unit", providers=[["CPUExecutionProvider", {}]])
    assert explainer.config.providers == (("CPUExecutionProvider", {}),)
    assert pickle.loads(pickle.dumps(explainer)).config == explainer.config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (5, "session_options must be an onnxruntime.SessionOptions or a mapping"),
        ({"intra_op_num_threads": "2"}, "intra_op_num_threads must be an integer from 0 to"),
        ({"intra_op_num_threads": 10**6}, "intra_op_num_threads must be an integer from 0 to"),
        ({"execution_mode": 1}, "execution_mode must be an onnxruntime.ExecutionMode, got 1"),
        ({"enable_profiling": 1}, "enable_profiling must be True or False, got 1"),
        ({"logid": 5}, "logid must be text, got 5"),
        ({"log_severity_level": 9}, "log_severity_level must be an integer from -1 to 4"),
        ({"config_entries": 5}, "config_entries must be a mapping of session config keys"),
        ({"no_such": 1}, "unknown session option 'no_such'"),
    ],
)
def test_session_options_of_the_wrong_type_are_named(tiny, options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Explainer(tiny, session_options=options)


def test_one_explainer_from_several_threads_gives_identical_maps(tiny, image):
    explainer = Explainer(tiny, preset="unit", batch_size=2)
    images = [np.roll(image, shift, axis=1) for shift in range(6)]
    alone = [explainer.explain(img).saliency for img in images]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda img: explainer.explain(img).saliency, images * 3))
    for i, sal in enumerate(together):
        np.testing.assert_array_equal(sal, alone[i % len(images)])


# ----------------------------------------------------------------------------- budget


class Sleeper:
    """A session whose every run takes 50 ms (or more, on a loaded machine): it keeps how
    long each one took."""

    def __init__(self) -> None:
        self.durations: list[float] = []

    def run(self, feed, outputs):
        t0 = time.perf_counter()
        time.sleep(0.05)
        self.durations.append(time.perf_counter() - t0)
        return {"y": feed.reshape(len(feed), -1)[:, :1]}


def test_a_budget_stops_a_job_between_batches_within_one_batch_of_it():
    rows = np.arange(40, dtype=np.float32).reshape(40, 1)

    def inputs(chunk):
        for start in range(0, 40, chunk):
            yield rows[start : start + chunk]

    job = Job(40, inputs, ("y",), lambda out: {"y": out["y"][:, 0]}, budget_s=0.12, required=1)
    session = Sleeper()
    (done,) = Runner(session, batch=4).run([job])  # type: ignore[arg-type]
    runs = len(session.durations)
    assert 1 < runs < 10 and list(done.values["y"]) == list(range(4 * runs))
    spent = sum(session.durations)
    assert spent >= 0.12  # it did not stop before the budget was spent ...
    assert spent - session.durations[-1] < 0.12  # ... and overran it by at most one batch


def budget_clean(k: int = 40):
    rng = np.random.default_rng(3)
    acts = np.maximum(rng.normal(size=(k, 6, 6)), 0).astype(np.float32)
    spec = InputSpec("input", "NCHW", SIZE, SIZE, 3, np.dtype(np.float32))
    x = rng.uniform(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    return Clean(x, None, acts, spec, Normalization()), rng.uniform(0.01, 1.0, k)


def test_anytime_scorecam_more_masks_never_lower_the_fidelity_estimate():
    clean, scores = budget_clean()
    method = ScoreCam(budget_s=1.0)
    plan = method.plan(clean)
    spread = clean.acts.reshape(40, -1).std(axis=1)
    order = plan.state.reps
    assert list(order) == list(np.argsort(-spread, kind="stable"))  # best first
    estimates = []
    for ran in range(1, plan.count + 1):
        made = method.combine(clean, plan, scores[:ran], 0.0)
        assert made.info["masks_run"] == ran and made.info["masks_planned"] == plan.count
        estimates.append(made.info["fidelity_estimate"])
        assert np.isfinite(made.map).all()
    assert all(b >= a for a, b in itertools.pairwise(estimates))
    assert estimates[-1] == 1.0 and 0.0 <= estimates[0] <= 1.0
    exact = ScoreCam().combine(clean, ScoreCam().plan(clean), scores[np.argsort(order)], 0.0)
    np.testing.assert_allclose(made.map, exact.map, atol=1e-6)


def test_budget_reaches_the_record(tmp_path, weights, image):
    explainer = Explainer(build_tiny(tmp_path / "m.onnx", weights), preset="unit", budget_s=30)
    info = explainer.explain(image).targets[0].info
    assert info["masks_run"] == info["masks_planned"] == 3 and info["fidelity_estimate"] == 1.0
    assert explainer.explain(image).options["budget_s"] == 30


def test_anytime_scorecam_lets_several_nodes_take_turns():
    clean, _ = budget_clean()
    clean = replace(clean, groups=(10, 30))  # channels 0-9 from one node, 10-39 another
    order = ScoreCam(budget_s=1.0).plan(clean).state.reps
    nodes = [int(c >= 10) for c in order]
    assert nodes[:20] == [0, 1] * 10 and nodes[20:] == [1] * 20
    spread = clean.acts.reshape(40, -1).std(axis=1)
    for node in (0, 1):
        mine = [c for c in order if int(c >= 10) == node]
        assert list(spread[mine]) == sorted(spread[mine], reverse=True)
