"""A ResNet-18-shaped classifier built with onnx.helper and random weights (nothing is
downloaded): a 7×7 stride-2 stem with BatchNormalization, ReLU and max pooling, four stages
of basic blocks (two 3×3 conv-BN-ReLU with a skip Add; a 1×1 stride-2 projection where the
stage halves the grid), global average pooling, Flatten and Gemm.

``build(size=224, widths=(64, 128, 256, 512), blocks=2, classes=1000)`` has ResNet-18's
layers and shapes; the tests use a narrow one. Standalone (imported by tools/ too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(
    *,
    size: int = 224,
    widths: Sequence[int] = (64, 128, 256, 512),
    blocks: int = 2,
    classes: int = 1000,
    seed: int = 0,
) -> onnx.ModelProto:
    """The model, opset 17, IR 8, dynamic batch ``N``; the last block's ReLU is
    ``layer4/out`` and the logits are output ``logits``."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def weight(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv_bn(x: str, name: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))
        nodes.append(
            helper.make_node(
                "Conv", [x, weight(f"{name}.w", w)], [f"{name}/conv"], kernel_shape=[k, k],
                strides=[stride, stride], pads=[k // 2] * 4, name=f"{name}/conv",
            )
        )  # fmt: skip
        bn = [
            weight(f"{name}.gamma", rng.uniform(0.5, 1.5, cout)),
            weight(f"{name}.beta", rng.normal(0, 0.1, cout)),
            weight(f"{name}.mean", rng.normal(0, 0.1, cout)),
            weight(f"{name}.var", rng.uniform(0.5, 1.5, cout)),
        ]
        nodes.append(
            helper.make_node(
                "BatchNormalization", [f"{name}/conv", *bn], [f"{name}/bn"], name=f"{name}/bn"
            )
        )
        if not relu:
            return f"{name}/bn"
        nodes.append(
            helper.make_node("Relu", [f"{name}/bn"], [f"{name}/relu"], name=f"{name}/relu")
        )
        return f"{name}/relu"

    x = conv_bn("input", "stem", 3, widths[0], 7, 2, True)
    nodes.append(
        helper.make_node(
            "MaxPool", [x], ["stem/pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4,
            name="stem/pool",
        )
    )  # fmt: skip
    x, cin = "stem/pool", widths[0]
    for stage, cout in enumerate(widths, start=1):
        for block in range(blocks):
            name = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            y = conv_bn(x, f"{name}.a", cin, cout, 3, stride, True)
            y = conv_bn(y, f"{name}.b", cout, cout, 3, 1, False)
            skip = (
                x
                if stride == 1 and cin == cout
                else conv_bn(x, f"{name}.down", cin, cout, 1, stride, False)
            )
            nodes.append(helper.make_node("Add", [y, skip], [f"{name}/add"], name=f"{name}/add"))
            out = "layer4/out" if stage == len(widths) and block == blocks - 1 else f"{name}/out"
            nodes.append(helper.make_node("Relu", [f"{name}/add"], [out], name=out))
            x, cin = out, cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="avgpool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"))
    fc_w = weight("fc.w", rng.normal(0, np.sqrt(1.0 / cin), (classes, cin)))
    fc_b = weight("fc.b", rng.normal(0, 0.1, classes))
    nodes.append(helper.make_node("Gemm", ["flat", fc_w, fc_b], ["logits"], transB=1, name="fc"))
    graph = helper.make_graph(
        nodes,
        "resnet18_shaped",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
