"""Vision transformers: token and channels-last maps found from the graph's structure, read
to ``(C, h, w)`` through their layout, what ``--node auto`` picks, and every method on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny_vit
from click.testing import CliRunner

from onnxcam import Explainer, export, graph
from onnxcam.cli import cli
from onnxcam.errors import ConfigError
from onnxcam.layouts import NHWC, TokenLayout
from onnxcam.methods import METHODS

# name -> (builder keywords, the node auto must pick, its grid, its prefix tokens)
VARIANTS = {
    "vit": ({}, "norm1_1", (8, 8), 1),
    "deit_distilled": ({"prefix": 2}, "norm1_1", (8, 8), 2),
    "dinov2_registers": ({"registers": 4, "patch": 2, "size": 28}, "norm1_1", (14, 14), 5),
    "sequence_first": ({"sequence_first": True}, "norm1_1", (8, 8), 1),
    "mean_head": ({"head": "mean"}, None, (8, 8), 0),  # the patch tokens the head averages
    "decoder": ({"decoder": True}, "decoder_up", (32, 32), None),
}


def save(tmp_path: Path, model: onnx.ModelProto, name: str) -> Path:
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("vits")
    made = {name: save(folder, tiny_vit.build(**kw), name) for name, (kw, *_) in VARIANTS.items()}
    made["swin"] = save(folder, tiny_vit.build_swin(), "swin")
    made["dynamic"] = save(folder, tiny_vit.build(dynamic=True), "dynamic")
    return made


@pytest.mark.parametrize("name", list(VARIANTS))
def test_auto_reads_the_grid_and_prefix_from_the_graph(paths: dict[str, Path], name: str) -> None:
    _, expected, grid, prefix = VARIANTS[name]
    model = graph.load_model(paths[name])
    index = graph.GraphIndex(model)
    choice = graph.auto_choice(index)
    cand = choice.candidate
    assert cand.op_type != "Conv" or cand.tensor == "decoder_up"  # never the patch embedding
    assert cand.tensor != "patches"
    if expected is not None:
        assert cand.tensor == expected
    assert cand.spatial == grid
    if prefix is None:
        assert cand.layout == "NCHW"
        return
    assert isinstance(cand.layout, TokenLayout)
    assert cand.layout.prefix == prefix
    assert cand.layout.sequence_first == (name == "sequence_first")
    if name == "mean_head":
        assert "collapses" in choice.reason
    else:
        assert "last attention's input" in choice.reason


def test_swin_channels_last_maps_are_read_as_such(paths: dict[str, Path]) -> None:
    """Channels-last maps stay channels last through LayerNorm, MLPs and a patch merging
    whose padding is computed from Shape (which ONNX shape inference cannot follow)."""
    model = graph.load_model(paths["swin"])
    index = graph.GraphIndex(model)
    by_tensor = {c.tensor: c for c in graph.spatial_candidates(model, index)}
    assert by_tensor["stage1"].layout == NHWC and by_tensor["stage1"].spatial == (8, 8)
    assert by_tensor["stage1"].channels == tiny_vit.D
    assert by_tensor["stage2"].layout == NHWC and by_tensor["stage2"].spatial == (4, 4)
    assert graph.auto_choice(index).candidate.tensor == "final_norm"


def test_a_dynamic_size_grid_follows_the_input_size(paths: dict[str, Path]) -> None:
    for size, cells in ((48, 12), (64, 16)):
        explainer = Explainer(paths["dynamic"], size=(size, size), method="scorecam")
        cand = explainer.candidates[0]
        assert cand.spatial == (cells, cells) and cand.layout.prefix == 1
        result = explainer.explain(np.full((40, 30, 3), 128, np.uint8))
        assert result.saliency.shape == (40, 30)


def test_token_layout_round_trip_keeps_the_prefix_tokens() -> None:
    rng = np.random.default_rng(0)
    for first in (False, True):
        layout = TokenLayout((3, 4), 2, sequence_first=first)
        clean = rng.standard_normal((1, 2 + 12, 5)).astype(np.float32)
        if first:
            clean = clean.transpose(1, 0, 2)
        chw = layout.to_chw(clean)
        assert chw.shape == (1, 5, 3, 4)
        batch_first = clean.transpose(1, 0, 2) if first else clean
        assert np.array_equal(chw[0, :, 1, 2], batch_first[0, 2 + 1 * 4 + 2])  # row 1, col 2
        back = layout.from_chw(np.repeat(chw, 3, axis=0), clean)
        assert np.array_equal(back, np.concatenate([clean] * 3, axis=1 if first else 0))
    with pytest.raises(ValueError, match="clean map"):
        TokenLayout((3, 4), 1).from_chw(np.zeros((1, 5, 3, 4), np.float32))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (37, 45, 3), np.uint8)


@pytest.mark.parametrize("name", ["vit", "dinov2_registers", "sequence_first", "mean_head", "swin"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_on_every_token_layout(
    paths: dict[str, Path], photo: np.ndarray, name: str, method: str
) -> None:
    """A finite map in [0, 1] at the image's size, the same whatever the batch size; CAM
    needs a head that averages the map (mean-pooled tokens, Swin) and says so otherwise."""
    if method == "cam" and name in ("vit", "dinov2_registers", "sequence_first"):
        with pytest.raises(ConfigError, match="global average pooling"):
            Explainer(paths[name], method=method).explain(photo)
        return
    maps = [
        Explainer(paths[name], method=method, batch_size=b).explain(photo).saliency for b in (16, 5)
    ]
    assert maps[0].shape == photo.shape[:2]
    assert np.isfinite(maps[0]).all()
    assert maps[0].min() >= 0.0 and maps[0].max() <= 1.0
    np.testing.assert_array_equal(maps[0], maps[1])


def test_head_methods_keep_the_class_token_clean(paths: dict[str, Path], photo: np.ndarray) -> None:
    """Ablation-CAM on a token map zeroes one channel of the patch tokens, never of the
    prefix tokens: with every channel zeroed the class token is still the clean one, so the
    head's score equals a hand-built feed that keeps it."""
    explainer = Explainer(paths["vit"], method="ablation")
    fwd = explainer.forward(photo)
    cand = explainer.candidates[0]
    raw = fwd.raw[0]
    zeros = np.zeros((1, *fwd.acts.shape), np.float32)
    fed = cand.layout.from_chw(zeros, raw)
    assert np.array_equal(fed[:, :1], raw[:, :1]) and not fed[:, 1:].any()


