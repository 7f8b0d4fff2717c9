"""Fuzzing on a fixed seed (tools/fuzz.py): a few hundred mutated models and images, hostile
option values, and hostile records and manifests, each a result or one clean error line; no
traceback, no crash, no native noise, bounded memory, nothing outside the output folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT

PEAK_RSS_MB = 600  # the whole fuzzing process, ONNX Runtime and OpenCV included


def fuzz(tmp_path: Path, seed: int, timeout: int = 300, **cases: int) -> dict[str, Any]:
    """Run tools/fuzz.py with ``cases`` (``models=300``, ...; the others 0) and check what
    every run must hold: no crash, no problem found, nothing native on stderr. Returns the
    report."""
    counts = {"models": 0, "images": 0, **cases}
    report_path = tmp_path / "fuzz.json"
    args = [f"--{name}={count}" for name, count in counts.items()]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fuzz.py"), f"--seed={seed}", *args,
         "--json", str(report_path)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert proc.returncode in (0, 1), f"the fuzzer crashed: {proc.returncode}\n{proc.stderr}"
    report = json.loads(report_path.read_text())
    assert report["problems"] == [], report["problems"][:5]
    assert report["stderr"] == ""
    assert proc.returncode == 0
    return report


def test_fuzzed_models_and_images(tmp_path):
    report = fuzz(tmp_path, 20261127, timeout=600, models=300, images=300)
    assert sum(report["counts"].values()) == 600 and report["counts"].get("ok", 0) > 50
    assert report["peak_rss_mb"] < PEAK_RSS_MB


def test_fuzzed_options(tmp_path):
    """Hostile values (NaN, infinities, huge, negative, empty, words, control characters, a
    forged line) for the options of explain, evaluate and nodes: a result, or one error line
    naming the option; no traceback, no warning, no NaN or Infinity in what is written."""
    counts = fuzz(tmp_path, 20261128, options=300)["counts"]
    assert counts.get("option-ok", 0) + counts.get("option-refused", 0) == 300
    assert counts.get("option-ok", 0) > 10 and counts.get("option-refused", 0) > 100


def test_fuzzed_records_and_manifests(tmp_path):
    """Hostile results.jsonl lines (names that leave the folder, wrong types, huge, nested or
    cut lines) under report, a rerun and --overwrite, and hostile CSV manifests: a result or
    one error line, and no file outside the output folder changed."""
    counts = fuzz(tmp_path, 20261207, records=60, manifests=200)["counts"]
    assert counts.get("record-ok", 0) + counts.get("record-refused", 0) == 60
    assert counts.get("manifest-ok", 0) > 5 and counts.get("manifest-refused", 0) > 100
