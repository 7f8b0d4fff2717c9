#!/usr/bin/env python3
"""Parity check: onnxcam against pytorch-grad-cam and torchcam on the same weights and images.

Vision transformers (Score-CAM with pytorch-grad-cam's ViT recipe, Recipro-CAM against
OpenVINO XAI's ``ViTReciproCAM``) have their own steps in ``tools/parity_vit.py``.

``--method scorecam`` (default), ``ablation`` and ``eigencam`` run onnxcam with ``--compat
grad-cam`` against pytorch-grad-cam's ``ScoreCAM``, ``AblationCAM`` and ``EigenCAM``; ``--method
cam`` runs onnxcam with ``--compat torchcam`` against torchcam's ``CAM`` (needs ``torchcam``).

For a torchvision model with random weights (``tools/export_torchvision.py``, same seed on both
sides) and one or more images, this script:

1. builds the PyTorch model and exports it to ONNX in a temporary folder;
2. resizes each image to 224×224 once (area averaging when shrinking, as onnxcam does) and
   normalises it with onnxcam's own ``to_tensor`` (``imagenet`` preset), so both sides get the
   same input tensor;
3. runs the reference (for Score-CAM: pytorch-grad-cam ``ScoreCAM``) hooked on the last
   feature block (``model.layer4[-1]`` for ResNets, whose output is the block's final ReLU)
   for the class ``c`` that PyTorch ranks first, with ``ClassifierOutputTarget(c)`` (raw
   logit) and its default batch of 16;
4. runs onnxcam with the matching ``--compat`` preset on the ONNX file for the same class, on
   the node that ``onnxcam.graph.auto_candidate`` picks (the last Relu before
   GlobalAveragePool), given the already-resized image so that onnxcam's final resize is the
   identity;
5. prints the Pearson correlation of the two maps, their max absolute difference, both wall
   times, and diagnostics (logit and feature-map differences between PyTorch and ONNX Runtime)
   that tell where a disagreement starts.

Exit status 1 when a correlation is below ``--min-corr`` (default 0.999; the issue's target
for Ablation-CAM and Eigen-CAM is 0.99).

Needs ``torch``, ``torchvision``, ``grad-cam``, ``onnx``, ``onnxruntime`` and onnxcam. Example::

    python tools/parity.py --model resnet18 --image examples/chelsea.png examples/coffee.png
    python tools/parity.py --method ablation --min-corr 0.99 --image examples/*.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
MODELS = ("resnet18", "resnet50", "mobilenet_v3_large")  # export_torchvision.MODELS
METHODS = ("scorecam", "ablation", "eigencam", "cam")  # gradcam_ref.REFERENCES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="resnet18", choices=MODELS)
    p.add_argument(
        "--method", default="scorecam", choices=("scorecam", "ablation", "eigencam", "cam")
    )
    p.add_argument("--image", type=Path, nargs="+", default=[Path("examples/chelsea.png")])
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed before construction")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime CPU threads")
    p.add_argument("--target", type=int, default=None, help="class (default: PyTorch's argmax)")
    p.add_argument("--batch-size", type=int, default=16, help="pytorch-grad-cam masked batch")
    p.add_argument("--onnx-batch-size", type=int, default=None, help="default: onnxcam's")
    p.add_argument("--min-corr", type=float, default=0.999)
    p.add_argument("--keep-onnx", type=Path, default=None, help="write the ONNX file here")
    p.add_argument("--save-maps", type=Path, default=None, help="folder for both maps (.npy)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--progress", action="store_true", help="show pytorch-grad-cam's tqdm bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    if not args.progress:
        os.environ.setdefault("TQDM_DISABLE", "1")
    sys.path.insert(0, str(TOOLS))

    import torch
    from export_torchvision import build_torchvision, export_onnx, target_layer
    from gradcam_ref import REFERENCES

    from onnxcam import Explainer, graph

    torch.set_num_threads(args.threads)
    model = build_torchvision(args.model, args.seed)
    layer = target_layer(model)

    with tempfile.TemporaryDirectory(prefix="onnxcam-parity-") as tmp:
        onnx_path = args.keep_onnx or Path(tmp) / f"{args.model}.onnx"
        t0 = time.perf_counter()
        export_onnx(model, onnx_path, name=args.model, seed=args.seed)
        export_s = time.perf_counter() - t0
        cand = graph.auto_candidate(graph.load_model(onnx_path))
        t0 = time.perf_counter()
        explainer = Explainer(
            onnx_path,
            node=cand.node or cand.tensor,
            preset="imagenet",
            method=args.method,
            compat=REFERENCES[args.method][2],
            threads=args.threads,
            device="cpu",
            batch_size=args.onnx_batch_size,
        )
        session_s = time.perf_counter() - t0
        library, reference, compat = REFERENCES[args.method]
        print(
            f"{args.method} --compat {compat} vs {library} {reference}; "
            f"model {args.model} (seed {args.seed}, threads {args.threads}): exported in "
            f"{export_s:.1f} s; node {cand.label} ({cand.op_type}, {cand.tensor}, "
            f"shape {cand.shape}); onnxcam session {session_s:.2f} s, "
            f"batch {explainer.batch_size()}, provider {explainer.provider}"
        )
        records = [_compare(args, image, model, layer, explainer) for image in args.image]
        del explainer

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=2) + "\n")
    bad = [r for r in records if not r["pearson"] >= args.min_corr]
    for r in bad:
        print(
            f"FAIL {r['method']} {r['model']} {r['image']}: "
            f"pearson {r['pearson']:.6f} < {args.min_corr}"
        )
    return 1 if bad else 0


def _compare(args: argparse.Namespace, image: Path, model, layer, explainer) -> dict:
    """Both maps for one image, compared; prints two lines and returns the numbers."""
    import numpy as np
    import torch
    from gradcam_ref import max_abs_diff, pearson, prepare_image, reference_map

    rgb, x = prepare_image(image)

    # PyTorch's clean pass: logits, class and the hooked feature map.
    captured = {}
    handle = layer.register_forward_hook(lambda m, i, o: captured.__setitem__("acts", o))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()[0]
    handle.remove()
    acts_torch = captured["acts"].numpy()[0]
    target = int(np.argmax(logits)) if args.target is None else args.target

    ref, gradcam_s = reference_map(args.method, model, layer, x, target, batch_size=args.batch_size)

    t0 = time.perf_counter()
    result = explainer.explain(rgb, target=target)
    onnxcam_s = time.perf_counter() - t0
    ours = result.saliency
    fwd = explainer.forward(rgb)
    logits_ort = fwd.outputs[result.targets[0].info["output"]][0]

    record = {
        "model": args.model,
        "method": args.method,
        "seed": args.seed,
        "image": str(image),
        "class": target,
        "class_ort": int(np.argmax(logits_ort)),
        "pearson": pearson(ref, ours),
        "max_abs_diff": max_abs_diff(ref, ours),
        "mean_abs_diff": float(np.abs(ref.astype(np.float64) - ours).mean()),
        "gradcam_s": gradcam_s,
        "onnxcam_s": onnxcam_s,
        "onnxcam_timings": result.timings,
        "masked_passes_onnxcam": result.masked_passes,
        "channels": result.channels_total,
        "threads": args.threads,
        "shape_gradcam": list(ref.shape),
        "shape_onnxcam": list(ours.shape),
        "input_identical": bool(np.array_equal(fwd.x, x)),
        "logits_max_abs_diff": float(np.abs(logits_ort - logits).max()),
        "logit_spread": float(logits.max() - logits.min()),
        "acts_max_abs_diff": float(np.abs(fwd.acts - acts_torch).max()),
        "acts_max": float(acts_torch.max()),
        "constant_channels": int(
            (np.ptp(acts_torch.reshape(len(acts_torch), -1), axis=1) == 0).sum()
        ),
    }
    print(
        f"  {image}: class {target} (ORT argmax {record['class_ort']}), "
        f"pearson {record['pearson']:.7f} (1 - r = {1 - record['pearson']:.2g}), "
        f"max|diff| {record['max_abs_diff']:.3g}, "
        f"mean|diff| {record['mean_abs_diff']:.3g}; reference {gradcam_s:.2f} s, "
        f"onnxcam {onnxcam_s:.2f} s ({result.masked_passes} masked passes, "
        f"{result.stats.get('head_passes', 0)} head passes)"
    )
    print(
        f"    same input tensor: {record['input_identical']}; logits max|diff| "
        f"{record['logits_max_abs_diff']:.3g} (spread {record['logit_spread']:.3g}); feature "
        f"map max|diff| {record['acts_max_abs_diff']:.3g} (max {record['acts_max']:.3g}); "
        f"constant channels {record['constant_channels']}"
    )
    if args.save_maps:
        args.save_maps.mkdir(parents=True, exist_ok=True)
        stem = f"{args.model}_{args.method}_{Path(image).stem}"
        np.save(args.save_maps / f"{stem}_gradcam.npy", ref)
        np.save(args.save_maps / f"{stem}_onnxcam.npy", ours)
    return record


if __name__ == "__main__":
    sys.exit(main())
