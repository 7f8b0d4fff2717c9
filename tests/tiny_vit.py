"""Tiny vision transformers built with ``onnx.helper``: the graph shapes that exporters write
(a patch-embedding conv, its map flattened into tokens, prefix tokens concatenated before
them, attention blocks with a softmax over the MatMul of queries and keys, a class-token head),
with random weights, in a few milliseconds.

Variants: the prefix tokens (1: ViT; 2: DeiT distilled, whose head averages two; 1 + 4
registers: DINOv2), the head (``token``: the class token; ``mean``: the mean of the patch
tokens), sequence first (OpenAI CLIP's ``(N, B, D)`` blocks), a dynamic input size (the class
token expanded to a batch and the grid computed from ``Shape``), and a decoder that lays the
tokens back on the grid and convolves them into a dense map.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

D = 16  # width
HEADS = 2


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def w(self, *shape: int, scale: float = 0.3) -> str:
        name = f"w{len(self.inits)}"
        value = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def const(self, value: np.ndarray) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self.count += 1
        out = name or f"t{self.count}"
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=f"/{op_type}_{self.count}", **attrs)
        )
        return out

    def tokens(self, x: str, start: int, end: int) -> str:
        """``x[:, start:end]``."""
        bounds = [self.const(np.array([v])) for v in (start, end, 1)]
        return self.op("Slice", [x, *bounds])

    def norm(self, x: str, name: str | None = None) -> str:
        return self.op(
            "LayerNormalization", [x, self.const(np.ones(D, np.float32)), self.w(D)], name,
            axis=-1,
        )  # fmt: skip

    def norm_wide(self, x: str, width: int) -> str:
        scale = self.const(np.ones(width, np.float32))
        return self.op("LayerNormalization", [x, scale, self.w(width)], axis=-1)

    def linear(self, x: str, k: int, n: int) -> str:
        return self.op("Add", [self.op("MatMul", [x, self.w(k, n)]), self.w(n)])


def _attention(g: _Graph, x: str, sequence_first: bool, name: str) -> str:
    """One pre-norm block: x + attn(norm1(x)) + mlp(norm2(...)); ``name`` names norm1's
    output."""
    n1 = g.norm(x, name)
    qkv = g.linear(n1, D, 3 * D)
    if sequence_first:  # (N, B, 3D) -> (B, N, 3D), as nn.MultiheadAttention's export does
        qkv = g.op("Transpose", [qkv], perm=[1, 0, 2])
    split = g.op("Reshape", [qkv, g.const(np.array([0, -1, 3, HEADS, D // HEADS]))])
    perm = g.op("Transpose", [split], perm=[2, 0, 3, 1, 4])  # (3, B, heads, N, d)
    q, k, v = (g.op("Gather", [perm, g.const(np.array(i))], axis=0) for i in range(3))
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = g.op("Mul", [g.op("MatMul", [q, kt]), g.const(np.float32((D // HEADS) ** -0.5))])
    probs = g.op("Softmax", [scores], axis=-1)
    mixed = g.op("MatMul", [probs, v])  # (B, heads, N, d)
    back = g.op("Transpose", [mixed], perm=[0, 2, 1, 3])
    merged = g.op("Reshape", [back, g.const(np.array([0, -1, D]))])
    if sequence_first:
        merged = g.op("Transpose", [merged], perm=[1, 0, 2])
    x = g.op("Add", [x, g.linear(merged, D, D)])
    hidden = g.op("Relu", [g.linear(g.norm(x), D, 2 * D)])
    return g.op("Add", [x, g.linear(hidden, 2 * D, D)])


def build(
    *,
    prefix: int = 1,
    registers: int = 0,
    size: int = 32,
    patch: int = 4,
    blocks: int = 2,
    head: str = "token",
    sequence_first: bool = False,
    dynamic: bool = False,
    decoder: bool = False,
    classes: int = 5,
    seed: int = 0,
) -> onnx.ModelProto:
    """A tiny ViT (see the module docstring); norm1 of block ``i`` outputs ``norm1_{i}``."""
    g = _Graph(seed)
    grid = size // patch
    cells = grid * grid
    conv = g.op("Conv", ["input", g.w(D, 3, patch, patch)], "patches", kernel_shape=[patch] * 2,
                strides=[patch] * 2)  # fmt: skip
    if dynamic:
        shape = g.op("Shape", [conv])
        flat_shape = g.op("Concat", [g.op("Slice", [shape, g.const(np.array([0])),
                          g.const(np.array([2]))]), g.const(np.array([-1]))], axis=0)  # fmt: skip
        flat = g.op("Reshape", [conv, flat_shape])
    else:
        flat = g.op("Reshape", [conv, g.const(np.array([0, D, cells]))])
    tokens = g.op("Transpose", [flat], "tokens", perm=[0, 2, 1])
    if not dynamic:
        tokens = g.op("Add", [tokens, g.w(1, cells, D)])
    count = prefix + registers + cells
    if prefix:
        batch = g.op("Gather", [g.op("Shape", [tokens]), g.const(np.array([0]))], axis=0)
        target = g.op("Concat", [batch, g.const(np.array([-1, -1]))], axis=0)
        ones = g.op("Where", [g.op("Equal", [target, g.const(np.array([-1]))]),
                              g.const(np.array([1])), target])  # fmt: skip
        cls = g.op("Expand", [g.w(1, prefix, D), ones])
        tokens = g.op("Concat", [cls, tokens], "with_prefix", axis=1)
    if registers:
        first, rest = g.tokens(tokens, 0, 1), g.tokens(tokens, 1, 2**62)
        regs = g.op("Expand", [g.w(1, registers, D), g.op("Shape", [first])])
        tokens = g.op("Concat", [first, regs, rest], "with_registers", axis=1)
    x = g.op("Transpose", [tokens], perm=[1, 0, 2]) if sequence_first else tokens
    for i in range(blocks):
        x = _attention(g, x, sequence_first, f"norm1_{i}")
    if sequence_first:
        x = g.op("Transpose", [x], perm=[1, 0, 2])
    x = g.norm(x, "final_norm")
    if decoder:
        cells_only = g.tokens(x, count - cells, count)
        laid = g.op("Reshape", [cells_only, g.const(np.array([0, grid, grid, D]))])
        nchw = g.op("Transpose", [laid], "decoder_in", perm=[0, 3, 1, 2])
        dec = g.op("Relu", [g.op("Conv", [nchw, g.w(8, D, 3, 3)], kernel_shape=[3, 3],
                                 pads=[1, 1, 1, 1])], "decoder_map")  # fmt: skip
        up = g.op("Resize", [dec, "", g.const(np.array([1, 1, patch, patch], np.float32))],
                  "decoder_up", mode="linear")  # fmt: skip
        out = g.op("Conv", [up, g.w(1, 8, 1, 1)], "saliency", kernel_shape=[1, 1])
        out_info = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 1, size, size])
    else:
        if head == "token":
            taken = [
                g.op("Gather", [x, g.const(np.array(i))], axis=1) for i in range(min(prefix, 2))
            ]
            logits = [g.op("Gemm", [t, g.w(classes, D), g.w(classes)], transB=1) for t in taken]
            out = logits[0]
            if len(logits) == 2:
                out = g.op("Div", [g.op("Add", logits), g.const(np.float32(2))])
        else:  # the mean of the patch tokens
            patches = g.tokens(x, count - cells, count)
            pooled = g.op("ReduceMean", [patches], axes=[1], keepdims=0)
            out = g.op("Gemm", [pooled, g.w(classes, D), g.w(classes)], transB=1)
        g.nodes[-1].output[0] = "logits"
        out_info = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])
    side = "S" if dynamic else size
    graph = helper.make_graph(
        g.nodes,
        "tiny_vit",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, side, side])],
        [out_info],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def build_swin(*, size: int = 32, classes: int = 5, seed: int = 0) -> onnx.ModelProto:
    """A tiny Swin-style model: channels-last ``(N, h, w, C)`` maps, a patch merging padded by
    a size computed from ``Shape`` (which shape inference cannot follow) and regrouped as
    ``(N, h/2, 2, w/2, 2, C)``, per-cell MLP blocks, and a head that averages rows and
    columns (``ReduceMean`` over axes 1, 2). ``stage1`` and ``stage2`` name the last map of
    each stage."""
    g = _Graph(seed)
    conv = g.op("Conv", ["input", g.w(D, 3, 4, 4)], "patches", kernel_shape=[4, 4],
                strides=[4, 4])  # fmt: skip
    x = g.norm(g.op("Transpose", [conv], perm=[0, 2, 3, 1]))
    x = g.op("Add", [x, g.linear(g.op("Relu", [g.linear(g.norm(x), D, D)]), D, D)], "stage1")
    shape = g.op("Shape", [x])
    odd = g.op("Mod", [g.op("Gather", [shape, g.const(np.array([1, 2]))], axis=0),
                       g.const(np.array([2]))])  # fmt: skip
    zeros = g.const(np.zeros(1, np.int64))
    pads = g.op("Concat", [zeros, zeros, zeros, zeros, zeros, odd, zeros], axis=0)
    padded = g.op("Pad", [x, pads])
    half = size // 8
    split = g.op("Reshape", [padded, g.const(np.array([-1, half, 2, half, 2, D]))])
    moved = g.op("Transpose", [split], perm=[0, 1, 3, 4, 2, 5])
    merged = g.op("Reshape", [moved, g.const(np.array([0, half, half, 4 * D]))])
    x = g.norm_wide(merged, 4 * D)
    x = g.op("MatMul", [x, g.w(4 * D, D)])
    x = g.op("Add", [x, g.linear(g.op("Relu", [g.linear(g.norm(x), D, D)]), D, D)], "stage2")
    x = g.norm(x, "final_norm")
    pooled = g.op("ReduceMean", [x], axes=[1, 2], keepdims=0)
    g.op("Gemm", [pooled, g.w(classes, D), g.w(classes)], "logits", transB=1)
    graph = helper.make_graph(
        g.nodes,
        "tiny_swin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
