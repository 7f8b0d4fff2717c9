"""Runs into an output folder: nothing lost, nothing overwritten, names that never collide,
one writer at a time, and a rerun that continues where the last one stopped."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SIZE, build_tiny, tiny_weights, write_png
from onnx import TensorProto, helper

from onnxcam import Explainer, NumericalError
from onnxcam.cli import cli
from onnxcam.outdir import OutputFolder, relative_stems
from onnxcam.render import write_atomic


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_tiny(tmp_path / "model.onnx", tiny_weights())


def run(model: Path, *args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["explain", str(model), *map(str, args), "--preset", "unit"])
    return result.exit_code, result.output


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_names_mirror_the_folders_and_never_collide(tmp_path, model):
    data = tmp_path / "data"
    names = ["a/x.png", "b/x.png", "c/x_2.png", "c/x.jpg", "c/x.bmp"]
    paths = [write_png(data / name, i) for i, name in enumerate(names)]
    assert relative_stems(paths) == ["a/x", "b/x", "c/x_2", "c/x", "c/x_3"]
    out = tmp_path / "out"
    code, output = run(model, data, "-o", out)
    assert code == 0, output
    seen = {r["source"]: r["files"]["npy"] for r in records(out)}
    assert sorted(seen.values()) == ["a/x.npy", "b/x.npy", "c/x.npy", "c/x_2.npy", "c/x_3.npy"]
    assert set(seen) == {str(p) for p in sorted(paths)}
    for source, npy in seen.items():  # every map is its own image's
        alone = Explainer(model, preset="unit").explain(source).saliency
        np.testing.assert_array_equal(np.load(out / npy), alone)


def test_a_rerun_continues_and_different_settings_are_refused(tmp_path, model):
    data = tmp_path / "data"
    for i in range(3):
        write_png(data / f"img{i}.png", i)
    out = tmp_path / "out"
    assert run(model, data, "-o", out)[0] == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    code, output = run(model, data, "-o", out)
    assert code == 0 and "3 already explained, skipped; --overwrite to redo" in output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == stamps
    write_png(data / "img3.png", 3)
    code, output = run(model, data, "-o", out, "--resume")
    assert code == 0 and "3 already explained" in output and "img3.png" in output
    assert len(records(out)) == 4
    code, output = run(model, data, "-o", out, "--alpha", "0.3")
    assert code == 1 and "holds results made with other settings (differing in alpha)" in output
    assert "--overwrite" in output and len(output.strip().splitlines()) == 1
    code, output = run(model, data, "-o", out, "--alpha", "0.3", "--overwrite")
    assert code == 0 and "already explained" not in output
    assert (
        len(records(out)) == 4
        and json.loads((out / "run.json").read_text())["settings"]["alpha"] == 0.3
    )


def test_a_killed_run_resumes_from_its_last_complete_line(tmp_path, model):
    data = tmp_path / "data"
    for i in range(3):
        write_png(data / f"img{i}.png", i)
    out = tmp_path / "out"
    assert run(model, data, "-o", out)[0] == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    # As if killed while img2 was being recorded: its line is cut, its files half there.
    (out / "results.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:40])
    code, output = run(model, data, "-o", out)
    assert code == 0 and "2 already explained" in output
    kept = records_valid(out)
    assert [Path(r["source"]).name for r in kept] == ["img0.png", "img1.png", "img2.png"]


def records_valid(out: Path) -> list[dict]:
    found = []
    for line in (out / "results.jsonl").read_text().splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def test_outputs_are_never_taken_as_inputs(tmp_path, model):
    data = tmp_path / "data"
    write_png(data / "a.png", 1)
    write_png(data / "b.png", 2)
    for _ in range(3):  # -o inside the input folder
        code, output = run(model, data, "-o", data / "out")
        assert code == 0, output
    assert len(records(data / "out")) == 2
    for _ in range(2):  # -o is the input folder itself
        code, output = run(model, data, "-o", data)
        assert code == 0, output
    assert len(records(data)) == 2 and "2 already explained" in output


def test_an_input_photo_is_never_overwritten(tmp_path, model):
    data = tmp_path / "data"
    write_png(data / "x.png", 1)
    photo = write_png(data / "x_overlay.png", 2)  # a user's photo, named like an output
    before = photo.read_bytes()
    code, output = run(model, data, "-o", data)
    assert code == 0, output
    assert photo.read_bytes() == before
    stems = {Path(r["source"]).name: r["files"]["json"] for r in records(data)}
    assert stems == {"x.png": "x_2.json", "x_overlay.png": "x_overlay.json"}


def test_one_writer_at_a_time_and_no_stale_lock(tmp_path, model):
    data = tmp_path / "data"
    write_png(data / "a.png", 1)
    out = tmp_path / "out"
    with OutputFolder(out, settings={}, inputs=[]):
        code, output = run(model, data, "-o", out)
        assert code == 1 and "another onnxcam run is writing to" in output
    (out / ".onnxcam.lock").write_text("left by a run that was killed")  # no flock on it
    code, output = run(model, data, "-o", out)
    assert code == 0, output
    assert not (out / ".onnxcam.lock").exists()


def test_files_honour_the_umask_and_no_part_file_survives(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.txt", b"x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640

        def interrupted(src, dst, **where):
            raise KeyboardInterrupt

        monkeypatch.setattr(os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            write_atomic(tmp_path / "b.txt", b"y")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    finally:
        os.umask(old)


def test_sigkill_leaves_valid_json_lines(tmp_path, model):
    data = tmp_path / "data"
    for i in range(12):
        write_png(data / f"img{i:02d}.png", i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "onnxcam.cli", "explain", str(model), str(data), "-o", str(out),
           "--preset", "unit", "--batch-size", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    while time.monotonic() - start < 60:
        if (out / "results.jsonl").exists() and (out / "results.jsonl").read_text().count("\n"):
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    for line in (out / "results.jsonl").read_text().splitlines():
        json.loads(line)  # every line that is there is whole
    assert CliRunner().invoke(cli, cmd[3:]).exit_code == 0  # the rerun completes the file
    assert len(records(out)) == 12
    assert not list(out.rglob("*.part"))  # what the kill left half-written is gone


# ----------------------------------------------------------------------------- NaN, precisely


def nan_when_empty(path: Path) -> Path:
    """The tiny CNN plus 1 / sum(|x|): finite for every real image, Inf for an all-zero input
    (what a zero-padded batch row would be)."""
    model = build_tiny(path, tiny_weights())
    import onnx

    proto = onnx.load(str(path))
    graph = proto.graph
    graph.output[0].name = "logits"
    graph.node.extend([
        helper.make_node("Abs", ["input"], ["absx"]),
        helper.make_node("ReduceSum", ["absx"], ["total"], keepdims=0),
        helper.make_node("Reciprocal", ["total"], ["inv"]),
        helper.make_node("Unsqueeze", ["inv", "axis1"], ["inv2"]),
        helper.make_node("Add", ["logits", "inv2"], ["scored"]),
    ])  # fmt: skip
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    graph.output[0].CopyFrom(helper.make_tensor_value_info("scored", TensorProto.FLOAT, ["N", 3]))
    for node in graph.node:
        if node.op_type == "ReduceSum" and node.input[0] == "absx":
            node.input.append("axes")
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"))
    onnx.save(proto, str(model))
    return model


def test_padding_rows_never_cause_nan(tmp_path, image):
    model = nan_when_empty(tmp_path / "inf_on_zero.onnx")
    maps = [
        Explainer(model, preset="unit", batch_size=b).explain(image).saliency for b in (1, 2, 3, 4)
    ]
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], atol=1e-6)


def test_nan_in_masked_passes_and_in_the_feature_map_are_told_apart(tmp_path, image):
    model = nan_when_empty(tmp_path / "inf_on_zero.onnx")
    with pytest.raises(NumericalError) as info:  # a zero baseline input is all zero: Inf
        Explainer(model, preset="unit", baseline="zero").explain(image)
    message = str(info.value)
    assert "model output 'scored' in 1 of 4 masked inputs" in message
    assert "the preprocessing is not the cause" in message
    black = np.zeros((SIZE, SIZE, 3), np.uint8)
    with pytest.raises(NumericalError, match=r"in 1 of 1 clean input; check the preprocessing"):
        Explainer(model, preset="unit").explain(black)
