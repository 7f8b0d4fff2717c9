"""The JSON record of one explanation, pinned field by field through the public API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import build_tiny

from onnxcam import Explainer

TIMING_KEYS = {"preprocess_s", "activation_s", "masks_s", "masked_s", "combine_s", "total_s"}


def test_whole_record_of_one_explanation(tiny, image):
    result = Explainer(tiny, preset="unit").explain(image)
    record = json.loads(json.dumps(result.to_record()))
    timings = record.pop("timings")
    assert set(timings) == TIMING_KEYS and all(v >= 0 for v in timings.values())
    assert timings["total_s"] == pytest.approx(sum(v for k, v in timings.items() if k != "total_s"))
    assert record.pop("provider") == "CPUExecutionProvider"
    assert isinstance(record.pop("onnxcam_version"), str)
    scores = [t.pop("score") for t in record["top5"]]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0)
    assert record.pop("score") == pytest.approx(scores[0])
    (entry,) = record.pop("targets")
    assert entry.pop("score") == pytest.approx(scores[0])
    peak_y, peak_x = np.unravel_index(np.argmax(result.saliency), result.saliency.shape)
    assert entry.pop("map") == {
        "mean": pytest.approx(float(result.saliency.mean())),
        "peak": [int(peak_x), int(peak_y)],
        "area_above_half": pytest.approx(float((result.saliency >= 0.5).mean())),
        "all_zero": False,
    }
    assert entry == {
        "kind": "class",
        "spec": "class",
        "output": "logits",
        "class_index": 0,
        "label": None,
        "scored": "softmax",
        "summary": f"class 0 (p={scores[0]:.3f})",
    }
    assert record == {
        "schema_version": 1,
        "source": None,
        "model": str(tiny),
        "node": "features/relu",
        "tensor": "feat",
        "class_index": 0,
        "label": None,
        "top5": [
            {"index": 0, "label": None},
            {"index": 2, "label": None},
            {"index": 1, "label": None},
        ],
        "method": "scorecam",
        "options": {
            "compat": "official",
            "score": "probability",
            "channel_softmax": False,
            "align_corners": False,
            "normalize_first": False,
            "mask_eps": 0.0,
            "skip_constant": True,
            "combine_at": "input",
            "cam_eps": 0.0,
            "renormalize": False,
            "top_channels": None,
            "rank": "std",
            "baseline": "none",
            "batch_size": 16,
            "preprocess": {
                "mean": [0.0, 0.0, 0.0],
                "std": [1.0, 1.0, 1.0],
                "scale": pytest.approx(1 / 255),
                "bgr": False,
            },
            "input_size": [16, 16],
            "resize": "stretch",
            "scale": [1.0, 1.0],
            "pad": [0, 0],
            "layout": "NCHW",
            "input": "image",
        },
        "channels_total": 5,
        "channels_used": 4,
        "channels_skipped": 1,
        "channels_dropped": 0,
        "masked_passes": 3,
        "image_size": [16, 16],
        "notes": [],
    }


def test_model_with_batch_fixed_to_two(tmp_path, weights, image):
    """A batch fixed to 2 that cannot be freed: every pass, the activation pass included,
    runs two rows at a time, and the map equals that of the free-batch model."""
    model = build_tiny(tmp_path / "b2.onnx", weights, fixed_batch=2, reshape_head=True)
    explainer = Explainer(model, preset="unit")
    assert any("fixed to 2" in note for note in explainer.notes)
    free = Explainer(build_tiny(tmp_path / "free.onnx", weights), preset="unit")
    np.testing.assert_allclose(
        explainer.explain(image).saliency, free.explain(image).saliency, atol=1e-6
    )


def test_saved_record_names_its_files(tiny, image, tmp_path):
    result = Explainer(tiny, preset="unit").explain(image)
    result.save(tmp_path, stem="img")
    saved = json.loads((tmp_path / "img.json").read_text())
    files = {"overlay": "img_overlay.png", "saliency": "img_saliency.png", "npy": "img.npy"}
    assert saved["files"] == {"json": "img.json", **files}
    assert saved["targets"][0]["files"] == files
