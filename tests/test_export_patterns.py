"""Patterns that real exporters (tf2onnx, Keras 3, paddle2onnx, torch) write, each rebuilt as a
tiny onnx.helper model: the batch, weights and input copies, in-graph normalisation, extra
inputs, VGG-like heads, dynamic sizes and metadata conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SIZE, build_tiny, save_graph
from onnx import TensorProto, helper, numpy_helper

from onnxcam import ConfigError, Explainer, ModelError, NodeError, graph
from onnxcam.cli import cli

RNG = np.random.default_rng(7)


def w(*shape: int, scale: float = 0.5) -> np.ndarray:
    return RNG.normal(0, scale, shape).astype(np.float32)


def save(
    path: Path,
    nodes: list,
    inits: dict[str, np.ndarray],
    *,
    inputs: list | None = None,
    outputs: list | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    inputs = inputs or [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    ]
    outputs = outputs or [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])]
    graph_ = helper.make_graph(
        nodes, "pattern", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    return save_graph(path, graph_, metadata)


def conv_head(src: str = "input", channels: int = 3, k: int = 6) -> tuple[list, dict]:
    """conv 3x3 stride 2 -> ReLU ('feat', k x 8 x 8) -> GAP -> Flatten -> Gemm (4 classes)."""
    nodes = [
        helper.make_node("Conv", [src, "cw", "cb"], ["conv"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv"], ["feat"], name="relu"),
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1, name="fc"),
    ]  # fmt: skip
    return nodes, {"cw": w(k, channels, 3, 3), "cb": w(k, scale=0.1), "fw": w(4, k), "fb": w(4)}


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE, 3), np.uint8)


# ----------------------------------------------------------------------------- the batch


def test_a_bias_reshaped_to_batch_one_does_not_stop_freeing_the_batch(tmp_path):
    """paddle2onnx writes Reshape(bias (C,), [1, C, 1, 1]) + Add after each conv. Freeing the
    batch must leave that Reshape alone (its data has no batch), or ONNX Runtime refuses."""
    nodes, inits = conv_head()
    nodes[0] = helper.make_node("Conv", ["input", "cw"], ["raw"], kernel_shape=[3, 3],
                                strides=[2, 2], pads=[1, 1, 1, 1], name="conv")  # fmt: skip
    nodes[1:1] = [
        helper.make_node("Reshape", ["cb", "bshape"], ["b4"], name="bias_reshape"),
        helper.make_node("Add", ["raw", "b4"], ["conv"], name="bias_add"),
    ]
    inits["bshape"] = np.array([1, 6, 1, 1], np.int64)
    fixed = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])
    path = save(tmp_path / "paddle.onnx", nodes, inits, inputs=[fixed], outputs=[out])
    explainer = Explainer(path, preset="unit")
    assert explainer.max_batch is None and explainer.notes == []
    one = Explainer(path, preset="unit", batch_size=1).explain(image()).saliency
    np.testing.assert_allclose(explainer.explain(image()).saliency, one, atol=1e-6)


def test_a_dynamic_batch_written_as_minus_one_is_not_a_fixed_batch(tmp_path):
    nodes, inits = conv_head()
    dyn = helper.make_tensor_value_info("input", TensorProto.FLOAT, [-1, 3, SIZE, SIZE])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [-1, 4])
    path = save(tmp_path / "old_paddle.onnx", nodes, inits, inputs=[dyn], outputs=[out])
    explainer = Explainer(path, preset="unit")
    assert explainer.max_batch is None and not any("-1" in n for n in explainer.notes)
    assert explainer.explain(image()).saliency.max() > 0
    assert "(N, 3, 16, 16)" in CliRunner().invoke(cli, ["nodes", str(path)]).output


# ----------------------------------------------------------------------------- candidates


def test_weights_constants_and_input_copies_are_not_feature_maps(tmp_path):
    """tf2onnx: an NHWC input transposed to NCHW and rescaled; conv weights from a Constant
    node (a 4-D tensor with h, w > 1 that does not depend on the image)."""
    nodes, inits = conv_head(src="scaled")
    weights = inits.pop("cw")
    nodes[:0] = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Mul", ["nchw", "s"], ["scaled"], name="rescale"),
        helper.make_node(
            "Constant", [], ["cw"], value=numpy_helper.from_array(weights), name="weights"
        ),
    ]
    inits["s"] = np.array(1 / 255, np.float32)
    nhwc = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])
    path = save(tmp_path / "tf.onnx", nodes, inits, inputs=[nhwc])
    model = graph.load_model(path)
    assert [c.tensor for c in graph.spatial_candidates(model)] == ["conv", "feat"]
    for name, phrase in [
        ("weights", "does not depend on the image input"),
        ("to_nchw", "is the image input itself"),
    ]:
        with pytest.raises(NodeError, match=phrase):
            graph.resolve_node(model, name)
    listing = CliRunner().invoke(cli, ["nodes", str(path)]).output
    assert "weights" not in listing and "to_nchw" not in listing and "NHWC" in listing


def test_auto_looks_through_local_pooling_to_the_last_conv_block(tmp_path):
    """conv -> ReLU -> MaxPool -> Flatten -> Gemm (VGG, small Keras heads): the ReLU's map,
    not the pooled one."""
    nodes = [
        helper.make_node("Conv", ["input", "cw", "cb"], ["conv"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], name="block5_conv3"),
        helper.make_node("Relu", ["conv"], ["feat"], name="block5_relu"),
        helper.make_node("MaxPool", ["feat"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2],
                         name="block5_pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1, name="fc"),
    ]  # fmt: skip
    inits = {"cw": w(5, 3, 3, 3), "cb": w(5), "fw": w(4, 5 * 8 * 8, scale=0.05), "fb": w(4)}
    path = save(tmp_path / "vgg.onnx", nodes, inits)
    choice = graph.auto_choice(graph.GraphIndex(graph.load_model(path)))
    assert choice.candidate.tensor == "feat" and "block5_pool" in choice.reason
    assert choice.head == "Flatten 'flatten'"
    output = CliRunner().invoke(cli, ["nodes", str(path)]).output
    assert (
        "auto picks 'block5_relu': the last conv-block map, before MaxPool 'block5_pool'" in output
    )


def test_nodes_does_not_call_a_model_without_head_a_classifier(tmp_path):
    nodes = [
        helper.make_node("Conv", ["input", "cw", "cb"], ["conv"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], name="seg_conv"),
        helper.make_node("Sigmoid", ["conv"], ["mask"], name="seg_sigmoid"),
    ]  # fmt: skip
    out = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 2, SIZE, SIZE])
    path = save(tmp_path / "seg.onnx", nodes, {"cw": w(2, 3, 3, 3), "cb": w(2)}, outputs=[out])
    output = CliRunner().invoke(cli, ["nodes", str(path)]).output
    assert "classifier" not in output
    assert "model: a segmenter (output 'mask' holds per-pixel scores" in output


def test_a_map_one_pixel_high_at_the_size_in_use_is_not_offered(tmp_path):
    """With a dynamic input size, a map's height is only known for a given size: with
    --size 16x2 the stride-2 conv gives 8x1, which auto must not pick."""
    nodes, inits = conv_head()
    nodes[1:1] = []
    dyn = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])
    path = save(tmp_path / "dyn.onnx", nodes, inits, inputs=[dyn])
    assert Explainer(path, preset="unit", size=(16, 16)).candidate.tensor == "feat"
    with pytest.raises(NodeError, match="no feature map on the image grid"):
        Explainer(path, preset="unit", size=(16, 2))
    listing = CliRunner().invoke(cli, ["nodes", str(path), "--size", "16x24"]).output
    assert "(N, 6, 8, 12)" in listing


# ----------------------------------------------------------------------------- inputs


def test_normalisation_inside_the_graph_defaults_to_raw_pixels(tmp_path, weights):
    """Keras Rescaling(1/255) + Normalization: x * 1/255 - mean, / std, before the convs."""
    nodes, inits = conv_head(src="normed")
    nodes[:0] = [
        helper.make_node("Mul", ["input", "scale"], ["unit"], name="rescaling"),
        helper.make_node("Sub", ["unit", "mean"], ["centred"], name="normalization_sub"),
        helper.make_node("Div", ["centred", "std"], ["normed"], name="normalization_div"),
    ]
    inits |= {
        "scale": np.array(1 / 255, np.float32),
        "mean": np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1),
        "std": np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1),
    }
    path = save(tmp_path / "keras.onnx", nodes, inits)
    explainer = Explainer(path)
    assert explainer.norm.scale == 1.0 and explainer.norm.mean == (0.0, 0.0, 0.0)
    assert any("rescales pixels itself" in n and "preset raw" in n for n in explainer.notes)
    record = explainer.explain(image()).to_record()
    assert record["options"]["preprocess"]["scale"] == 1.0
    assert any("preset raw" in n for n in record["notes"])
    twice = Explainer(path, preset="imagenet")
    assert any("normalised twice" in n for n in twice.notes)
    plain = build_tiny(tmp_path / "plain.onnx", weights)
    assert Explainer(plain).norm.mean == (0.485, 0.456, 0.406)  # no rescaling: imagenet


def test_extra_graph_inputs_that_nothing_feeds_are_named(tmp_path):
    """Keras 3 export can leave normalisation constants as graph inputs."""
    nodes, inits = conv_head(src="centred")
    nodes[:0] = [helper.make_node("Sub", ["input", "mean"], ["centred"], name="sub")]
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE]),
        helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 3, 1, 1]),
    ]
    path = save(tmp_path / "leaky.onnx", nodes, inits, inputs=inputs)
    with pytest.raises(ModelError, match=r"besides the image input 'input'.*'mean' \(1, 3, 1, 1\)"):
        Explainer(path)
    inits["mean"] = np.zeros((1, 3, 1, 1), np.float32)  # with an initializer it is a constant
    fed = save(tmp_path / "fed.onnx", nodes, inits, inputs=inputs)
    assert Explainer(fed, preset="unit").explain(image()).saliency.shape == (SIZE, SIZE)


# ----------------------------------------------------------------------------- metadata


def test_metadata_conventions_labels_under_character_and_ultralytics_imgsz(tmp_path):
    nodes, inits = conv_head()
    dyn = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])
    meta = {"character": "0\n90\n180\n270", "imgsz": "[24, 32]"}
    path = save(tmp_path / "meta.onnx", nodes, inits, inputs=[dyn], metadata=meta)
    explainer = Explainer(path, preset="unit")
    assert (explainer.spec.height, explainer.spec.width) == (24, 32)
    assert explainer.labels == ["0", "90", "180", "270"]
    for bad in ("__import__('os')", "[0, 640]", "[1e9, 3]"):
        path = save(tmp_path / "bad.onnx", nodes, inits, inputs=[dyn], metadata={"imgsz": bad})
        with pytest.raises(ConfigError, match=r"--size HxW \(e.g. --size 224x224"):
            Explainer(path, preset="unit")


def test_shapes_are_inferred_through_constant_identity_reshape_shapes(tmp_path):
    """paddle2onnx 2.1 without constant folding: every Reshape's shape is Constant ->
    Identity, and shape inference stops there unless onnxcam folds the Identity first."""
    nodes, inits = conv_head()
    nodes[0] = helper.make_node("Conv", ["input", "cw"], ["raw"], kernel_shape=[3, 3],
                                strides=[2, 2], pads=[1, 1, 1, 1], name="conv")  # fmt: skip
    bias = inits.pop("cb")
    nodes[1:1] = [
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(bias), name="b"),
        helper.make_node("Constant", [], ["s"], name="s",
                         value=numpy_helper.from_array(np.array([1, -1, 1, 1], np.int64))),
        helper.make_node("Identity", ["s"], ["s_id"], name="s_id"),
        helper.make_node("Reshape", ["b", "s_id"], ["b4"], name="bias_reshape"),
        helper.make_node("Add", ["raw", "b4"], ["conv"], name="bias_add"),
        helper.make_node("Identity", ["conv"], ["conv_id"], name="conv_id"),
    ]  # fmt: skip
    nodes[7] = helper.make_node("Relu", ["conv_id"], ["feat"], name="relu")
    path = save(tmp_path / "nofold.onnx", nodes, inits)
    choice = graph.auto_choice(graph.GraphIndex(graph.load_model(path)))
    assert choice.candidate.tensor == "feat" and choice.head == "GlobalAveragePool 'gap'"
    names = [c.tensor for c in graph.spatial_candidates(graph.load_model(path))]
    assert "conv_id" not in names  # an Identity is its input under another name


def test_a_squeeze_excitation_pool_is_not_the_head(tmp_path):
    """GlobalAveragePool -> Conv -> Sigmoid -> Mul back into the map (SE blocks in a
    detector backbone): such a pooling is not a classifier head."""
    nodes, inits = conv_head()
    se = [
        helper.make_node("Relu", ["conv"], ["pre"], name="relu0"),
        helper.make_node("GlobalAveragePool", ["pre"], ["squeeze"], name="se_pool"),
        helper.make_node("Conv", ["squeeze", "sw"], ["excite"], kernel_shape=[1, 1], name="se_fc"),
        helper.make_node("Sigmoid", ["excite"], ["gate"], name="se_gate"),
        helper.make_node("Mul", ["pre", "gate"], ["feat"], name="se_scale"),
        helper.make_node("Conv", ["feat", "hw"], ["boxes"], kernel_shape=[1, 1], name="box_conv"),
    ]
    inits = {"cw": inits["cw"], "cb": inits["cb"], "sw": w(6, 6, 1, 1), "hw": w(4, 6, 1, 1)}
    out = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4, 8, 8])
    path = save(tmp_path / "se.onnx", [nodes[0], *se], inits, outputs=[out])
    choice = graph.auto_choice(graph.GraphIndex(graph.load_model(path)))
    assert choice.head is None and choice.candidate.tensor == "feat"
    # ... and in a classifier, the head is the pooling after the last SE block
    nodes, inits = conv_head()
    nodes[1:2] = se[:5]
    inits["sw"] = w(6, 6, 1, 1)
    path = save(tmp_path / "se_cls.onnx", nodes, inits)
    choice = graph.auto_choice(graph.GraphIndex(graph.load_model(path)))
    assert choice.head == "GlobalAveragePool 'gap'" and choice.candidate.tensor == "feat"


def test_without_a_head_auto_takes_the_last_feature_map_not_an_output_map(tmp_path):
    """MTCNN's P-Net: conv features -> a 1x1 conv to 2 class channels -> Softmax output (a
    fully convolutional detector). The output and the class-logit map feeding it are what is
    explained, not feature maps."""
    nodes = [
        helper.make_node("Conv", ["input", "cw", "cb"], ["conv"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv"], ["feat"], name="prelu"),
        helper.make_node("Conv", ["feat", "hw", "hb"], ["logit_map"], kernel_shape=[1, 1],
                         name="cls_conv"),
        helper.make_node("Softmax", ["logit_map"], ["prob"], axis=1, name="softmax"),
    ]  # fmt: skip
    inits = {"cw": w(8, 3, 3, 3), "cb": w(8), "hw": w(2, 8, 1, 1), "hb": w(2)}
    out = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 2, SIZE, SIZE])
    path = save(tmp_path / "pnet.onnx", nodes, inits, outputs=[out])
    choice = graph.auto_choice(graph.GraphIndex(graph.load_model(path)))
    assert choice.candidate.tensor == "feat" and choice.head is None
    assert "prob" not in [c.tensor for c in graph.spatial_candidates(graph.load_model(path))]


def test_tf2onnx_flatten_head_with_a_transpose_back_to_nhwc(tmp_path):
    """tf2onnx: conv -> ReLU -> MaxPool -> Transpose(0, 2, 3, 1) -> Reshape(N, -1) -> MatMul.
    auto looks through the Transpose and the pooling to the ReLU."""
    nodes = [
        helper.make_node("Conv", ["input", "cw", "cb"], ["conv"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], name="Conv__42"),
        helper.make_node("Relu", ["conv"], ["feat"], name="model/relu4/Relu"),
        helper.make_node("MaxPool", ["feat"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4],
                         name="model/pool4/MaxPool2d"),
        helper.make_node("Transpose", ["pooled"], ["nhwc"], perm=[0, 2, 3, 1],
                         name="Transpose__52"),
        helper.make_node("Reshape", ["nhwc", "flat"], ["flatten"], name="model/flatten/Reshape"),
        helper.make_node("MatMul", ["flatten", "fw"], ["logits"], name="model/dense/MatMul"),
    ]  # fmt: skip
    inits = {"cw": w(5, 3, 3, 3), "cb": w(5), "flat": np.array([-1, 80], np.int64),
             "fw": w(80, 4, scale=0.1)}  # fmt: skip
    path = save(tmp_path / "tf_flatten.onnx", nodes, inits)
    choice = graph.auto_choice(graph.GraphIndex(graph.load_model(path)))
    assert choice.candidate.tensor == "feat" and "model/pool4/MaxPool2d" in choice.reason


def test_graph_inputs_that_no_node_reads_are_left_out(tmp_path):
    """Keras 3 model.export(format="onnx") declares folded constants as inputs nothing reads;
    ONNX Runtime would still demand them."""
    nodes, inits = conv_head()
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE]),
        helper.make_tensor_value_info("normalization/Sub/y:0", TensorProto.FLOAT, [1, 1, 1, 3]),
    ]
    path = save(tmp_path / "keras3.onnx", nodes, inits, inputs=inputs)
    explainer = Explainer(path, preset="unit")
    assert any("'normalization/Sub/y:0'" in n and "left out" in n for n in explainer.notes)
    assert explainer.explain(image()).saliency.shape == (SIZE, SIZE)
    assert graph.load_model(path).graph.input[1].name == "normalization/Sub/y:0"  # file untouched


def test_an_unknown_node_suggests_names_that_contain_it(tmp_path):
    nodes, inits = conv_head()
    nodes[1].name = "model/relu4_1/Relu"
    path = save(tmp_path / "named.onnx", nodes, inits)
    with pytest.raises(NodeError, match=r"closest: model/relu4_1/Relu"):
        graph.resolve_node(graph.load_model(path), "relu4")


def test_anchors_reshaped_into_4d_are_not_a_map(tmp_path):
    """YOLOv8's box decoder (DFL): the head's map (N, 64, 8, 8) is reshaped to anchors
    (N, 64, 64), then to (N, 4, 16, 64), transposed and softmaxed: 4-D with h, w > 1, but
    no longer laid out on the image, so not a candidate; auto takes the head's conv map."""
    nodes = [
        helper.make_node("Conv", ["input", "cw", "cb"], ["conv"], kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1], name="head/conv"),
        helper.make_node("Relu", ["conv"], ["feat"], name="head/act"),
        helper.make_node("Conv", ["feat", "bw"], ["box"], kernel_shape=[1, 1], name="head/box"),
        helper.make_node("Reshape", ["box", "s1"], ["anchors"], name="dfl/flat"),
        helper.make_node("Reshape", ["anchors", "s2"], ["bins"], name="dfl/Reshape"),
        helper.make_node("Transpose", ["bins"], ["binsT"], perm=[0, 2, 1, 3], name="dfl/Transpose"),
        helper.make_node("Softmax", ["binsT"], ["soft"], axis=1, name="dfl/Softmax"),
        helper.make_node("Conv", ["soft", "dw"], ["dist"], kernel_shape=[1, 1], name="dfl/conv"),
        helper.make_node("Reshape", ["dist", "s3"], ["logits"], name="out"),
    ]  # fmt: skip
    inits = {
        "cw": w(8, 3, 3, 3), "cb": w(8), "bw": w(64, 8, 1, 1), "dw": w(1, 16, 1, 1),
        "s1": np.array([0, 64, -1], np.int64), "s2": np.array([0, 4, 16, 64], np.int64),
        "s3": np.array([0, 4], np.int64),
    }  # fmt: skip
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", None])
    path = save(tmp_path / "dfl.onnx", nodes, inits, outputs=[out])
    model = graph.load_model(path)
    names = [c.tensor for c in graph.spatial_candidates(model)]
    assert names == ["conv", "feat", "box"]
    assert graph.auto_choice(graph.GraphIndex(model)).candidate.tensor == "feat"
