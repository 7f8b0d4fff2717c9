"""Reduced exports of real transformer architectures (``models/tiny``, made by
``tools/export_transformers.py`` from timm and a CLIP-style tower with random weights): the
grid, the prefix tokens and the node ``auto`` picks, read from each graph, match what PyTorch's
hooks recorded in ``models/tiny/models.json``; every layout explains end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT

from onnxcam import Explainer, graph
from onnxcam.layouts import NCHW, NHWC, TokenLayout
from onnxcam.methods.recipro import Recipro

TINY = ROOT / "models" / "tiny"
FACTS = json.loads((TINY / "models.json").read_text())
LAYOUTS = {"tokens": "NLC", "sequence_first": "LNC", "channels_last": NHWC, "nchw": NCHW}
CASES = [(name, size) for name, facts in FACTS.items() for size in facts["sizes"]]


@pytest.mark.parametrize(
    ("name", "size"), CASES, ids=[f"{n}-{s['input_hw'][0]}x{s['input_hw'][1]}" for n, s in CASES]
)
def test_grid_prefix_and_auto_node_match_pytorch(name: str, size: dict) -> None:
    facts = FACTS[name]
    model = graph.load_model(TINY / name)
    dims = (1, 3, *size["input_hw"])
    index = graph.GraphIndex(graph.with_input_size(model, facts["input"]["name"], dims))
    choice = graph.auto_choice(index)
    cand = choice.candidate
    assert cand.tensor == size["auto"]["tensor"]
    assert cand.tensor != facts.get("patch_embed")
    assert list(cand.spatial) == size["grid"]
    assert cand.layout == LAYOUTS[facts["layout"]]
    if isinstance(cand.layout, TokenLayout):
        assert cand.layout.prefix == facts["prefix_tokens"]
        cut = graph.block_cut(index)
        assert cut is not None and [c.tensor for c in cut] == [
            size["block_input"]["tensor"],
            size["auto"]["tensor"],
        ]


@pytest.mark.parametrize("name", list(FACTS))
def test_explains_end_to_end(name: str) -> None:
    """Score-CAM at the auto node and Recipro-CAM as OpenVINO XAI defines it: maps in [0, 1]
    at the image's size."""
    photo = np.random.default_rng(0).integers(0, 256, (61, 83, 3), np.uint8)
    size = tuple(FACTS[name]["sizes"][-1]["input_hw"])  # a dynamic model's last size
    for method, options in (("scorecam", None), ("recipro", Recipro.presets["openvino"])):
        explainer = Explainer(TINY / name, method=method, options=options, size=size)
        result = explainer.explain(photo)
        assert result.saliency.shape == (61, 83)
        assert np.isfinite(result.saliency).all()
        assert result.saliency.min() >= 0.0 and result.saliency.max() <= 1.0


def test_the_trained_vit_points_at_the_object() -> None:
    """``models/shapes_vit.onnx`` (tools/train_vit.py, a class-token ViT trained on the shapes
    task): on fresh images the Score-CAM map at the auto node (the last block's norm1) peaks in
    the target's box well above chance (the box covers about a tenth of the image)."""
    from tools.synthetic import make_samples

    samples = make_samples(60, seed=20261208)
    explainer = Explainer(ROOT / "models" / "shapes_vit.onnx", threads=2)
    assert isinstance(explainer.candidates[0].layout, TokenLayout)
    results = [r for _, r in explainer.explain_many([s.image for s in samples], group=32)]
    right = np.mean([r.class_index == s.label for s, r in zip(samples, results, strict=True)])
    hits = []
    for sample, result in zip(samples, results, strict=True):
        x0, y0, x1, y1 = sample.box
        py, px = np.unravel_index(int(np.argmax(result.saliency)), result.saliency.shape)
        hits.append(x0 - 3 <= px < x1 + 3 and y0 - 3 <= py < y1 + 3)
    assert right >= 0.75
    assert np.mean(hits) >= 0.6
