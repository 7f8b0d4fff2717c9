"""Fuzzing on a fixed seed (tools/fuzz.py): a few hundred mutated models and images, and
hostile option values, each a result or one clean error line; no traceback, no crash, no
native noise, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

PEAK_RSS_MB = 600  # the whole fuzzing process, ONNX Runtime and OpenCV included


def test_fuzzed_models_and_images(tmp_path):
    report_path = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fuzz.py"), "--seed", "20261127",
         "--models", "300", "--images", "300", "--json", str(report_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode in (0, 1), f"the fuzzer crashed: {proc.returncode}\n{proc.stderr}"
    report = json.loads(report_path.read_text())
    assert report["problems"] == [], report["problems"][:5]
    assert report["stderr"] == ""
    assert sum(report["counts"].values()) == 600 and report["counts"].get("ok", 0) > 50
    assert report["peak_rss_mb"] < PEAK_RSS_MB
    assert proc.returncode == 0


def test_fuzzed_options(tmp_path):
    """Hostile values (NaN, infinities, huge, negative, empty, words, control characters, a
    forged line) for the options of explain, evaluate and nodes: a result, or one error line
    naming the option; no traceback, no warning, no NaN or Infinity in what is written."""
    report_path = tmp_path / "options.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fuzz.py"), "--seed", "20261128", "--models", "0",
         "--images", "0", "--options", "300", "--json", str(report_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode in (0, 1), f"the fuzzer crashed: {proc.returncode}\n{proc.stderr}"
    report = json.loads(report_path.read_text())
    assert report["problems"] == [], report["problems"][:5]
    assert report["stderr"] == ""
    counts = report["counts"]
    assert counts.get("option-ok", 0) + counts.get("option-refused", 0) == 300
    assert counts.get("option-ok", 0) > 10 and counts.get("option-refused", 0) > 100
    assert proc.returncode == 0


def test_fuzzed_records_and_manifests(tmp_path):
    """Hostile results.jsonl lines (names that leave the folder, wrong types, huge, nested or
    cut lines) under report, a rerun and --overwrite, and hostile CSV manifests: a result or
    one error line, and no file outside the output folder changed."""
    report_path = tmp_path / "records.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fuzz.py"), "--seed", "20261207", "--models", "0",
         "--images", "0", "--records", "60", "--manifests", "200", "--json", str(report_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode in (0, 1), f"the fuzzer crashed: {proc.returncode}\n{proc.stderr}"
    report = json.loads(report_path.read_text())
    assert report["problems"] == [], report["problems"][:5]
    assert report["stderr"] == ""
    counts = report["counts"]
    assert counts.get("record-ok", 0) + counts.get("record-refused", 0) == 60
    assert counts.get("manifest-ok", 0) > 5 and counts.get("manifest-refused", 0) > 100
    assert proc.returncode == 0
