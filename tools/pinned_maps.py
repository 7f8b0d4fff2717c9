#!/usr/bin/env python3
"""The maps that pin onnxcam's behaviour: every method on the shipped shapes models, stored
once and compared by the test suite (tests/test_pinned.py) at max abs difference 1e-6.

Every (model, method) pair is explained on one fixed synthetic image; SS-CAM, IS-CAM and RISE
run with few samples so the whole set takes seconds. A pair that a method refuses (a linear
head that a detector does not have) is stored as refused, by its error's type, so the test
checks it is still refused.

Usage::

    python tools/pinned_maps.py --write   # after a deliberate change of the maps: say why
    python tools/pinned_maps.py           # compare with the stored file, print the worst
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STORED = ROOT / "tests" / "data" / "pinned_maps.npz"
MODELS = ["shapes_cnn", "shapes_det_yolov8", "shapes_det_nms", "shapes_seg"]
#: The flags that keep the sampled methods cheap (and seeded).
FLAGS: dict[str, dict[str, Any]] = {
    "sscam": {"--samples": 3},
    "iscam": {"--samples": 3},
    "rise": {"--samples": 64},
    "groupcam": {"--groups": 8},
}


def image() -> np.ndarray:
    from tools.synthetic import make_samples

    return next(iter(make_samples(1, seed=20261207))).image


def compute() -> dict[str, np.ndarray]:
    """``model/method`` -> its first target's map at the image's size (float32), or a
    0-d array holding the refusal's error type."""
    from onnxcam import Explainer, OnnxCamError
    from onnxcam.config import method_options
    from onnxcam.methods import METHODS

    picture = image()
    maps: dict[str, np.ndarray] = {}
    for model in MODELS:
        for method in METHODS:
            key = f"{model}/{method}"
            try:
                options = method_options(method, flags=FLAGS.get(method, {}))
                explainer = Explainer(
                    ROOT / "models" / f"{model}.onnx", method=method, options=options, threads=1
                )
                result = explainer.explain(picture)
                maps[key] = np.asarray(result.targets[0].saliency, np.float32)
            except OnnxCamError as exc:
                maps[key] = np.array(type(exc).__name__)
    return maps


def compare(stored: dict[str, np.ndarray], now: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per key: the max abs difference, or a description of what changed."""
    report: dict[str, Any] = {}
    for key in sorted(set(stored) | set(now)):
        a, b = stored.get(key), now.get(key)
        if a is None or b is None:
            report[key] = "missing before" if a is None else "missing now"
        elif a.dtype.kind == "U" or b.dtype.kind == "U":
            report[key] = 0.0 if a.dtype == b.dtype and a.item() == b.item() else f"{a} -> {b}"
        elif a.shape != b.shape:
            report[key] = f"shape {a.shape} -> {b.shape}"
        else:
            report[key] = float(np.max(np.abs(a - b))) if a.size else 0.0
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--write", action="store_true", help="store the maps computed now")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = p.parse_args(argv)
    now = compute()
    if args.write:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **now)  # type: ignore[arg-type]
        STORED.write_bytes(buffer.getvalue())
        print(f"wrote {len(now)} maps to {STORED.relative_to(ROOT)}")
        return 0
    with np.load(STORED) as data:
        stored = {key: data[key] for key in data.files}
    report = compare(stored, now)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:32s} {value if isinstance(value, str) else f'{value:.2e}'}")
    bad = [k for k, v in report.items() if isinstance(v, str) or v > 1e-6]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
