"""Targets: the spec grammar, the contract every kind keeps, closed-form scores, output choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import build_heads, build_tiny, head_weights, unit_input

from onnxcam import ConfigError, Explainer, TargetError, parse_target
from onnxcam.targets import (
    AutoSpec,
    ClassSpec,
    EmbeddingSpec,
    IndexSpec,
    TopSpec,
    checked_scores,
    load_target_file,
    resolve_targets,
)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("281", ClassSpec(index=281)),
        ("class", ClassSpec()),
        ("class:281:prob=logit", ClassSpec(index=281, prob="logit")),
        ("281:output=probs", ClassSpec(index=281, output="probs")),
        ("top:5", TopSpec(k=5)),
        ("top:3:prob=softmax:output=logits", TopSpec(k=3, prob="softmax", output="logits")),
        ("embedding", EmbeddingSpec()),
        ("embedding:ref=b.jpg:output=embed", EmbeddingSpec(ref="b.jpg", output="embed")),
        ("index:at=0,3,5:act=sigmoid", IndexSpec(at=(0, 3, 5), act="sigmoid")),
    ],
)
def test_specs_parse_to_typed_values_and_print_back(text, expected):
    spec = parse_target(text)
    assert spec == expected
    assert parse_target(spec.spec) == spec  # the canonical text round-trips


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        (
            "clas:3",
            [
                "unknown kind 'clas'",
                "did you mean 'class'",
                "top, detection, segmentation, embedding, index",
            ],
        ),
        ("class:3:prb=logit", ["unknown key 'prb'", "did you mean 'prob'", "prob, output"]),
        ("top:0", ["k='0' is not valid", "at least 1"]),
        ("class:-2", ["not valid", "class index"]),
        ("class:abc", ["index='abc' is not valid"]),
        ("class:3:prob=softmaxx", ["prob='softmaxx'", "auto, softmax, sigmoid, logit"]),
        ("index:at=1,x", ["at='1,x' is not valid", "at=0,3,5"]),
        ("top:5:extra", ["'extra' is not key=value"]),
        ("class:1:prob=logit:prob=softmax", ["given twice"]),
        ("embedding:b.jpg", ["takes no value", "ref, output"]),
        ("", ["empty target"]),
    ],
)
def test_bad_specs_name_what_is_wrong_and_what_is_valid(text, phrases):
    with pytest.raises(ConfigError) as info:
        parse_target(text)
    message = str(info.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, message


def test_target_file_takes_the_same_keys(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"kind": "top", "value": 2}, {"kind": "index", "at": [0, 1]}]))
    assert load_target_file(path) == [TopSpec(k=2), IndexSpec(at=(0, 1))]
    path.write_text(json.dumps({"kind": "class", "value": 1, "prob": "logit"}))
    assert load_target_file(path) == [ClassSpec(index=1, prob="logit")]
    for bad, phrase in [
        ('[{"value": 1}]', "'kind'"),
        ("{not json", "not valid JSON"),
        ('[{"kind": "class", "prb": 1}]', "unknown key 'prb'"),
        ("[]", "holds no targets"),
    ]:
        path.write_text(bad)
        with pytest.raises(ConfigError, match=phrase):
            load_target_file(path)
    with pytest.raises(ConfigError, match="cannot read target file"):
        load_target_file(tmp_path / "missing.json")


def test_resolve_targets_from_what_the_api_takes():
    def fn(outputs):
        return outputs["logits"][:, 0]

    assert resolve_targets(None) == [AutoSpec()]  # the top class of a classifier
    assert resolve_targets(np.int64(4)) == [ClassSpec(index=4)]
    assert resolve_targets(["top:2", 1]) == [TopSpec(k=2), ClassSpec(index=1)]
    assert resolve_targets(fn)[0].kind == "callable"
    for bad in (True, -1, 2.5, []):
        with pytest.raises(ConfigError):
            resolve_targets(bad)


# ----------------------------------------------------------------------------- contract


HEADS = {"logits": (3, None), "probs": (4, "Softmax"), "embed": (0, None)}
KINDS = [
    "class:output=logits",
    "class:1:prob=logit:output=logits",
    "class:2:prob=sigmoid:output=logits",
    "top:2:output=probs",
    "embedding:output=embed",
    "index:output=heat:at=1,2,3:act=softmax",
    "index:output=logits:at=2:act=sigmoid",
    "callable",
]


@pytest.fixture
def multi(tmp_path, weights):
    return Explainer(
        build_heads(tmp_path / "m.onnx", weights, HEADS, map_output=True), preset="unit"
    )


def _target(text):
    if text == "callable":
        return lambda outputs: outputs["logits"][:, 0] - outputs["probs"][:, 1]
    return text


@pytest.mark.parametrize("text", KINDS)
def test_every_kind_keeps_the_target_contract(multi, image, text):
    """Batch scores equal per-sample scores, one finite value each, and a self-description."""
    fwd = multi.forward(image)
    bound = multi.bind(fwd, _target(text))
    rng = np.random.default_rng(5)
    batch = rng.uniform(0, 1, (6, 3, 16, 16)).astype(np.float32)
    outputs = multi.session.run(batch, [o.name for o in multi.prepared.outputs])
    for target in bound:
        scores = checked_scores(target, outputs, 6)
        assert scores.shape == (6,) and np.isfinite(scores).all()
        each = [
            checked_scores(target, {k: v[i : i + 1] for k, v in outputs.items()}, 1)[0]
            for i in range(6)
        ]
        np.testing.assert_allclose(scores, each, rtol=1e-6, atol=1e-7)
        info = target.describe()
        assert {"kind", "spec", "class_index", "label", "score", "summary"} <= set(info)
        assert info["summary"] and np.isfinite(info["score"])
        assert set(target.outputs) <= set(outputs)


def test_closed_form_values_of_each_kind(tmp_path, weights, image):
    explainer = Explainer(
        build_heads(tmp_path / "m.onnx", weights, HEADS, map_output=True), preset="unit"
    )
    x = unit_input(image)
    feat = weights.features(x)
    pooled = feat.mean(axis=(2, 3))[0]
    w, b = head_weights(3, 0)
    z = pooled @ w.T + b
    fwd = explainer.forward(image)

    def clean(spec):
        return [t.describe()["score"] for t in explainer.bind(fwd, spec)]

    c = int(np.argmax(z))
    assert clean("class:output=logits") == pytest.approx([softmax(z)[c]], rel=1e-5)
    logit = explainer.bind(fwd, "class:1:prob=logit:output=logits")[0]
    assert logit(fwd.outputs)[0] == pytest.approx(z[1], rel=1e-5)
    sig = explainer.bind(fwd, "class:1:prob=sigmoid:output=logits")[0]
    assert sig(fwd.outputs)[0] == pytest.approx(1 / (1 + np.exp(-z[1])), rel=1e-5)
    w4, b4 = head_weights(4, 1)
    p = softmax(pooled @ w4.T + b4)
    top = explainer.bind(fwd, "top:2:output=probs")
    assert [t.describe()["class_index"] for t in top] == list(np.argsort(-p)[:2])
    assert [t.describe()["rank"] for t in top] == [1, 2]
    assert top[0](fwd.outputs)[0] == pytest.approx(p.max(), rel=1e-5)  # not softmaxed twice
    assert top[0].describe()["scored"] == "probability"
    ref = np.random.default_rng(2).normal(size=5)
    np.save(tmp_path / "ref.npy", ref)
    cos = pooled @ ref / np.linalg.norm(pooled) / np.linalg.norm(ref)
    assert clean(f"embedding:ref={tmp_path / 'ref.npy'}:output=embed") == pytest.approx(
        [cos], rel=1e-5
    )
    assert clean("embedding:output=embed") == pytest.approx([1.0])
    heat = explainer.bind(fwd, "index:output=heat:at=1,2,3:act=softmax")[0]
    assert heat(fwd.outputs)[0] == pytest.approx(softmax(feat[0].transpose(1, 2, 0))[2, 3, 1])
    raw = explainer.bind(fwd, "index:output=heat:at=1,2,3")[0]
    assert raw(fwd.outputs)[0] == pytest.approx(feat[0, 1, 2, 3], rel=1e-5)


def test_embedding_reference_image_is_embedded_by_the_same_model(tmp_path, weights, image):
    import cv2

    path = tmp_path / "ref.png"
    other = np.ascontiguousarray(image[::-1, ::-1])
    cv2.imwrite(str(path), cv2.cvtColor(other, cv2.COLOR_RGB2BGR))
    explainer = Explainer(
        build_heads(tmp_path / "m.onnx", weights, {"embed": (0, None)}), preset="unit"
    )
    a = weights.features(unit_input(image)).mean(axis=(2, 3))[0]
    r = weights.features(unit_input(other)).mean(axis=(2, 3))[0]
    target = explainer.bind(explainer.forward(image), f"embedding:ref={path}")[0]
    expected = a @ r / np.linalg.norm(a) / np.linalg.norm(r)
    assert target.describe()["score"] == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- output choice


FACE = {"box": (4, None), "landmarks": (10, None), "face": (2, "Softmax")}


def test_default_output_prefers_the_one_that_ends_in_softmax(tmp_path, weights, image):
    result = Explainer(build_heads(tmp_path / "f.onnx", weights, FACE), preset="unit").explain(
        image
    )
    assert result.targets[0].info["output"] == "face"
    assert result.targets[0].info["scored"] == "probability"


def test_default_output_never_guesses_between_equals(tmp_path, weights, image):
    plain = {name: (units, None) for name, (units, _) in FACE.items()}
    explainer = Explainer(build_heads(tmp_path / "f.onnx", weights, plain), preset="unit")
    with pytest.raises(ConfigError) as info:
        explainer.explain(image)
    message = str(info.value)
    for phrase in ("'box' (1, 4)", "'landmarks' (1, 10)", "'face' (1, 2)", "output=NAME"):
        assert phrase in message, message
    chosen = explainer.explain(image, target="class:output=face")
    assert chosen.targets[0].info["output"] == "face"


def test_single_output_models_need_no_choice(tiny, image):
    assert Explainer(tiny, preset="unit").explain(image).targets[0].info["output"] == "logits"


# ----------------------------------------------------------------------------- bad targets


@pytest.mark.parametrize(
    ("target", "phrase"),
    [
        ("class:7", "out of range; output 'logits' has 3 classes (0..2)"),
        ("top:4", "more classes than output 'logits' has (3)"),
        ("class:output=nope", "no output 'nope'; its outputs: 'logits' (1, 3)"),
        ("index:at=5", "at=5 does not index output 'logits'"),
        ("index", "at=nothing"),
        ("embedding:ref=missing.png", "cannot use ref=missing.png: image not found"),
        ("embedding:ref=missing.npy", "cannot read reference vector"),
    ],
)
def test_targets_that_do_not_fit_the_model(tiny, image, target, phrase):
    with pytest.raises(ConfigError) as info:
        Explainer(tiny, preset="unit").explain(image, target=target)
    assert phrase in str(info.value)


def test_reference_vector_of_the_wrong_size(tmp_path, weights, image):
    np.save(tmp_path / "v.npy", np.ones(7))
    model = build_heads(tmp_path / "e.onnx", weights, {"embed": (0, None)})
    with pytest.raises(ConfigError, match="holds 7 values"):
        Explainer(model, preset="unit").explain(image, target=f"embedding:ref={tmp_path / 'v.npy'}")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ConfigError, match="cannot read reference vector"):
        Explainer(model, preset="unit").explain(image, target=f"embedding:ref={tmp_path / 'o.npy'}")


@pytest.mark.parametrize(
    ("fn", "phrase"),
    [
        (lambda out: out["logits"], "returned shape (1, 3)"),
        (lambda out: out["logits"][:, 0] * np.nan, "NaN or Inf"),
        (lambda out: "high", "one number per sample"),
        (lambda out: out["nope"], "KeyError"),
    ],
)
def test_callables_that_break_the_contract_are_named(tiny, image, fn, phrase):
    with pytest.raises(TargetError) as info:
        Explainer(tiny, preset="unit").explain(image, target=fn)
    message = str(info.value)
    assert phrase in message and "callable" in message and "'logits' (1, 3)" in message


# ----------------------------------------------------------------------------- several targets


def test_several_targets_share_one_set_of_passes(tiny, image):
    explainer = Explainer(tiny, preset="unit", batch_size=2)
    many = explainer.explain(image, target="top:3")
    assert [t.class_index for t in many.targets] == [t[0] for t in many.top5]
    for target in many.targets:
        single = explainer.explain(image, target=target.class_index)
        np.testing.assert_array_equal(target.saliency, single.saliency)
        assert single.masked_passes == many.masked_passes
    mixed = explainer.explain(image, target=["class:0", "index:at=1:act=sigmoid"])
    assert [t.kind for t in mixed.targets] == ["class", "index"]


def test_multiple_targets_write_numbered_files_and_one_record(tmp_path, tiny, image):
    result = Explainer(tiny, preset="unit").explain(image, target="top:2")
    out = tmp_path / "out"
    paths = result.save(out, stem="img")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["img.json"]
        + [f"img_t{i}{s}" for i in (0, 1) for s in ("_overlay.png", "_saliency.png", ".npy")]
    )
    record = json.loads(paths["json"].read_text())
    assert [t["files"]["npy"] for t in record["targets"]] == ["img_t0.npy", "img_t1.npy"]
    assert record["class_index"] == record["targets"][0]["class_index"]
    np.testing.assert_array_equal(np.load(out / "img_t1.npy"), result.targets[1].saliency)


def test_fixed_batch_models_take_every_kind(tmp_path, weights, image):
    model = build_tiny(tmp_path / "b.onnx", weights, fixed_batch=True, mix_batch=True)
    result = Explainer(model, preset="unit").explain(image, target=["top:2", "index:at=0"])
    assert len(result.targets) == 3 and all(np.isfinite(t.saliency).all() for t in result.targets)
