"""Graph surgery: candidates, auto choice, resolution errors, exposure, batch freeing."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import build_tiny
from onnx import TensorProto, helper, numpy_helper

from onnxcam import ModelError, NodeError, graph


def test_candidates_and_auto_pick_the_rectified_map(tiny):
    model = graph.load_model(tiny)
    names = [c.tensor for c in graph.spatial_candidates(model)]
    assert names == ["conv", "feat"]
    auto = graph.auto_candidate(model)
    assert (auto.node, auto.op_type, auto.tensor, auto.layout) == (
        "features/relu",
        "Relu",
        "feat",
        "NCHW",
    )
    assert auto.shape[1:] == (5, 8, 8)


@pytest.mark.parametrize("spec", ["features/relu", "feat"])
def test_resolve_by_node_or_tensor_name(tiny, spec):
    assert graph.resolve_node(graph.load_model(tiny), spec).tensor == "feat"


def test_unknown_name_lists_closest(tiny):
    with pytest.raises(NodeError, match=r"closest: features/conv"):
        graph.resolve_node(graph.load_model(tiny), "features/cnv")


def test_non_spatial_node_names_nearest_spatial_map(tiny):
    with pytest.raises(NodeError, match=r"not a feature map on the image grid.*features/relu"):
        graph.resolve_node(graph.load_model(tiny), "head/gap")


def test_expose_copies_and_appends_typed_output(tiny):
    model = graph.load_model(tiny)
    before = model.SerializeToString()
    exposed = graph.expose(model, "conv")
    assert model.SerializeToString() == before
    out = exposed.graph.output[-1]
    assert out.name == "conv" and out.type.tensor_type.elem_type == TensorProto.FLOAT
    assert len(out.type.tensor_type.shape.dim) == 4
    # Exposing a tensor that is already an output changes nothing.
    again = graph.expose(exposed, "conv")
    assert [o.name for o in again.graph.output] == [o.name for o in exposed.graph.output]


def test_exposed_output_runs_for_multi_output_node(tmp_path):
    # Split has two outputs; the second one is exposed.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    split = numpy_helper.from_array(np.array([2, 2], np.int64), "split")
    nodes = [
        helper.make_node("Split", ["x", "split"], ["a", "b"], axis=1, name="split"),
        helper.make_node("Add", ["a", "b"], ["s"], name="add"),
        helper.make_node("GlobalAveragePool", ["s"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [split]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    cand = graph.resolve_node(model, "split")
    assert cand.tensor == "a"
    assert graph.resolve_node(model, "b").tensor == "b"
    exposed = graph.expose(model, "b")
    sess = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = np.random.default_rng(0).normal(size=(2, 4, 6, 6)).astype(np.float32)
    _, b = sess.run(["y", "b"], {"x": feed})
    np.testing.assert_allclose(b, feed[:, 2:])
    assert graph.auto_candidate(model).tensor == "s"


def test_nhwc_feature_map_reduced_over_1_2_is_detected(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r", "axes"], ["y"], keepdims=0, name="gap"),
    ]
    axes = numpy_helper.from_array(np.array([1, 2], np.int64), "axes")
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [axes]), opset_imports=[helper.make_opsetid("", 18)]
    )
    cand = graph.auto_candidate(model)
    assert (cand.tensor, cand.layout, cand.spatial, cand.channels) == ("r", "NHWC", (8, 8), 3)


def test_make_batch_dynamic_rewrites_reshape_and_keeps_original(tmp_path, weights):
    path = build_tiny(tmp_path / "fixed.onnx", weights, fixed_batch=True, reshape_head=True)
    model = onnx.load(str(path))
    before = model.SerializeToString()
    dynamic, changed = graph.make_batch_dynamic(model)
    assert changed and model.SerializeToString() == before
    assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = ort.InferenceSession(dynamic.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = np.random.default_rng(0).uniform(size=(3, 3, 16, 16)).astype(np.float32)
    batched = sess.run(None, {"input": feed})[0]
    singles = np.concatenate([sess.run(None, {"input": feed[i : i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-6)


def test_empty_node_names_get_a_stand_in_label(tmp_path, weights):
    path = build_tiny(tmp_path / "anon.onnx", weights, empty_names=True)
    cand = graph.auto_candidate(graph.load_model(path))
    assert cand.node == "" and cand.label == "<Relu #1>"


def test_subgraph_tensor_is_refused_clearly():
    inner_out = helper.make_tensor_value_info("inner", TensorProto.FLOAT, None)
    then = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["inner"], name="inner_relu")], "then", [], [inner_out]
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["inner2"], name="inner_neg")],
        "else",
        [],
        [helper.make_tensor_value_info("inner2", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node(
            "Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])
        ),
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="if"),
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes, "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )  # fmt: skip
    with pytest.raises(NodeError, match="subgraph"):
        graph.resolve_node(model, "inner_relu")


def test_external_data_model_loads_from_its_folder(tmp_path, weights):
    path = build_tiny(tmp_path / "src.onnx", weights)
    model = onnx.load(str(path))
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save(
        model, str(folder / "m.onnx"), save_as_external_data=True, location="m.data",
        size_threshold=0,
    )  # fmt: skip
    files = sorted(p.name for p in folder.iterdir())
    loaded = graph.load_model(folder / "m.onnx")
    assert numpy_helper.to_array(loaded.graph.initializer[0]).shape == (5, 3, 3, 3)
    assert sorted(p.name for p in folder.iterdir()) == files
    (folder / "m.data").unlink()
    with pytest.raises(ModelError, match="cannot read"):
        graph.load_model(folder / "m.onnx")


@pytest.mark.parametrize(
    ("content", "phrase"),
    [(b"", "empty"), (b"hello, not a model", "cannot read|not a usable"), (None, "not found")],
)
def test_load_model_bad_files(tmp_path, content, phrase):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=phrase):
        graph.load_model(path)


def test_truncated_model_is_refused(tmp_path, tiny):
    data = tiny.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        graph.load_model(cut)
