#!/usr/bin/env python3
"""Reference maps of the two peers on a vision transformer, for onnxcam's ViT parity checks.

Four steps, in three virtual environments (OpenVINO XAI needs numpy < 2)::

    # torch venv (torch, timm, grad-cam, onnx, onnxruntime, opencv; onnxcam is read from the repo)
    python tools/parity_vit.py reference build/parity-vit --model deit
    # OpenVINO XAI's venv (pip install openvino-xai==1.1.0)
    python tools/parity_vit.py ovxai build/parity-vit --runs 20
    # onnxcam's venv: onnxcam's maps of the same model and input, and its Recipro-CAM time
    python tools/parity_vit.py onnxcam build/parity-vit
    # any venv with numpy: Pearson r of every pair
    python tools/parity_vit.py compare build/parity-vit

``reference`` builds the model of ``tools/export_transformers.py`` named ``--model`` (random
weights from ``--seed``), exports it to ``model.onnx`` in the folder, resizes ``--image`` to
224×224 (``tools/gradcam_ref.py``'s ``prepare_image``: onnxcam's own resize and ``imagenet``
normalisation) and saves ``rgb.npy`` (the resized uint8 RGB image, which onnxcam should be
given so that its input resize is the identity) and ``input.npy`` (the float32 tensor both
sides see). Then, for the class PyTorch ranks first (or ``--target``):

- ``gradcam_scorecam.npy``: pytorch-grad-cam's ``ScoreCAM`` (224×224 float32) with its
  documented ViT recipe (``usage_examples/vit_example.py``): target layer
  ``model.blocks[-1].norm1`` and ``reshape_transform`` dropping the prefix tokens and reshaping
  to the grid, ``ClassifierOutputTarget(class)``, batch 16. The recipe drops exactly one token;
  the default model ``deit`` is the non-distilled DeiT (one CLS token, as the recipe expects);
  for ``deit_distilled`` and ``dinov2_reg4`` the transform drops 2 and 5 tokens, which the
  recipe as published does not;
- ``acts.npy``: the hooked token map ``(1, N, D)``;
- ``recipro_torch.npz``: OpenVINO XAI 1.1's ``ViTReciproCAM`` with its defaults re-implemented
  on the PyTorch model (see :func:`ovxai_vit_recipro`): ``cells`` (classes, h, w) the raw logit
  of every class for each cell's mosaic, and ``cells_prefix_aware`` the same with the patch
  tokens sliced after *all* prefix tokens (what OpenVINO XAI should do; equal for one CLS);
- ``meta.json``: model, class, grid, prefix tokens, the ONNX tensors of ``blocks[-1].norm1``
  and of the last block's input, and the seconds each reference took.

``ovxai`` reads ``model.onnx`` with OpenVINO and runs ``openvino_xai``'s ``ViTReciproCAM`` with
its defaults (Gaussian 3×3 mosaic, CLS token kept, ``final_norm=True``, ``k=1``, embedded
scaling) on ``input.npy``, and saves ``ovxai.npz``: ``scaled`` (the model's uint8 map of every
class, feature resolution), ``cells`` (a second insertion with ``embed_scaling=False``: the raw
per-cell logits), ``explained`` (``Explainer(...)(x, targets=[class], colormap=False)``: resized
to 224×224 and rescaled, what a user gets) and the timings (median milliseconds of one
inference of the original model and of the model with the XAI branch, runs taken in turns);
it prints which nodes the method found and what ``Explainer``'s automatic method choice does on
this model. ``compare`` prints the Pearson r of each pair.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
GAUSSIAN = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16.0  # OpenVINO XAI's
MODELS = ("deit", "deit_distilled", "vit", "dinov2_reg4", "deit_tiny")
ARCH = {  # the models export_transformers.build makes that are not fixtures
    "deit": "timm deit_tiny_patch16_224 reduced as vit.onnx (depth 2, dim 64, 2 heads)",
    "deit_tiny": "timm deit_tiny_patch16_224, full size (depth 12, dim 192, 3 heads)",
}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel() - np.mean(a)
    b = np.asarray(b, np.float64).ravel() - np.mean(b)
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def minmax(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return (a - a.min()) / (a.max() - a.min())


def gaussian_masks(h: int, w: int) -> np.ndarray:
    """``(h*w, h, w)``: mosaic ``k = i*w + j`` keeps cell (i, j) with weight 1/4, its four
    edge neighbours with 1/8 and its corners with 1/16 (cut at the border, not renormalised),
    as OpenVINO XAI 1.1 builds it."""
    padded = np.zeros((h * w, h + 2, w + 2), np.float32)
    for i in range(h):
        for j in range(w):
            padded[i * w + j, i : i + 3, j : j + 3] = GAUSSIAN
    return padded[:, 1:-1, 1:-1]


def ovxai_vit_recipro(model, x, *, prefix: int, grid: tuple[int, int], ov_slice: bool = True):
    """OpenVINO XAI 1.1 ``ViTReciproCAM`` (defaults) on a timm ``VisionTransformer``, in torch.

    With ``X`` the last block's input and ``Y = norm1(X)`` (clean pass, batch 1), each of the
    ``h*w`` mosaics ``M(T)`` keeps T's first ``n`` tokens (``n = N - h*w``: every prefix token)
    and replaces the patch tokens by ``T[:, s : s + h*w]`` reshaped to the grid and multiplied
    by the cell's Gaussian 3×3 weights (:func:`gaussian_masks`); OpenVINO XAI takes ``s = 1``
    (``ov_slice``), which is right only for one prefix token. The last block then runs with
    ``M(X)`` on its skip path and ``M(Y)`` as the attention's input (not ``norm1(M(X))``), and
    the rest of the model (MLP half of the block, final norm, head) follows. Returns the raw
    logits ``(classes, h, w)``: cell ``(i, j)`` holds mosaic ``i*w + j``'s logits.
    """
    import torch

    h, w = grid
    block = model.blocks[-1]
    seen = {}
    handle = block.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        model(torch.from_numpy(x))
    handle.remove()
    masks = torch.from_numpy(gaussian_masks(h, w))[..., None]  # (hw, h, w, 1)

    def mosaic(t: torch.Tensor) -> torch.Tensor:
        start = 1 if ov_slice else prefix
        patches = t[:, start : start + h * w].reshape(1, h, w, t.shape[-1])
        cells = (patches * masks).reshape(h * w, h * w, t.shape[-1])
        return torch.cat([t[:, :prefix].expand(h * w, -1, -1), cells], dim=1)

    with torch.no_grad():
        tokens = seen["x"]
        y = mosaic(tokens) + block.drop_path1(block.ls1(block.attn(mosaic(block.norm1(tokens)))))
        y = y + block.drop_path2(block.ls2(block.mlp(block.norm2(y))))
        logits = model.forward_head(model.norm(y))
    return logits.numpy().T.reshape(-1, h, w)


def reference(args: argparse.Namespace) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.path[:0] = [str(TOOLS), str(ROOT)]
    import onnx
    import torch
    from export_transformers import SPECS, build, export
    from gradcam_ref import prepare_image

    torch.set_num_threads(args.threads)
    out: Path = args.folder
    out.mkdir(parents=True, exist_ok=True)
    model = build(args.model, args.seed)
    spec = SPECS.get(args.model) or dataclasses.replace(SPECS["vit"], arch=ARCH[args.model])
    prefix = model.num_prefix_tokens
    grid = tuple(model.patch_embed.grid_size)
    onnx_path = out / "model.onnx"
    export(spec, model, onnx_path)

    rgb, x = prepare_image(args.image, 224, "imagenet")
    np.save(out / "rgb.npy", rgb)
    np.save(out / "input.npy", x)
    layer = model.blocks[-1].norm1
    seen = {}
    handle = layer.register_forward_hook(lambda m, a, o: seen.setdefault("acts", o))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()[0]
    handle.remove()
    acts = seen["acts"].numpy()
    np.save(out / "acts.npy", acts)
    target = int(np.argmax(logits)) if args.target is None else args.target

    def reshape_transform(tensor, height=grid[0], width=grid[1]):
        # pytorch-grad-cam's usage_examples/vit_example.py, with the prefix count a parameter
        result = tensor[:, prefix:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    scorecam_s = None
    if not args.skip_scorecam:
        scorecam, scorecam_s = _scorecam(model, layer, x, target, reshape_transform)
        np.save(out / "gradcam_scorecam.npy", scorecam)

    t0 = time.perf_counter()
    cells = ovxai_vit_recipro(model, x, prefix=prefix, grid=grid)
    recipro_s = time.perf_counter() - t0
    aware = ovxai_vit_recipro(model, x, prefix=prefix, grid=grid, ov_slice=False)
    np.savez(out / "recipro_torch.npz", cells=cells, cells_prefix_aware=aware)

    tensors = _onnx_tensors(onnx, onnx_path, model, x)
    meta = {
        "model": args.model,
        "architecture": spec.arch,
        "seed": args.seed,
        "image": str(args.image),
        "class": target,
        "logits": logits.tolist(),
        "prefix_tokens": prefix,
        "grid": list(grid),
        "layer": "model.blocks[-1].norm1",
        "reshape_transform": f"tensor[:, {prefix}:, :] -> (B, {grid[0]}, {grid[1]}, D) -> NCHW",
        "onnx": tensors,
        "gradcam_scorecam_s": scorecam_s,
        "recipro_torch_s": recipro_s,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(
        f"{args.model} (seed {args.seed}): class {target}, prefix {prefix}, grid {grid}; "
        f"ScoreCAM {scorecam_s or 0:.2f} s; OpenVINO XAI-style ViT Recipro-CAM in torch "
        f"{recipro_s:.2f} s; norm1 tensor {tensors['norm1']}, block input "
        f"{tensors['block_input']}; wrote {out}"
    )


def _scorecam(model, layer, x, target, reshape_transform) -> tuple[np.ndarray, float]:
    """pytorch-grad-cam ``ScoreCAM`` with ``reshape_transform`` (``gradcam_ref`` has none)."""
    import pytorch_grad_cam
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = pytorch_grad_cam.ScoreCAM(
        model=model, target_layers=[layer], reshape_transform=reshape_transform
    )
    with cam:
        cam.batch_size = 16
        t0 = time.perf_counter()
        out = cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(target)])
        seconds = time.perf_counter() - t0
    return np.asarray(out[0], np.float32), seconds


def _onnx_tensors(onnx, path: Path, model, x: np.ndarray) -> dict[str, str]:
    """The ONNX tensors equal to ``blocks[-1].norm1``'s output and the last block's input."""
    sys.path.insert(0, str(TOOLS))
    import torch
    from export_transformers import _all_tensors, _hooked, _match

    m = onnx.load(str(path))
    order = [o for n in m.graph.node for o in n.output]
    tensors, producer = _all_tensors(path, x)
    found = {}
    for key, module, pre in (("norm1", "blocks.1.norm1", False), ("block_input", "blocks.1", True)):
        module = module.replace("1", str(len(model.blocks) - 1), 1)
        want = _hooked(model, module, torch.from_numpy(x), pre=pre)
        found[key] = _match(tensors, producer, want, order)[1]
    return found


def ovxai(args: argparse.Namespace) -> None:
    import openvino as ov
    import openvino_xai as xai
    from openvino_xai.inserter.model_parser import IRParserCls, ModelType
    from openvino_xai.methods.white_box.recipro_cam import ViTReciproCAM

    folder: Path = args.folder
    meta = json.loads((folder / "meta.json").read_text())
    x = np.load(folder / "input.npy")
    target = int(meta["class"])
    core = ov.Core()
    path = str(folder / "model.onnx")

    # the nodes ViTReciproCAM finds with its defaults (k=1, final_norm=True: the 3rd Add)
    model = core.read_model(path)
    add = IRParserCls.get_target_node(model, ModelType.TRANSFORMER, None, 1 * 2 + 1)
    consumers = IRParserCls.get_post_target_node(
        model, ModelType.TRANSFORMER, add.get_friendly_name()
    )
    chain, node = [], next(n for n in consumers if n.get_type_name() != "Add")
    while node.get_type_name() != "Add":
        chain.append(f"{node.get_type_name()} {node.get_friendly_name()}")
        node = next(iter(node.output(0).get_target_inputs())).get_node()
    norm_add = node
    shape = add.get_output_partial_shape(0)
    tokens = shape[1].get_length()
    h = int((tokens - 1) ** 0.5)
    found = {
        "target_add": add.get_friendly_name(),
        "target_add_consumers": [f"{n.get_type_name()} {n.get_friendly_name()}" for n in consumers],
        "norm_chain": chain,
        "norm_output_add": norm_add.get_friendly_name(),
        "tokens": tokens,
        "grid": [h, h],
        "num_aux_tokens": tokens - h * h,
        "patch_slice": [1, h * h + 1],
    }
    print(json.dumps(found, indent=2))

    def method(scaled: bool) -> ViTReciproCAM:
        return ViTReciproCAM(core.read_model(path), embed_scaling=scaled)

    scaled_method = method(True)
    raw_method = method(False)
    scaled = scaled_method.model_forward(x, preprocess=False)["saliency_map"]
    cells = raw_method.model_forward(x, preprocess=False)["saliency_map"]
    explainer = xai.Explainer(
        core.read_model(path),
        task=xai.Task.CLASSIFICATION,
        explain_method=xai.Method.VITRECIPROCAM,
    )
    explained = explainer(x, targets=[target], colormap=False).saliency_map[target]

    # what Explainer does with no method named (its factory tries the CNN ReciproCAM first)
    try:
        auto = xai.Explainer(core.read_model(path), task=xai.Task.CLASSIFICATION)
        auto_method = type(auto.method).__name__
        auto_map = auto(x, targets=[target], colormap=False).saliency_map[target]
    except Exception as exc:
        auto_method, auto_map = f"fails: {type(exc).__name__}: {exc}", None

    original = core.compile_model(core.read_model(path), "CPU")
    req_original = original.create_infer_request()
    req_xai = scaled_method._model_compiled.create_infer_request()
    sys.path.insert(0, str(TOOLS))
    from bench_ovxai import medians_s

    base_s, xai_s = medians_s(
        [lambda: req_original.infer({0: x}), lambda: req_xai.infer({0: x})], args.runs
    )
    base_ms, xai_ms = base_s * 1e3, xai_s * 1e3
    t0 = time.perf_counter()
    explainer(x, targets=[target], colormap=False)
    explain_ms = (time.perf_counter() - t0) * 1e3
    saved = {
        "scaled": scaled[0],
        "cells": cells[0],
        "explained": explained,
        "class": target,
        "original_ms": base_ms,
        "with_xai_ms": xai_ms,
        "explain_call_ms": explain_ms,
    }
    if auto_map is not None:
        saved["auto_explained"] = auto_map
    np.savez(folder / "ovxai.npz", **saved)
    (folder / "ovxai.json").write_text(
        json.dumps({**found, "auto_method": auto_method, "openvino": ov.get_version()}, indent=2)
    )
    print(
        f"openvino {ov.get_version()}: map {scaled.shape} {scaled.dtype}, explained "
        f"{explained.shape} {explained.dtype}; one inference {base_ms:.2f} ms, with the XAI "
        f"branch {xai_ms:.2f} ms ({xai_ms / base_ms:.1f}×), Explainer call {explain_ms:.1f} ms; "
        f"Explainer's own method choice: {auto_method}"
    )


def ours(args: argparse.Namespace) -> None:
    """onnxcam's maps of the same model and input (onnxcam's venv): ``onnxcam.npz`` with
    ``scorecam`` (``--compat grad-cam`` at the auto node, 224×224), ``recipro_cells`` (the
    ``--method recipro --compat openvino`` scores of each cell, feature resolution) and
    ``recipro`` (224×224), and the median seconds of a Recipro-CAM call."""
    import statistics

    sys.path.insert(0, str(ROOT))
    from onnxcam import Explainer
    from onnxcam.methods.recipro import Recipro

    folder: Path = args.folder
    target = int(json.loads((folder / "meta.json").read_text())["class"])
    x = np.load(folder / "input.npy")
    model = folder / "model.onnx"
    scorecam = Explainer(model, method="scorecam", compat="grad-cam", threads=args.threads)
    score_map = scorecam.explain(tensor=x, target=target).targets[0].saliency_input
    recipro = Explainer(model, method="recipro", options=Recipro.presets["openvino"],
                        threads=args.threads)  # fmt: skip
    fwd = recipro.forward(tensor=x)
    cells = recipro.method_maps(fwd, recipro.bind(fwd, target), at="feature")[0].map
    seconds = []
    for _ in range(args.runs):
        start = time.perf_counter()
        result = recipro.explain(tensor=x, target=target)
        seconds.append(time.perf_counter() - start)
    np.savez(folder / "onnxcam.npz", scorecam=score_map, recipro_cells=cells,
             recipro=result.targets[0].saliency_input)  # fmt: skip
    nodes = ",".join(c.tensor for c in recipro.candidates)
    print(f"onnxcam: recipro --compat openvino at {nodes}: median "
          f"{statistics.median(seconds) * 1000:.0f} ms of {args.runs}")  # fmt: skip


def compare(args: argparse.Namespace) -> None:
    folder: Path = args.folder
    meta = json.loads((folder / "meta.json").read_text())
    target = int(meta["class"])
    torch_cells = np.load(folder / "recipro_torch.npz")
    rows = []
    if (folder / "ovxai.npz").exists():
        ov_maps = np.load(folder / "ovxai.npz")
        ov_cells = ov_maps["cells"]
        rows += [
            ("OpenVINO XAI raw cells vs the torch re-implementation", ov_cells[target],
             torch_cells["cells"][target]),
            ("OpenVINO XAI raw cells vs the prefix-aware re-implementation", ov_cells[target],
             torch_cells["cells_prefix_aware"][target]),
            ("OpenVINO XAI uint8 map vs its raw cells, min-max", ov_maps["scaled"][target],
             minmax(ov_cells[target])),
        ]  # fmt: skip
        diff = np.abs(ov_cells - torch_cells["cells"]).max()
        print(
            f"class {target}; OpenVINO XAI raw cells vs torch (every class): max |diff| {diff:.3g}"
        )
        if (folder / "onnxcam.npz").exists():
            mine = np.load(folder / "onnxcam.npz")
            rows += [
                ("onnxcam recipro cells vs OpenVINO XAI raw cells", mine["recipro_cells"],
                 ov_cells[target]),
                ("onnxcam recipro cells vs the prefix-aware re-implementation",
                 mine["recipro_cells"], torch_cells["cells_prefix_aware"][target]),
                ("onnxcam recipro map vs OpenVINO XAI's explained map", mine["recipro"],
                 ov_maps["explained"]),
            ]  # fmt: skip
    if (folder / "onnxcam.npz").exists() and (folder / "gradcam_scorecam.npy").exists():
        rows.append(
            ("onnxcam scorecam vs pytorch-grad-cam ScoreCAM", np.load(folder / "onnxcam.npz")[
                "scorecam"], np.load(folder / "gradcam_scorecam.npy")),
        )  # fmt: skip
    for label, a, b in rows:
        print(f"{label}: Pearson r {pearson(a, b):.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    steps = parser.add_subparsers(dest="step", required=True)
    step = steps.add_parser("reference", help="model, input and torch references (torch venv)")
    step.add_argument("folder", type=Path)
    step.add_argument("--model", default="deit", choices=MODELS)
    step.add_argument("--seed", type=int, default=0)
    step.add_argument("--image", type=Path, default=ROOT / "examples" / "chelsea.png")
    step.add_argument("--target", type=int, default=None, help="class (default: the argmax)")
    step.add_argument("--threads", type=int, default=2)
    step.add_argument(
        "--skip-scorecam", action="store_true", help="no ScoreCAM (for timing a large model)"
    )
    step = steps.add_parser("ovxai", help="OpenVINO XAI's ViTReciproCAM (its own venv)")
    step.add_argument("folder", type=Path)
    step.add_argument("--runs", type=int, default=20)
    step = steps.add_parser("compare", help="Pearson r of the saved maps (any venv)")
    step.add_argument("folder", type=Path)
    step = steps.add_parser("onnxcam", help="onnxcam's maps and Recipro-CAM time (its venv)")
    step.add_argument("folder", type=Path)
    step.add_argument("--runs", type=int, default=7)
    step.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    {"reference": reference, "ovxai": ovxai, "onnxcam": ours, "compare": compare}[args.step](args)


if __name__ == "__main__":
    main()
