"""End to end on an embedding model: EfficientNet-Lite0 cut at its pooled features
(tools/make_embedding_model.py), explained by cosine similarity to a reference photo."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
from conftest import EXAMPLES, REAL_MODEL

from onnxcam import Explainer
from tools.make_embedding_model import cut_at_features


@pytest.fixture(scope="module")
def pair_result(tmp_path_factory):
    """The cat photo and the coffee photo side by side (cat left, cup right), explained for
    its similarity to each photo alone, from one set of masked passes."""
    folder = tmp_path_factory.mktemp("embedding")
    model = folder / "embedding.onnx"
    onnx.save(cut_at_features(onnx.load(str(REAL_MODEL))), str(model))
    cat = cv2.cvtColor(cv2.imread(str(EXAMPLES / "chelsea.png")), cv2.COLOR_BGR2RGB)
    cup = cv2.cvtColor(cv2.imread(str(EXAMPLES / "coffee.png")), cv2.COLOR_BGR2RGB)
    cup = cv2.resize(cup, (450, 300), interpolation=cv2.INTER_AREA)
    pair = np.concatenate([cat, cup], axis=1)
    explainer = Explainer(model, threads=2)
    targets = [
        f"embedding:ref={EXAMPLES / 'chelsea.png'}",
        f"embedding:ref={EXAMPLES / 'coffee.png'}",
    ]
    return explainer.explain(pair, target=targets), cat.shape[1]


def test_map_follows_the_reference_photo(pair_result):
    result, split = pair_result
    to_cat, to_cup = result.targets
    for target, side in ((to_cat, "left"), (to_cup, "right")):
        sal = target.saliency
        left = float(sal[:, :split].sum() / sal.sum())
        share = left if side == "left" else 1.0 - left
        peak_x = int(np.unravel_index(np.argmax(sal), sal.shape)[1])
        assert share > 0.55, (target.spec, share)
        assert (peak_x < split) == (side == "left"), (target.spec, peak_x)


def test_embedding_record(pair_result):
    result, _ = pair_result
    info = result.targets[0].info
    assert info["kind"] == "embedding" and info["output"] == "embedding"
    assert 0.0 < info["score"] < 1.0 and info["reference"].endswith("chelsea.png")
    assert result.class_index is None and result.top5 == ()
