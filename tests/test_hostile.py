"""Bounded resources and precise messages on hostile models and metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import SIZE, build_tiny, tiny_weights
from onnx import TensorProto, helper, numpy_helper

from onnxcam import ConfigError, Explainer, ModelError, TimeLimitError
from onnxcam.labels import MAX_LABELS, MAX_LABELS_BYTES, LabelError, load_labels, parse_labels
from onnxcam.targets import load_target_file


def endless(path: Path, *, fixed_batch: bool = False) -> Path:
    """The tiny CNN whose output also waits for a Loop of 10**12 iterations."""
    model = onnx.load(str(build_tiny(path, tiny_weights(), fixed_batch=fixed_batch)))
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )  # fmt: skip
    graph = model.graph
    graph.node.extend([
        helper.make_node("Loop", ["trips", "cond", "v0"], ["v_end"], body=body),
        helper.make_node("Mul", ["v_end", "zero"], ["nothing"]),
        helper.make_node("Add", ["logits", "nothing"], ["scored"]),
    ])  # fmt: skip
    graph.initializer.extend([
        numpy_helper.from_array(np.array(10**12, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.array(0.0, np.float32), "v0"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ])  # fmt: skip
    batch = 1 if fixed_batch else "N"
    graph.output[0].CopyFrom(helper.make_tensor_value_info("scored", TensorProto.FLOAT, [batch, 3]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("fixed_batch", [False, True], ids=["dynamic", "fixed-batch-probe"])
def test_a_model_that_never_finishes_is_stopped_by_the_time_limit(tmp_path, image, fixed_batch):
    model = endless(tmp_path / "endless.onnx", fixed_batch=fixed_batch)
    t0 = time.perf_counter()
    with pytest.raises(TimeLimitError, match="did not finish within the time limit"):
        Explainer(model, preset="unit", time_limit_s=0.5).explain(image)
    assert time.perf_counter() - t0 < 10


def test_the_cli_reports_the_time_limit_in_one_line(tmp_path, image):
    import cv2

    model = endless(tmp_path / "endless.onnx")
    cv2.imwrite(str(tmp_path / "img.png"), image)
    args = ["explain", model, tmp_path / "img.png", "-o", tmp_path / "out", "--preset", "unit",
            "--time-limit", "0.5"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "onnxcam.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "time limit" in lines[0], proc.stderr


def test_labels_beyond_the_limits_cost_nothing_and_say_so(tmp_path, image):
    for text, phrase in [
        ('{"1000000000": "x"}', "label key 1000000000 is not a class index"),
        ('{"-1": "a", "0": "b"}', "label key -1 is not a class index"),
        ("\n".join(["x"] * (MAX_LABELS + 1)), f"{MAX_LABELS + 1:,} labels, more than"),
    ]:
        with pytest.raises(LabelError, match=phrase):
            parse_labels(text)
    model = build_tiny(tmp_path / "m.onnx", tiny_weights(), metadata={"labels": '{"1e9": "x"}'})
    explainer = Explainer(model, preset="unit")
    assert explainer.labels is None
    assert any("labels are left out" in note for note in explainer.notes)
    (tmp_path / "labels.txt").write_text('{"-3": "x"}')
    with pytest.raises(ConfigError, match=r"labels file .*label key -3"):
        Explainer(model, preset="unit", labels=tmp_path / "labels.txt")


def test_absurd_input_sizes_and_element_types_are_named(tmp_path):
    path = build_tiny(tmp_path / "m.onnx", tiny_weights())
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 2**31
    onnx.save(model, str(tmp_path / "huge.onnx"))
    with pytest.raises(ModelError, match=r"2147483648×16 pixels; onnxcam takes inputs up to"):
        Explainer(tmp_path / "huge.onnx")
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.elem_type = 99
    onnx.save(model, str(tmp_path / "odd.onnx"))
    with pytest.raises(ModelError, match="element type 99, which is no numeric ONNX type"):
        Explainer(tmp_path / "odd.onnx")
    with pytest.raises(ConfigError, match="above 16384 pixels a side"):
        Explainer(path, size=(SIZE, 10**6))


def test_what_fuzzing_found(tmp_path, image):
    """Labels nested ten thousand deep, and a graph name that is not UTF-8."""
    with pytest.raises(LabelError, match="nested too deeply"):
        parse_labels("[" * 10_000)
    model = onnx.load(str(build_tiny(tmp_path / "m.onnx", tiny_weights())))
    data = model.SerializeToString().replace(b"tiny", b"t\x99ny", 1)  # the graph's name
    with pytest.raises(ModelError, match="not valid UTF-8"):
        Explainer(data)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_labels_target_and_boxes_files_that_never_end_are_refused_unread(tmp_path):
    """A device that never ends (its size reads 0), a FIFO (opening one blocks) and a file
    over the limit are refused without reading them."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.txt"
    with open(big, "wb") as handle:
        handle.truncate(MAX_LABELS_BYTES + 1)  # sparse: costs no disk
    for path, phrase in [("/dev/zero", "not a regular file"), (fifo, "not a regular file"),
                         (big, f"more than {MAX_LABELS_BYTES:,}")]:  # fmt: skip
        with pytest.raises(ConfigError, match=phrase):
            load_labels(path)
        with pytest.raises(ConfigError, match="target file"):
            load_target_file(path)
    with pytest.raises(ConfigError, match="embedded null byte"):
        load_labels("a\x00b")


def test_a_model_path_the_file_system_refuses_is_one_line(tmp_path):
    """A name too long for the file system (or a FIFO) as the model: one line naming it."""
    from click.testing import CliRunner

    from onnxcam.cli import cli

    too_long = str(tmp_path / ("a" * 300 + ".onnx"))
    for command in (["nodes", too_long], ["explain", too_long, "x.png"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: cannot read model file ")
        assert "unexpected" not in result.output and len(result.output.splitlines()) == 1
