"""The command line: bad input gets one clear line and a non-zero exit (README: Guarantees),
good input gets its four files and a complete JSON record."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from conftest import SIZE, build_tiny, nan_weights, tiny_weights

from onnxcam import Explainer, OnnxCamError
from onnxcam.cli import cli
from onnxcam.config import MAX_THREADS

OUTPUT_FILES = ("{}.json", "{}.npy", "{}_overlay.png", "{}_saliency.png")
RUN_FILES = ("results.jsonl", "run.json")  # every run: its records and its settings
RECORD_KEYS = {
    "model", "node", "tensor", "class_index", "label", "score", "top5", "method",
    "channels_total", "channels_used", "channels_skipped", "provider", "timings",
    "onnxcam_version", "schema_version", "targets", "files",
}  # fmt: skip


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def inputs(tmp_path: Path, image: np.ndarray) -> Path:
    """A folder holding only the inputs: a tiny model and a good 16x16 PNG."""
    folder = tmp_path / "in"
    folder.mkdir()
    build_tiny(folder / "model.onnx", tiny_weights())
    write_png(folder / "good.png", image)
    return folder


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def write_png(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes: proves nothing was added or changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def explain(model: Path, *images: Path, out: Path, extra: tuple[str, ...] = ()) -> Result:
    return invoke("explain", model, *images, "-o", out, "--preset", "unit", *extra)


def assert_clear_failure(result: Result, *phrases: str) -> str:
    """Non-zero exit handled by the CLI (no traceback, no 'unexpected' wrapper), and exactly
    one output line naming the problem with every one of ``phrases``. Returns that line."""
    output = result.output
    assert result.exit_code != 0, output
    assert isinstance(result.exception, SystemExit), (repr(result.exception), output)
    assert "Traceback" not in output, output
    assert "unexpected" not in output.lower(), output
    lines = [line for line in output.splitlines() if all(p in line for p in phrases)]
    assert len(lines) == 1, f"expected one line with {phrases!r} in:\n{output}"
    return lines[0]


def run_bad(
    inputs: Path, out: Path, model: Path, image: Path, *phrases: str, extra: tuple[str, ...] = ()
) -> str:
    """Explain a bad input; assert a clear failure and that no file appeared or changed."""
    before = snapshot(inputs)
    result = explain(model, image, out=out, extra=extra)
    line = assert_clear_failure(result, *phrases)
    assert snapshot(inputs) == before, "files next to the inputs were written or changed"
    assert files_in(out) == [], "a failed run left result files behind"
    return line


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming ``width`` x ``height``, plus a few junk bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk + crc + b"\x00" * 64


# ----------------------------------------------------------------------------- bad models


def test_missing_model(inputs: Path, out: Path) -> None:
    line = run_bad(inputs, out, inputs / "nope.onnx", inputs / "good.png", "not found")
    assert "nope.onnx" in line


@pytest.mark.parametrize("kind", ["text", "png"])
def test_model_that_is_not_onnx(inputs: Path, out: Path, kind: str) -> None:
    fake = inputs / "fake.onnx"
    if kind == "text":
        fake.write_text("this is not a model\n", encoding="utf-8")
    else:
        fake.write_bytes((inputs / "good.png").read_bytes())
    line = run_bad(inputs, out, fake, inputs / "good.png", "cannot read")
    assert "fake.onnx" in line and "ONNX" in line


def test_truncated_model(inputs: Path, out: Path) -> None:
    data = (inputs / "model.onnx").read_bytes()
    cut = inputs / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    line = run_bad(inputs, out, cut, inputs / "good.png", "cut.onnx")
    assert any(p in line for p in ("cannot read", "truncated", "not a usable")), line


def test_empty_model(inputs: Path, out: Path) -> None:
    empty = inputs / "empty.onnx"
    empty.write_bytes(b"")
    run_bad(inputs, out, empty, inputs / "good.png", "empty", "empty.onnx")


def test_model_with_nan_output(inputs: Path, out: Path) -> None:
    model = build_tiny(inputs / "nan.onnx", nan_weights())
    run_bad(inputs, out, model, inputs / "good.png", "NaN")


# ----------------------------------------------------------------------------- bad nodes


def test_unknown_node_suggests_the_closest(inputs: Path, out: Path) -> None:
    line = run_bad(
        inputs, out, inputs / "model.onnx", inputs / "good.png", "features/cnv", "closest",
        extra=("--node", "features/cnv"),
    )  # fmt: skip
    assert "features/conv" in line.split("closest", 1)[1]


@pytest.mark.parametrize("node", ["head/gap", "head/fc"])
def test_non_spatial_node_names_the_nearest_map(inputs: Path, out: Path, node: str) -> None:
    line = run_bad(
        inputs, out, inputs / "model.onnx", inputs / "good.png",
        "not a feature map on the image grid", extra=("--node", node),
    )  # fmt: skip
    assert node in line
    assert "features/relu" in line  # the spatial map just before the head


# ----------------------------------------------------------------------------- bad images


def test_text_file_named_png(inputs: Path, out: Path) -> None:
    bad = inputs / "notes.png"
    bad.write_text("not pixels at all\n", encoding="utf-8")
    run_bad(inputs, out, inputs / "model.onnx", bad, "notes.png", "not a readable image")


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_image(inputs: Path, out: Path, image: np.ndarray, ext: str) -> None:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(cv2.resize(image, (64, 64)), cv2.COLOR_RGB2BGR))
    assert ok
    data = buf.tobytes()
    bad = inputs / f"half{ext}"
    bad.write_bytes(data[: len(data) // 2])
    run_bad(inputs, out, inputs / "model.onnx", bad, f"half{ext}", "truncated")


def test_empty_image(inputs: Path, out: Path) -> None:
    bad = inputs / "empty.png"
    bad.write_bytes(b"")
    run_bad(inputs, out, inputs / "model.onnx", bad, "empty.png", "empty")


def test_missing_image(inputs: Path, out: Path) -> None:
    run_bad(inputs, out, inputs / "model.onnx", inputs / "gone.png", "gone.png", "not found")


def test_one_pixel_image(inputs: Path, out: Path) -> None:
    bad = write_png(inputs / "dot.png", np.full((1, 1, 3), 200, np.uint8))
    line = run_bad(inputs, out, inputs / "model.onnx", bad, "dot.png", "1×1")
    assert "at least" in line


def test_huge_image_is_refused_from_its_header(
    inputs: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = inputs / "huge.png"
    bad.write_bytes(png_header_only(100_000, 100_000))
    decoded: list[int] = []
    real_imdecode = cv2.imdecode

    def spy(buf, flags):
        decoded.append(len(buf))
        return real_imdecode(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", spy)
    line = run_bad(inputs, out, inputs / "model.onnx", bad, "huge.png", "pixels")
    assert "100000×100000" in line and "--max-pixels" in line
    assert decoded == [], "the image was decoded before its size was checked"


def test_max_pixels_lowers_and_raises_the_limit(inputs: Path, out: Path) -> None:
    good = inputs / "good.png"
    line = run_bad(
        inputs, out, inputs / "model.onnx", good, "good.png", "pixels",
        extra=("--max-pixels", str(SIZE * SIZE - 1)),
    )  # fmt: skip
    assert f"{SIZE}×{SIZE}" in line
    result = explain(inputs / "model.onnx", good, out=out, extra=("--max-pixels", str(SIZE * SIZE)))
    assert result.exit_code == 0, result.output
    assert files_in(out) == sorted([*(f.format("good") for f in OUTPUT_FILES), *RUN_FILES])


# ----------------------------------------------------------------------------- bad output


def test_output_below_a_regular_file(inputs: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("keep me\n", encoding="utf-8")
    run_bad(inputs, blocker / "out", inputs / "model.onnx", inputs / "good.png", "cannot create")
    assert blocker.read_text(encoding="utf-8") == "keep me\n"


def test_output_is_a_regular_file(inputs: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("keep me\n", encoding="utf-8")
    before = snapshot(inputs)
    result = explain(inputs / "model.onnx", inputs / "good.png", out=blocker)
    assert_clear_failure(result, "file.txt", "not a folder")
    assert blocker.read_text(encoding="utf-8") == "keep me\n"
    assert snapshot(inputs) == before


# ----------------------------------------------------------------------------- folder runs


def test_folder_run_skips_the_bad_image_and_explains_the_rest(
    inputs: Path, out: Path, image: np.ndarray
) -> None:
    folder = inputs / "images"
    folder.mkdir()
    write_png(folder / "a.png", image)
    write_png(folder / "b.png", image[::-1].copy())
    (folder / "broken.png").write_text("no pixels here\n", encoding="utf-8")
    before = snapshot(inputs)
    result = explain(inputs / "model.onnx", folder, out=out)
    assert_clear_failure(result, "broken.png", "not a readable image")
    assert "Traceback" not in result.output
    assert snapshot(inputs) == before
    # 16-pixel images: each overlay is its own thumbnail, so only the originals are written
    report = (".onnxcam-report", "index.html", "contact_sheet.png", "a_original.jpg",
              "b_original.jpg")  # fmt: skip
    expected = sorted(
        [*(f.format(s) for s in ("a", "b") for f in OUTPUT_FILES), *RUN_FILES, *report]
    )
    assert files_in(out) == expected
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["status"] for r in records] == ["ok", "ok", "error"]  # a, b, broken, in order
    assert sorted(Path(r["source"]).name for r in records[:2]) == ["a.png", "b.png"]
    assert (
        records[2]["error_type"] == "ImageError" and "not a readable image" in records[2]["error"]
    )


# ----------------------------------------------------------------------------- good runs


def test_nodes_lists_the_spatial_maps_and_marks_auto(inputs: Path) -> None:
    result = invoke("nodes", inputs / "model.onnx")
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines()[3:] if line.rstrip().endswith(" NCHW")]
    rows = {line.lstrip("* ").split()[0]: line for line in table}
    assert set(rows) == {"features/conv", "features/relu"}
    assert rows["features/relu"].startswith("*") and "(N, 5, 8, 8)" in rows["features/relu"]
    assert not rows["features/conv"].startswith("*")
    assert "head/gap" not in table and "head/fc" not in result.output
    assert "input 'input' (N, 3, 16, 16) NCHW" in result.output
    assert "model: a classifier; its head starts at GlobalAveragePool 'head/gap'" in result.output
    assert "auto picks 'features/relu': the map that the head collapses" in result.output


def test_explain_one_image_writes_four_files_and_a_full_record(
    inputs: Path, out: Path, image: np.ndarray
) -> None:
    before = snapshot(inputs)
    result = explain(inputs / "model.onnx", inputs / "good.png", out=out)
    assert result.exit_code == 0, result.output
    assert snapshot(inputs) == before
    assert files_in(out) == sorted([*(f.format("good") for f in OUTPUT_FILES), *RUN_FILES])
    record = json.loads((out / "good.json").read_text(encoding="utf-8"))
    assert set(record) >= RECORD_KEYS
    assert {"activation_s", "masked_s", "total_s"} <= set(record["timings"])
    assert record["node"] == "features/relu" and record["tensor"] == "feat"
    assert record["method"] == "scorecam"
    assert record["channels_total"] == 5
    assert record["channels_used"] + record["channels_skipped"] == 5
    assert 0 <= record["class_index"] < 3 and 0.0 < record["score"] <= 1.0
    assert record["top5"][0]["index"] == record["class_index"]
    assert len(record["top5"]) == 3
    saliency = np.load(out / "good.npy")
    assert saliency.shape == image.shape[:2] and saliency.dtype == np.float32
    assert np.isfinite(saliency).all() and saliency.min() >= 0.0 and saliency.max() <= 1.0
    overlay = cv2.imread(str(out / "good_overlay.png"), cv2.IMREAD_UNCHANGED)
    assert overlay.shape == (*image.shape[:2], 3)
    gray = cv2.imread(str(out / "good_saliency.png"), cv2.IMREAD_UNCHANGED)
    assert gray.shape == image.shape[:2]
    assert "good.png" in result.output and "good_overlay.png" in result.output


def test_debug_shows_the_traceback_and_plain_run_does_not(inputs: Path, out: Path) -> None:
    bad = inputs / "bad.onnx"
    bad.write_text("not a model\n", encoding="utf-8")
    args = ("explain", bad, inputs / "good.png", "-o", out)
    plain = invoke(*args)
    assert_clear_failure(plain, "cannot read", "bad.onnx")
    debug = invoke("--debug", *args)
    assert debug.exit_code != 0
    assert debug.exception is not None and not isinstance(debug.exception, SystemExit)
    assert "bad.onnx" in str(debug.exception)


def test_target_out_of_range(inputs: Path, out: Path) -> None:
    line = run_bad(
        inputs, out, inputs / "model.onnx", inputs / "good.png", "out of range",
        extra=("--target", "99"),
    )  # fmt: skip
    assert "99" in line and "3 classes" in line


@pytest.mark.parametrize(
    ("option", "value", "phrase"),
    [("--size", "abc", "not a size"), ("--mean", "1,2", "1 or 3 numbers")],
)
def test_malformed_options_are_usage_errors(
    inputs: Path, out: Path, option: str, value: str, phrase: str
) -> None:
    result = explain(inputs / "model.onnx", inputs / "good.png", out=out, extra=(option, value))
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output and option in result.output
    assert_clear_failure(result, phrase)
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        (("--time-limit", "inf"), "a number above 0 and at most 604800 seconds, got inf"),
        (("--budget", "inf"), "a number above 0 and at most 604800 seconds, got inf"),
        (("--budget", "nan"), "got nan"),
        (("--emphasize-threshold", "nan"), "a number from 0 to 1, got nan"),
        (("--alpha", "nan"), "a number from 0 to 1, got nan"),
        (("--alpha", "-inf"), "a number from 0 to 1, got -inf"),
        (("--std", "inf"), "each value must be a number from 1e-06 to 1e+06, got inf"),
        (("--std", "0,1,1"), "each value must be a number from 1e-06 to 1e+06, got 0.0"),
        (("--mean", "nan"), "each value must be a number from -1e+06 to 1e+06, got nan"),
        (("--scale", "1e308"), "a number above 0 and at most 1e+06, got 1e+308"),
        (("--scale", "-1"), "a number above 0 and at most 1e+06"),
        (("--threads", "100000"), f"an integer from 1 to {MAX_THREADS}, got 100000"),
        (("--threads", "1.5"), "'1.5' is not an integer from 1 to"),
        (("--batch-size", "0"), "an integer of at least 1, got 0"),
        (("--max-pixels", "-5"), "an integer of at least 1, got -5"),
    ],
)
def test_numbers_out_of_range_get_one_line_naming_the_option_and_range(
    inputs: Path, out: Path, extra: tuple[str, ...], phrase: str
) -> None:
    result = explain(inputs / "model.onnx", inputs / "good.png", out=out, extra=extra)
    assert result.exit_code == 2, result.output
    assert_clear_failure(result, f"Invalid value for '{extra[0]}'", phrase)
    assert "Warning" not in result.output and not out.exists()


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        (("--method", "sscam", "--noise", "inf"), "--noise must be a number from 0 to 1000"),
        (("--method", "sscam", "--noise", "1e308"), "--noise must be a number from 0 to 1000"),
        (("--method", "rise", "--keep", "nan"), "--keep must be a number above 0 and at most 1"),
        (("--method", "rise", "--cells", "100000"), "--cells must be an integer from 1 to 256"),
    ],
)
def test_method_numbers_out_of_range_get_one_line(
    inputs: Path, out: Path, extra: tuple[str, ...], phrase: str
) -> None:
    result = explain(inputs / "model.onnx", inputs / "good.png", out=out, extra=extra)
    assert_clear_failure(result, phrase)
    assert "Warning" not in result.output and not out.exists()


def test_time_limit_help_says_one_operator_is_not_interrupted() -> None:
    result = invoke("explain", "--help")
    assert "ONNX Runtime stops between operators" in " ".join(result.output.split())


def test_a_fifo_named_as_an_output_file_is_never_replaced(
    inputs: Path, out: Path, tmp_path: Path
) -> None:
    """A file the user names to write (evaluate's --quantus and -o, export's -o) is written
    by renaming a finished file over it: a device (``/dev/zero``) or a FIFO there is refused,
    never replaced (as root, the rename would replace the device node itself)."""
    model, image = inputs / "model.onnx", inputs / "good.png"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    runs = [
        ("evaluate", model, image, "-o", out, "--method", "activation", "--quantus", fifo),
        ("export", model, "-o", fifo, "--method", "activation", "--overwrite"),
    ]
    for args in runs:
        assert_clear_failure(invoke(*args), "pipe", "not a regular file")
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_files_that_never_end_get_one_line(inputs: Path, out: Path) -> None:
    model, image = inputs / "model.onnx", inputs / "good.png"
    for option in ("--labels", "--target-file"):
        result = explain(model, image, out=out, extra=(option, "/dev/zero"))
        assert_clear_failure(result, "/dev/zero", "not a regular file")
    result = invoke("evaluate", model, image, "--boxes", "/dev/zero", "-o", out)
    assert_clear_failure(result, "'--boxes'", "/dev/zero: not a regular file")


def test_nodes_fails_in_one_line_before_listing(inputs: Path) -> None:
    result = invoke("nodes", inputs / "model.onnx", "--size", "1x2")
    assert_clear_failure(result, "has no feature map on the image grid")
    assert "input" not in result.output.split("Error:")[0]


def test_real_process_prints_only_its_own_message(inputs: Path, out: Path) -> None:
    """Outside CliRunner: no library warnings (e.g. OpenCV's) leak onto the terminal."""
    ok, buf = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8) + 7)
    assert ok
    data = buf.tobytes()
    bad = inputs / "half.png"
    bad.write_bytes(data[: len(data) // 2])
    args = ["explain", inputs / "model.onnx", bad, "-o", out, "--preset", "unit"]
    proc = subprocess.run(
        [sys.executable, "-m", "onnxcam.cli", *map(str, args)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert [line for line in lines if "half.png" in line], proc.stderr
    assert not [line for line in lines if "WARN" in line], proc.stderr


@pytest.mark.parametrize(
    ("extra", "compat", "used", "dropped"),
    [
        (("--channels", "2", "--rank", "max"), "official", 2, 2),
        (("--compat", "grad-cam"), "grad-cam", 5, 0),
        (("--fp16",), "official", 4, 0),
    ],
)
def test_method_options_reach_the_record(inputs, out, extra, compat, used, dropped) -> None:
    result = explain(inputs / "model.onnx", inputs / "good.png", out=out, extra=extra)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "good.json").read_text())
    assert record["options"]["compat"] == compat
    assert record["channels_used"] == used and record["channels_dropped"] == dropped


# ----------------------------------------------------------------------------- targets


def test_several_targets_write_numbered_files_and_one_record_per_image(
    inputs: Path, out: Path
) -> None:
    result = explain(
        inputs / "model.onnx", inputs / "good.png", out=out,
        extra=("--target", "top:2", "--target", "index:at=1:act=sigmoid"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tagged = [f"good_t{i}{s}" for i in range(3) for s in ("_overlay.png", "_saliency.png", ".npy")]
    assert files_in(out) == sorted(["good.json", *tagged, *RUN_FILES])
    record = json.loads((out / "good.json").read_text(encoding="utf-8"))
    assert [t["kind"] for t in record["targets"]] == ["top", "top", "index"]
    assert [t["files"]["overlay"] for t in record["targets"]] == [
        f"good_t{i}_overlay.png" for i in range(3)
    ]
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{inputs / 'good.png'}: 3 targets")
    assert lines[1].startswith("  t0: class ") and lines[3].startswith("  t2: index logits[1]")


def test_target_file_and_results_jsonl_carry_every_target(
    inputs: Path, out: Path, image: np.ndarray
) -> None:
    write_png(inputs / "second.png", image[::-1].copy())
    spec = inputs / "targets.json"
    spec.write_text(json.dumps([{"kind": "class", "value": 2}, {"kind": "top", "value": 1}]))
    result = explain(
        inputs / "model.onnx", inputs / "good.png", inputs / "second.png", out=out,
        extra=("--target-file", str(spec)),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert [t["spec"] for t in record["targets"]] == ["class:2", "top"]
        assert record["targets"][0]["class_index"] == 2
        assert record["targets"][1]["files"]["npy"].endswith("_t1.npy")


@pytest.mark.parametrize(
    ("spec", "phrases"),
    [
        ("clas:1", ("unknown kind 'clas'", "did you mean 'class'")),
        ("class:1:prb=logit", ("unknown key 'prb'", "did you mean 'prob'")),
        ("top:0", ("top:0", "at least 1")),
        ("class:output=scores", ("no output 'scores'", "'logits' (1, 3)")),
        ("embedding:ref=nowhere.png", ("ref=nowhere.png", "not found")),
        ("index:at=9", ("at=9", "at=0..2")),
    ],
)
def test_bad_targets_get_one_line(inputs: Path, out: Path, spec: str, phrases) -> None:
    run_bad(inputs, out, inputs / "model.onnx", inputs / "good.png", *phrases,
            extra=("--target", spec))  # fmt: skip


def test_unreadable_target_file(inputs: Path, out: Path, tmp_path: Path) -> None:
    bad = tmp_path / "t.json"
    bad.write_text("{nope", encoding="utf-8")
    run_bad(inputs, out, inputs / "model.onnx", inputs / "good.png", "not valid JSON",
            extra=("--target-file", str(bad)))  # fmt: skip


def test_names_from_the_model_cannot_drive_the_terminal(
    inputs: Path, out: Path, image: np.ndarray
) -> None:
    labels = json.dumps(["\x1b[2J\x1b[31mevil\x07", "b\rc", "d"])
    model = build_tiny(inputs / "evil.onnx", tiny_weights(), metadata={"labels": labels})
    result = explain(model, inputs / "good.png", out=out, extra=("--target", "top:3"))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "\r" not in result.output
    assert "\\x1b[31mevil\\x07" in result.output


# A line that a name from a model or a file tries to add to the output (no "/": file names
# cannot hold one).
FORGED = "FAKE: shadow: class 0 root (p=1.000)"


def assert_no_forged_line(output: str) -> None:
    """Every line of ``output`` is the CLI's own: no name started a line of its own."""
    assert "\r" not in output, output
    forged = [line for line in output.splitlines() if line.lstrip(" *").startswith("FAKE")]
    assert forged == [], output


def renamed(path: Path, suffix: str) -> Path:
    """The tiny CNN with ``suffix`` added to every node's name and to its input's and
    output's tensor names."""
    model = onnx.load(str(build_tiny(path, tiny_weights())))
    graph = model.graph
    names = {graph.input[0].name, graph.output[0].name}
    for node in graph.node:
        node.name += suffix
        node.input[:] = [n + suffix if n in names else n for n in node.input]
        node.output[:] = [n + suffix if n in names else n for n in node.output]
    for value in (graph.input[0], graph.output[0]):
        value.name += suffix
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_newlines_in_labels_cannot_forge_lines(inputs: Path, out: Path) -> None:
    labels = json.dumps([f"square\n{FORGED}", f"b\r{FORGED}", f"c\u2028{FORGED}"])
    model = build_tiny(inputs / "evil.onnx", tiny_weights(), metadata={"labels": labels})
    result = explain(model, inputs / "good.png", out=out, extra=("--target", "top:3"))
    assert result.exit_code == 0, result.output
    assert_no_forged_line(result.output)
    assert f"square\\x0a{FORGED}" in result.output and f"b\\x0d{FORGED}" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("nodes", "{model}"),
        ("explain", "{model}", "{image}", "--node", "features/rel", "-o", "{out}"),
        ("explain", "{model}", "{image}", "--node", f"x\n{FORGED}", "-o", "{out}"),
    ],
    ids=["nodes", "closest-node", "given-node"],
)
def test_newlines_in_node_and_tensor_names_cannot_forge_lines(
    inputs: Path, out: Path, args: tuple[str, ...]
) -> None:
    model = renamed(inputs / "evil.onnx", f"\n{FORGED}")
    given = {"model": model, "image": inputs / "good.png", "out": out}
    result = invoke(*(arg.format(**given) for arg in args))
    assert_no_forged_line(result.output)
    assert "\\x0aFAKE" in result.output


def test_newlines_in_file_names_cannot_forge_lines(
    inputs: Path, out: Path, image: np.ndarray
) -> None:
    folder = inputs / "images"
    folder.mkdir()
    write_png(folder / f"a\n{FORGED}.png", image)
    (folder / f"b\r\n{FORGED}.png").write_text("no pixels here\n", encoding="utf-8")
    result = explain(inputs / "model.onnx", folder, out=out)
    assert result.exit_code == 1, result.output
    assert_no_forged_line(result.output)
    assert f"a\\x0a{FORGED}.png: class" in result.output
    assert_clear_failure(result, f"b\\x0d\\x0a{FORGED}.png", "not a readable image")
    missing = explain(inputs / "model.onnx", inputs / f"gone\n{FORGED}.png", out=out)
    assert_no_forged_line(missing.output)
    assert_clear_failure(missing, f"gone\\x0a{FORGED}.png", "not found")


@pytest.mark.parametrize(
    "extra",
    [
        ("--mean", f"1\n{FORGED}"),  # the CLI's own check
        ("--threads", f"1\n{FORGED}"),  # click's (escaped by click today)
        (f"--no-such\n{FORGED}",),
        ("--target", f"top:1\n{FORGED}"),  # the library's, before any model is loaded
    ],
    ids=["callback", "click-type", "unknown-option", "target"],
)
def test_newlines_in_option_values_cannot_forge_lines(
    inputs: Path, out: Path, extra: tuple[str, ...]
) -> None:
    result = explain(inputs / "model.onnx", inputs / "good.png", out=out, extra=extra)
    assert result.exit_code != 0, result.output
    assert_no_forged_line(result.output)
    assert "Traceback" not in result.output and "FAKE" in result.output  # shown, escaped


def test_our_own_lines_stay_lines() -> None:
    """Escaping touches what a message quotes, never the help's layout."""
    for args in ((), ("--help",), ("explain", "--help")):
        result = invoke(*args)
        assert "\\x0a" not in result.output and "Usage: cli" in result.output.splitlines()[0]
        assert "Options:" in result.output.splitlines()


def test_library_errors_are_one_line(inputs: Path) -> None:
    """An error names what was wrong, a name from the model included, in one line: so does
    any log that records it."""
    model = renamed(inputs / "evil.onnx", f"\n{FORGED}")
    with pytest.raises(OnnxCamError) as caught:
        Explainer(model, node="features/rel")
    assert "\\x0aFAKE" in str(caught.value) and len(str(caught.value).splitlines()) == 1


def test_failing_probe_sessions_print_nothing_from_onnx_runtime(inputs: Path, out: Path) -> None:
    """This model concatenates constant coordinate channels of batch 1 to its input, so a
    batch of two fails inside ONNX Runtime when onnxcam probes a freed batch; ONNX Runtime's
    own error lines must not reach the terminal."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Concat", ["input", "coords"], ["xy"], axis=1),
        helper.make_node("Conv", ["xy", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["feat"]),
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(1, 2, 16, 16)).astype(np.float32), "coords"),
        numpy_helper.from_array(rng.normal(size=(4, 5, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
    ]
    image_in = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])]
    logits = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])]
    graph = helper.make_graph(nodes, "coords", image_in, logits, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(inputs / "coords.onnx"))
    args = ["explain", inputs / "coords.onnx", inputs / "good.png", "-o", out, "--preset", "unit"]
    proc = subprocess.run(
        [sys.executable, "-m", "onnxcam.cli", *map(str, args)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime" not in proc.stderr.lower(), proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        "note: the model's batch dimension is fixed to 1 and could not be freed safely; "
        "masked passes run 1 at a time"
    ]


def test_a_closed_pipe_ends_quietly(inputs: Path) -> None:
    """`onnxcam nodes model.onnx | head -1`: no 'unexpected BrokenPipeError'. The reading end
    is closed before the process starts writing."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxcam.cli", "nodes", str(inputs / "model.onnx")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.wait(timeout=60)
    assert stderr == "", stderr


def test_a_declared_setting_is_an_option_checked_in_one_line(tmp_path):
    """--backend comes from its declaration alone (onnxcam.config.ExplainerConfig)."""
    model = build_tiny(tmp_path / "m.onnx", tiny_weights())
    result = CliRunner().invoke(cli, ["explain", str(model), "x.png", "--backend", "tensorrt"])
    assert result.exit_code == 2 and "Invalid value for '--backend': 'tensorrt'" in result.output
    assert "--backend [ort|remote]" in CliRunner().invoke(cli, ["explain", "--help"]).output
