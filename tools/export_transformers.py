#!/usr/bin/env python3
"""Export reduced vision transformers with random weights to ONNX: the transformer fixtures.

A maintainer tool (needs ``torch``, ``timm``, ``onnx`` and ``onnxruntime``; onnxcam itself never
imports torch). It builds small versions of the real architectures, each right after
``torch.manual_seed(seed)`` (so the same name and seed give the same weights), exports them
with the TorchScript exporter (``dynamo=False``) at opset 17 with a dynamic batch axis, checks
them against PyTorch in ONNX Runtime and writes them to ``models/tiny/`` with
``models/tiny/models.json``: per file the facts a test needs (input, token count, prefix
tokens, grid, width, layout, and the tensor a CAM should read, found by matching a PyTorch
hook against every tensor of the ONNX graph).

=====================  ==========================================================  =========
file                   architecture (timm name or module; depth 2, width <= 64)     layout
=====================  ==========================================================  =========
``vit.onnx``           ``vit_tiny_patch16_224``: CLS token, 14x14 grid at 224        tokens
``vit_dynamo.onnx``    the same weights, ``torch.onnx.export(dynamo=True)``          tokens
``deit_distilled``     ``deit_tiny_distilled_patch16_224``: CLS + distillation       tokens
``dinov2_reg4``        ``vit_small_patch14_reg4_dinov2``: CLS + 4 registers, 16x16   tokens
``swin``               ``swin_tiny_patch4_window7_224``: (N, H, W, C) in the blocks  NHWC
``clip``               OpenAI CLIP's ``VisionTransformer`` (below): (N, B, D)        seq-first
``vit_dynamic``        ``vit_tiny_patch16_224``, ``dynamic_img_size``; H, W dynamic  tokens
``vit_decoder``        ViT encoder, tokens back to a grid, conv decoder, (N,1,H,W)   NCHW
=====================  ==========================================================  =========

The CAM target recorded for each model (``auto`` in ``models.json``) is what an explainer
should pick: for a CLS-token head the last block's ``norm1`` output (the layer
pytorch-grad-cam's ViT recipe hooks, ``model.blocks[-1].norm1``; CLIP's ``ln_1``); for Swin's
mean-pooled head the map the head pools (the final ``norm`` output, channels-last); for the
decoder the last decoder activation before the 1x1 output conv. ``block_input`` and
``block_output`` are the last transformer block's input (OpenVINO XAI's ViT target layer) and
output. Each is given by ONNX node and tensor name, found by matching a PyTorch hook on the
module against every tensor of the graph.

Usage (from the repository root; about a minute on two CPU cores)::

    python tools/export_transformers.py                       # all models -> models/tiny/
    python tools/export_transformers.py --models vit swin --out-dir /tmp/tiny

From Python (``tools/parity_vit.py``)::

    from export_transformers import build
    model = build("deit", seed=0)                             # eval mode, random weights
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import sys
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import timm
import timm.models.vision_transformer as timm_vit
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
OPSET = 17
SIZE = 224
NUM_CLASSES = 10
INPUT_NAME = "input"
PRESET = "imagenet"  # random weights: any preset will do; this one makes the CLI run as is
MAX_BYTES = 2 * 1024 * 1024


class QuickGELU(nn.Module):
    """CLIP's activation, ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """OpenAI CLIP's block on sequence-first tokens ``(N, B, D)``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, width * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(width * 4, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """OpenAI CLIP's ``Transformer``: ``resblocks``, an ``nn.Sequential`` of blocks."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads) for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class ClipVisionTransformer(nn.Module):
    """OpenAI CLIP's image tower (``clip/model.py`` ``VisionTransformer``), small.

    conv1 (patch embedding, no bias) -> (B, D, h*w) -> (B, h*w, D) -> class embedding
    prepended -> positional embedding -> ``ln_pre`` -> ``permute(1, 0, 2)`` to sequence-first
    ``(N, B, D)`` -> ``transformer.resblocks`` (``nn.MultiheadAttention``) -> permute back ->
    ``ln_post`` on the CLS token -> ``@ proj`` -> the image embedding ``(B, output_dim)``.
    """

    def __init__(
        self,
        input_resolution: int = SIZE,
        patch_size: int = 16,
        width: int = 64,
        layers: int = 2,
        heads: int = 2,
        output_dim: int = 32,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        grid = input_resolution // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(
            x.shape[0], 1, x.shape[-1], dtype=x.dtype
        )
        x = torch.cat([cls, x], dim=1)
        x = self.ln_pre(x + self.positional_embedding.to(x.dtype))
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        return self.ln_post(x[:, 0, :]) @ self.proj


class ViTDecoder(nn.Module):
    """A timm ViT encoder whose patch tokens go back to a grid and through a conv decoder.

    ``encoder`` (all tokens) -> drop the prefix tokens -> ``(B, h, w, D)`` -> NCHW -> 3x3 conv
    64->32, ReLU -> bilinear x2 -> 3x3 conv 32->16, ReLU (the last decoder map) -> 1x1 conv
    -> 1 channel -> bilinear x8 to the input size -> sigmoid: a dense ``(B, 1, H, W)``
    saliency-style output.
    """

    def __init__(self, patch_size: int = 16, width: int = 64) -> None:
        super().__init__()
        self.encoder = timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            num_classes=0,
            global_pool="",  # forward() returns every token
            depth=2,
            embed_dim=width,
            num_heads=2,
            patch_size=patch_size,
        )
        self.decoder = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(width, 32, 3, padding=1)),
                    ("relu1", nn.ReLU()),
                    ("up1", nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)),
                    ("conv2", nn.Conv2d(32, 16, 3, padding=1)),
                    ("relu2", nn.ReLU()),
                    ("head", nn.Conv2d(16, 1, 1)),
                    ("up2", nn.Upsample(scale_factor=patch_size // 2, mode="bilinear")),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.encoder.patch_embed.grid_size
        tokens = self.encoder(x)[:, self.encoder.num_prefix_tokens :]
        grid = tokens.reshape(x.shape[0], h, w, tokens.shape[-1]).permute(0, 3, 1, 2)
        return torch.sigmoid(self.decoder(grid))


@contextlib.contextmanager
def _resample_without_antialias() -> Iterator[None]:
    """timm resamples the position embedding with ``antialias=True``, which has no ONNX export
    at opset 17 (``aten::_upsample_bicubic2d_aa``); inside this block it resamples without
    (plain bicubic, a = -0.75, as ONNX ``Resize`` cubic)."""
    original = timm_vit.resample_abs_pos_embed
    timm_vit.resample_abs_pos_embed = functools.partial(original, antialias=False)
    try:
        yield
    finally:
        timm_vit.resample_abs_pos_embed = original


class DynamicViT(timm_vit.VisionTransformer):
    """timm's ``VisionTransformer`` with ``dynamic_img_size``, its position embedding resampled
    without antialiasing (same module names, same weights)."""

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        with _resample_without_antialias():
            return super()._pos_embed(x)


def _dynamic_vit() -> nn.Module:
    model = _timm("vit_tiny_patch16_224", dynamic_img_size=True, **_VIT)()
    model.__class__ = DynamicViT
    return model


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs)

    return make


_VIT = {"depth": 2, "embed_dim": 64, "num_heads": 2}


@dataclass(frozen=True)
class Spec:
    """One fixture: how to build it and what it should look like."""

    make: Callable[[], nn.Module]
    arch: str  # what it reproduces
    layout: str  # the layout of the auto map: tokens, channels_last, sequence_first, nchw
    auto_module: str  # the PyTorch module whose output is the auto map
    last_block: str | None = None  # the last transformer block (its input and output recorded)
    extra: tuple[tuple[str, str, bool], ...] = ()  # more (key, module, hook its input) facts
    output: str = "logits"
    prefix_tokens: int = 0
    patch: int = 16
    width: int = 64
    stride: int = 0  # the auto map's stride in input pixels (0: the patch size)
    dynamo: bool = False
    dynamic_hw: bool = False
    trace_size: int = SIZE  # the size the exporter traces at
    sizes: tuple[tuple[int, int], ...] = ((SIZE, SIZE),)  # checked in ONNX Runtime
    options: dict[str, Any] = field(default_factory=dict)  # timm keyword arguments, recorded


SPECS: dict[str, Spec] = {
    "vit": Spec(
        _timm("vit_tiny_patch16_224", **_VIT),
        "timm vit_tiny_patch16_224",
        "tokens",
        "blocks.1.norm1",
        "blocks.1",
        prefix_tokens=1,
        options=_VIT,
    ),
    "vit_dynamo": Spec(
        _timm("vit_tiny_patch16_224", **_VIT),
        "timm vit_tiny_patch16_224 (dynamo exporter)",
        "tokens",
        "blocks.1.norm1",
        "blocks.1",
        prefix_tokens=1,
        dynamo=True,
        options=_VIT,
    ),
    "deit_distilled": Spec(
        _timm("deit_tiny_distilled_patch16_224", **_VIT),
        "timm deit_tiny_distilled_patch16_224",
        "tokens",
        "blocks.1.norm1",
        "blocks.1",
        prefix_tokens=2,
        options=_VIT,
    ),
    "dinov2_reg4": Spec(
        _timm("vit_small_patch14_reg4_dinov2", img_size=SIZE, init_values=1.0, **_VIT),
        "timm vit_small_patch14_reg4_dinov2",
        "tokens",
        "blocks.1.norm1",
        "blocks.1",
        prefix_tokens=5,
        patch=14,
        options={"img_size": SIZE, "init_values": 1.0, **_VIT},
    ),
    "swin": Spec(
        _timm("swin_tiny_patch4_window7_224", depths=(2, 2), embed_dim=32, num_heads=(1, 2)),
        "timm swin_tiny_patch4_window7_224",
        "channels_last",
        "norm",
        "layers.1.blocks.1",
        patch=4,
        stride=8,
        # inside a block the MLP runs on (B, h*w, C): tokens without prefix
        extra=(("flat_tokens", "layers.1.blocks.1.norm2", True),),
        options={"depths": [2, 2], "embed_dim": 32, "num_heads": [1, 2]},
    ),
    "clip": Spec(
        ClipVisionTransformer,
        "OpenAI CLIP VisionTransformer (written here)",
        "sequence_first",
        "transformer.resblocks.1.ln_1",
        "transformer.resblocks.1",
        output="embedding",
        prefix_tokens=1,
        options={"patch_size": 16, "width": 64, "layers": 2, "heads": 2, "output_dim": 32},
    ),
    "vit_dynamic": Spec(
        _dynamic_vit,
        "timm vit_tiny_patch16_224, dynamic_img_size=True",
        "tokens",
        "blocks.1.norm1",
        "blocks.1",
        prefix_tokens=1,
        dynamic_hw=True,
        trace_size=160,  # not the native 224, so that the pos-embed resampling is traced
        sizes=((224, 224), (160, 160), (192, 288)),
        options={"dynamic_img_size": True, **_VIT},
    ),
    "vit_decoder": Spec(
        ViTDecoder,
        "timm vit_tiny_patch16_224 encoder + conv decoder (written here)",
        "nchw",
        "decoder.relu2",
        "encoder.blocks.1",
        output="mask",
        prefix_tokens=1,
        width=16,
        stride=8,
        options={"encoder": "vit_tiny_patch16_224", **_VIT, "num_classes": 0, "global_pool": ""},
    ),
}
# the PyTorch model behind each name (vit_dynamo shares vit's weights)
SOURCE = {"vit_dynamo": "vit"}
ALIASES = {"deit": "deit_distilled", "dinov2": "dinov2_reg4"}


def build(name: str, seed: int = 0) -> nn.Module:
    """The PyTorch model of fixture ``name`` with random weights from ``seed``, in eval mode.

    ``torch.manual_seed(seed)`` right before construction: the same name and seed give the
    same weights. ``deit`` builds the *non-distilled* ``deit_tiny_patch16_224`` reduced as
    ``vit`` (one CLS token: what pytorch-grad-cam's ViT recipe assumes), ``deit_tiny`` the
    full-size one (12 blocks, width 192, 1,000 classes; about 22 MB as ONNX, not shipped).
    """
    torch.manual_seed(seed)
    if name == "deit":
        return _timm("deit_tiny_patch16_224", **_VIT)().eval()
    if name == "deit_tiny":  # full size, 1,000 classes: for timing, not shipped
        return timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    spec = SPECS[SOURCE.get(name, name)]
    return spec.make().eval()


def export(spec: Spec, model: nn.Module, path: Path) -> None:
    """``torch.onnx.export`` at opset 17, dynamic batch (and H, W for ``dynamic_hw``)."""
    dummy = torch.zeros(1, 3, spec.trace_size, spec.trace_size)
    axes: dict[str, dict[int, str]] = {INPUT_NAME: {0: "batch"}, spec.output: {0: "batch"}}
    if spec.dynamic_hw:
        axes[INPUT_NAME].update({2: "height", 3: "width"})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python values in timm
        if spec.dynamo:
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.onnx.export(
                model,
                (dummy,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[spec.output],
                dynamic_shapes=({0: batch},),
                optimize=True,
                verbose=False,
            )
            program.save(str(path))
        else:
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[spec.output],
                dynamic_axes=axes,
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.EVAL,
            )
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for key, value in (("onnxcam.preset", PRESET), ("onnxcam.fixture", spec.arch)):
        prop = m.metadata_props.add()
        prop.key, prop.value = key, value
    m.doc_string = f"{spec.arch}, random weights (onnxcam tools/export_transformers.py)"
    m.producer_name = "pytorch"
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _all_tensors(path: Path, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every node output of the graph for input ``x``, and each tensor's producing node."""
    m = onnx.load(str(path))
    known = {o.name for o in m.graph.output}
    producer = {}
    for node in m.graph.node:
        for out in node.output:
            producer[out] = node.name
            if out and out not in known:
                m.graph.output.append(onnx.ValueInfoProto(name=out))
                known.add(out)
    sess = _session(m)
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, {INPUT_NAME: x})
    return dict(zip(names, values, strict=True)), producer


def _match(
    tensors: dict[str, np.ndarray], producer: dict[str, str], want: np.ndarray, order: list[str]
) -> tuple[str, str, float]:
    """The tensor of the graph closest to the hooked PyTorch value ``want`` (the first in
    graph order among equals, so not an ``Identity`` copy of it); it must match to 1e-4."""
    tol = 1e-4 * max(1.0, float(np.abs(want).max()))
    best: tuple[float, str] | None = None
    for name in order:
        got = tensors.get(name)
        if got is not None and got.shape == want.shape:
            diff = float(np.abs(got - want).max())
            if best is None or diff < best[0]:
                best = diff, name
    if best is None or best[0] > tol:
        raise RuntimeError(f"no tensor of the graph equals the hooked value {want.shape}")
    return producer[best[1]], best[1], best[0]


def _hooked(model: nn.Module, module: str, x: torch.Tensor, *, pre: bool) -> np.ndarray:
    target = model.get_submodule(module)
    seen: dict[str, torch.Tensor] = {}
    if pre:
        handle = target.register_forward_pre_hook(lambda m, a: seen.setdefault("v", a[0]))
    else:
        handle = target.register_forward_hook(lambda m, a, o: seen.setdefault("v", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["v"].detach().numpy()


def _landmarks(
    m: onnx.ModelProto, spec: Spec, tensors: dict[str, np.ndarray], entry: dict[str, Any]
) -> tuple[str, str | None]:
    """The patch embedding (the first Conv whose stride equals its kernel) and the Concat that
    prepends the prefix tokens (its output has every token), by node name."""
    conv = next(
        n
        for n in m.graph.node
        if n.op_type == "Conv"
        and {a.name: list(a.ints) for a in n.attribute}.get("kernel_shape")
        == {a.name: list(a.ints) for a in n.attribute}.get("strides")
    )
    concat = None
    if spec.prefix_tokens:
        axis = 1  # CLIP too: it prepends the class embedding before going sequence-first
        for n in m.graph.node:
            value = tensors.get(n.output[0])
            if n.op_type == "Concat" and value is not None and value.ndim == 3:
                concat = n.name if value.shape[axis] == entry["tokens"] else None
            if concat:
                break
    return conv.name, concat


def describe(name: str, spec: Spec, model: nn.Module, path: Path) -> dict[str, Any]:
    """Checks ``path`` against ``model`` and returns its facts (``models.json`` entry)."""
    rng = np.random.default_rng(0)
    diffs = {}
    for h, w in spec.sizes:
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        sess = _session(path)
        got = sess.run(None, {INPUT_NAME: x})[0]
        singles = np.concatenate([sess.run(None, {INPUT_NAME: x[i : i + 1]})[0] for i in (0, 1)])
        diffs[f"{h}x{w}"] = float(np.abs(got - want).max())
        if not np.allclose(got, want, atol=1e-4, rtol=1e-3):
            raise RuntimeError(f"{name} at {h}x{w}: ONNX and torch differ by {diffs[f'{h}x{w}']}")
        if not np.allclose(got, singles, atol=1e-5, rtol=1e-5):
            raise RuntimeError(f"{name} at {h}x{w}: a batch of 2 differs from single runs")

    m = onnx.load(str(path))
    order = [o for n in m.graph.node for o in n.output]
    inp = m.graph.input[0]
    in_shape = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out = m.graph.output[0]
    out_shape = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    per_size = []
    for h, w in spec.sizes:
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        xt = torch.from_numpy(x)
        tensors, producer = _all_tensors(path, x)
        entry: dict[str, Any] = {"input_hw": [h, w]}
        gh, gw = h // spec.patch, w // spec.patch  # the patch embedding's grid
        stride = spec.stride or spec.patch
        entry["grid"] = [h // stride, w // stride]
        if spec.prefix_tokens:
            entry["tokens"] = spec.prefix_tokens + gh * gw
            entry["token_grid"] = [gh, gw]
        for key, module, pre in (
            ("auto", spec.auto_module, False),
            ("block_input", spec.last_block, True),
            ("block_output", spec.last_block, False),
            *spec.extra,
        ):
            if module is None:
                continue
            want = _hooked(model, module, xt, pre=pre)
            node, tensor, diff = _match(tensors, producer, want, order)
            shape = list(tensors[tensor].shape)
            entry[key] = {
                "node": node,
                "tensor": tensor,
                "shape": shape,
                "torch": f"{module} {'input' if pre else 'output'}",
                "max_abs_diff": diff,
            }
        per_size.append(entry)

    patch_embed, prefix_concat = _landmarks(m, spec, tensors, per_size[-1])
    blob = path.read_bytes()
    first = per_size[0]
    facts: dict[str, Any] = {
        "file": path.name,
        "architecture": spec.arch,
        "options": spec.options,
        "exporter": "dynamo" if spec.dynamo else "torchscript",
        "opset": OPSET,
        "input": {"name": INPUT_NAME, "shape": in_shape},
        "output": {"name": out.name, "shape": out_shape},
        "layout": spec.layout,
        "patch": spec.patch,
        "prefix_tokens": spec.prefix_tokens,
        "width": spec.width,
        "grid": first["grid"],
        "patch_embed": patch_embed,
        "prefix_concat": prefix_concat,
        "auto": first["auto"],
        "block_input": first.get("block_input"),
        "block_output": first.get("block_output"),
        **{key: first[key] for key, _, _ in spec.extra},
        "sizes": per_size,
        "onnx_vs_torch_max_abs_diff": diffs,
        "bytes": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    if "tokens" in first:
        facts["tokens"] = first["tokens"]
    return facts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=REPO / "models" / "tiny")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, timm {timm.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}, seed {args.seed}")  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    index_path = args.out_dir / "models.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    for name in args.models:
        spec = SPECS[name]
        model = build(name, args.seed)
        path = args.out_dir / f"{name}.onnx"
        with tempfile.TemporaryDirectory() as tmp:  # the dynamo exporter writes side files
            scratch = Path(tmp) / path.name
            export(spec, model, scratch)
            path.write_bytes(scratch.read_bytes())
        facts = describe(name, spec, model, path)
        facts["seed"] = args.seed
        index[path.name] = facts
        if facts["bytes"] > MAX_BYTES:
            raise RuntimeError(f"{path} is {facts['bytes']} bytes, over {MAX_BYTES}")
        auto = facts["auto"]
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in facts["onnx_vs_torch_max_abs_diff"].items())
        print(
            f"{path.name}: {facts['bytes']} bytes; layout {spec.layout}, grid {facts['grid']}, "
            f"tokens {facts.get('tokens', '-')}, prefix {spec.prefix_tokens}; auto "
            f"{auto['node']} -> {auto['tensor']} {auto['shape']}; onnx vs torch {diffs}"
        )
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    print(f"wrote {index_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
