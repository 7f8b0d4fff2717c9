"""The contract every method keeps, with every target kind: finite maps in [0, 1], the same map
whatever the batch size, inputs built a bounded chunk at a time."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SIZE, TinyWeights, build_heads, tiny_weights

from onnxcam import METHODS, Explainer
from onnxcam.methods import Clean, create
from onnxcam.methods.scorecam import ScoreCamOptions

HEADS = {"logits": (3, None), "embed": (0, None)}
TARGETS = [
    "class:output=logits",
    "top:2:output=logits",
    "embedding:output=embed",
    "index:output=logits:at=1",
    lambda outputs: outputs["logits"][:, 2] - outputs["logits"][:, 0],
]


@pytest.fixture
def model(tmp_path, weights):
    return build_heads(tmp_path / "m.onnx", weights, HEADS)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("target", TARGETS, ids=["class", "top", "embedding", "index", "callable"])
def test_every_method_with_every_target_is_finite_and_chunk_size_invariant(
    model, image, method, target
):
    maps = []
    for batch in (1, 3, 64):
        result = Explainer(model, preset="unit", method=method, batch_size=batch).explain(
            image, target=target
        )
        for t in result.targets:
            assert t.saliency.shape == image.shape[:2] and t.saliency.dtype == np.float32
            assert np.isfinite(t.saliency).all()
            assert t.saliency.min() >= 0.0 and t.saliency.max() <= 1.0
        maps.append(np.stack([t.saliency for t in result.targets]))
        assert result.method == method
    np.testing.assert_array_equal(maps[0], maps[1])
    np.testing.assert_array_equal(maps[0], maps[2])


@pytest.mark.parametrize("method", list(METHODS))
def test_dead_feature_map_gives_a_zero_map_not_nan(tmp_path, image, method):
    dead = tiny_weights()
    dead = TinyWeights(dead.conv_w * 0, np.full_like(dead.conv_b, -1.0), dead.fc_w, dead.fc_b)
    model = build_heads(tmp_path / "dead.onnx", dead, HEADS)
    result = Explainer(model, preset="unit", method=method).explain(
        image, target="class:output=logits"
    )
    assert np.isfinite(result.saliency).all() and not result.saliency.any()
    assert any("all zero" in note for note in result.notes)


@pytest.mark.parametrize("method", list(METHODS))
def test_inputs_are_built_a_bounded_chunk_at_a_time(method):
    """However many channels, a plan never holds more than one chunk of model inputs."""
    from onnxcam.preprocess import InputSpec, Normalization

    rng = np.random.default_rng(0)
    acts = rng.uniform(size=(300, 4, 4)).astype(np.float32)
    spec = InputSpec("input", "NCHW", SIZE, SIZE, 3, np.dtype(np.float32))
    x = rng.uniform(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    clean = Clean(x, np.zeros((SIZE, SIZE, 3), np.uint8), acts, spec, Normalization())
    baseline = "blur" if method == "scorecam" else "none"
    plan = create(method, baseline=baseline).plan(clean)

    def rows(block):  # a head plan's block holds each node's maps
        return len(block[0]) if isinstance(block, tuple) else len(block)

    for chunk in (1, 7, 64):
        blocks = list(plan.inputs(chunk))
        assert all(rows(b) <= chunk for b in blocks)
        assert sum(rows(b) for b in blocks) == plan.count


def test_a_method_without_passes_runs_none(model, image):
    result = Explainer(model, preset="unit", method="activation").explain(
        image, target=["class:0:output=logits", "class:1:output=logits"]
    )
    assert result.masked_passes == 0
    np.testing.assert_array_equal(result.targets[0].saliency, result.targets[1].saliency)
    assert any("does not depend on the target" in note for note in result.notes)


def test_methods_refuse_options_they_do_not_take(model):
    from onnxcam import ConfigError

    with pytest.raises(ConfigError, match=r"'activation' has no --compat grad-cam .*ablation"):
        Explainer(model, method="activation", compat="grad-cam")
    with pytest.raises(ConfigError, match="unknown method 'gradcam'; valid: scorecam, sscam"):
        Explainer(model, method="gradcam")
    with pytest.raises(ConfigError, match=r"takes no baseline .* scorecam, sscam, iscam"):
        Explainer(model, method="ablation", baseline="blur")
    with pytest.raises(ConfigError, match="takes RiseOptions, not ScoreCamOptions"):
        Explainer(model, method="rise", options=ScoreCamOptions())


def test_a_budget_is_refused_by_every_method_that_would_ignore_it(tmp_path):
    from click.testing import CliRunner
    from conftest import build_tiny, tiny_weights

    from onnxcam import Explainer
    from onnxcam.cli import cli
    from onnxcam.errors import ConfigError
    from onnxcam.methods import METHODS

    model = build_tiny(tmp_path / "m.onnx", tiny_weights())
    for name, cls in METHODS.items():
        if cls.takes_budget:
            assert Explainer(model, method=name, budget_s=1.0).method.name == name
            continue
        with pytest.raises(ConfigError, match=f"method '{name}' takes no time budget"):
            Explainer(model, method=name, budget_s=1.0)
    result = CliRunner().invoke(
        cli, ["explain", str(model), "x.png", "--method", "rise", "--budget", "1"]
    )
    assert result.exit_code != 0
    assert "takes no time budget" in result.output and "Traceback" not in result.output