def test_exported_maps_on_token_maps_equal_onnxcams(
    paths: dict[str, Path], photo: np.ndarray
) -> None:
    """``onnxcam export`` cuts a token map's cells out of its tokens in the graph: its maps
    equal onnxcam's own (Recipro-CAM keeps the class token in its masks)."""
    import onnxruntime as ort

    for name, method in (("vit", "recipro"), ("vit", "eigencam"), ("mean_head", "cam"),
                         ("sequence_first", "eigencam")):  # fmt: skip
        explainer = Explainer(paths[name], method=method)
        model = export(paths[name], method=method, resize="input")
        x = explainer.preprocess(photo)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(["saliency"], {"input": x})[0][0, 0]
        want = explainer.explain(tensor=x).targets[0].saliency_input
        if method == "eigencam":  # a power iteration in the graph, an SVD in numpy
            assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.999, name
        else:
            assert float(np.abs(got - want).max()) <= 1e-5, (name, method)
    with pytest.raises(ConfigError, match="sequence first"):
        export(paths["sequence_first"], method="recipro")


def test_nodes_lists_token_maps_and_the_backbone(paths: dict[str, Path]) -> None:
    out = CliRunner().invoke(cli, ["nodes", str(paths["dinov2_registers"])])
    assert out.exit_code == 0, out.output
    assert "(N, 5+14×14, 16)" in out.output
    assert "tokens 14×14, 5 prefix" in out.output
    assert "backbone: a vision transformer: 14×14 patch tokens after 5 prefix" in out.output
    picked = [line for line in out.output.splitlines() if line.startswith("*  ")]
    assert len(picked) == 1 and "(N, 5+14×14, 16)" in picked[0]
    assert "the last attention's input" in out.output


def test_recipro_openvino_feeds_the_last_block_at_its_two_inputs(
    paths: dict[str, Path], photo: np.ndarray
) -> None:
    """``--compat openvino`` on a ViT: the mosaic goes in at the last block's input (the
    residual path) and at norm1's output, as OpenVINO XAI's ViTReciproCAM; the record names
    both; with several prefix tokens they all stay clean (OpenVINO XAI assumes one)."""
    from onnxcam.methods.recipro import Recipro

    preset = Recipro.presets["openvino"]
    for name in ("vit", "dinov2_registers"):
        explainer = Explainer(paths[name], method="recipro", options=preset)
        tensors = [c.tensor for c in explainer.candidates]
        model = graph.load_model(paths[name])
        index = graph.GraphIndex(model)
        ln = index.nodes[index.producer["norm1_1"]]
        assert tensors == [ln.input[0], "norm1_1"]
        result = explainer.explain(photo)
        assert np.isfinite(result.saliency).all() and 0.5 < result.saliency.max() <= 1.0
    # a CNN has no block to cut at: the preset keeps the auto node
    cnn = Explainer(paths["decoder"], method="recipro", options=preset)
    assert [c.tensor for c in cnn.candidates] == ["decoder_up"]
