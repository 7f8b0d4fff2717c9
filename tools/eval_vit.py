#!/usr/bin/env python3
"""Does the map point at the object, on a vision transformer? The pointing game and the energy
in the box on fresh synthetic shapes images (tools/synthetic.py, a seed no training used), for
the trained ViT ``models/shapes_vit.onnx`` (tools/train_vit.py), per node choice and method.

Node choices (read from the graph, names are never used):

- ``auto``: the last attention's input after its normalisation (norm1 of the last block);
- ``block_out``: the last block's output (after its MLP): its patch tokens reach no output of
  a class-token head, so head-side methods see nothing change there;
- ``final_norm``: the map the class token is taken from;
- ``block_in``: the last block's input (before norm1);
- ``patch_embed``: the patch embedding, the last grid map before the tokens (what ``auto``
  picked before tokens were read).

A hit when the map's maximum lies within ``--tolerance`` pixels of the object's box; energy:
the share of the map's sum inside the box (against the box's share of the image).

Example::

    python tools/eval_vit.py --images 200 --json vit_eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxcam import Explainer, graph  # noqa: E402
from onnxcam.errors import OnnxCamError  # noqa: E402
from onnxcam.layouts import TokenLayout  # noqa: E402
from onnxcam.methods.recipro import Recipro  # noqa: E402
from tools.synthetic import make_samples  # noqa: E402

SEED = 4242  # fresh: not a training or test seed
METHODS = {
    "scorecam": ("scorecam", None),
    "ablation": ("ablation", None),
    "recipro": ("recipro", None),
    "recipro-openvino": ("recipro", Recipro.presets["openvino"]),
    "eigencam": ("eigencam", None),
    "rise": ("rise", None),
    "groupcam": ("groupcam", None),
    "activation": ("activation", None),
}


def node_choices(path: Path) -> dict[str, str]:
    """Each node choice's tensor (see the module docstring)."""
    model = graph.load_model(path)
    index = graph.GraphIndex(model)
    auto = graph.auto_choice(index).candidate
    cut = graph.block_cut(index)
    cands = graph.spatial_candidates(model, index)
    tokens = [c for c in cands if isinstance(c.layout, TokenLayout) and c.layout.prefix]
    wide = [c for c in tokens if c.channels == auto.channels]
    above_head = [c for c in wide if c.index > auto.index]
    first = min(c.index for c in tokens)
    grids = [c for c in cands if not isinstance(c.layout, TokenLayout) and c.index < first]
    choices = {"auto": auto.tensor, "patch_embed": grids[-1].tensor}
    if cut is not None:
        choices["block_in"] = cut[0].tensor
    adds = [c for c in above_head if c.op_type == "Add"]
    if adds:
        choices["block_out"] = adds[-1].tensor
    if above_head:
        choices["final_norm"] = above_head[-1].tensor
    return choices


def score(samples: list, maps: list[np.ndarray], tolerance: int) -> dict[str, float]:
    hits, energy, shares = [], [], []
    for sample, sal in zip(samples, maps, strict=True):
        x0, y0, x1, y1 = sample.box
        py, px = np.unravel_index(int(np.argmax(sal)), sal.shape)
        hits.append(x0 - tolerance <= px < x1 + tolerance and y0 - tolerance <= py < y1 + tolerance)
        total = float(sal.sum())
        energy.append(float(sal[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0)
        shares.append((x1 - x0) * (y1 - y0) / sal.size)
    return {
        "pointing": float(np.mean(hits)),
        "energy": float(np.mean(energy)),
        "box_share": float(np.mean(shares)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", type=Path, default=ROOT / "models" / "shapes_vit.onnx")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--tolerance", type=int, default=3, help="pixels around the box")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", nargs="*", default=list(METHODS))
    p.add_argument("--nodes", nargs="*", help="node choices (default: all)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    samples = make_samples(args.images, seed=args.seed)
    images = [s.image for s in samples]
    choices = node_choices(args.model)
    wanted = args.nodes or list(choices)
    rows = []
    for method in args.methods:
        name, options = METHODS[method]
        for choice in wanted:
            if choice not in choices or (method == "recipro-openvino" and choice != "auto"):
                continue
            node = "auto" if method == "recipro-openvino" else choices[choice]
            start = time.perf_counter()
            try:
                explainer = Explainer(
                    args.model, method=name, options=options, node=node, threads=args.threads
                )
                results = [r for _, r in explainer.explain_many(images, group=32)]
            except OnnxCamError as exc:
                print(f"{method:17s} {choice:12s} {exc}")
                continue
            good = [(s, r) for s, r in zip(samples, results, strict=True) if hasattr(r, "saliency")]
            right = float(np.mean([r.class_index == s.label for s, r in good]))
            row = {
                "method": method,
                "node": choice,
                "tensor": node,
                **score([s for s, _ in good], [r.saliency for _, r in good], args.tolerance),
                "accuracy": right,
                "images": len(good),
                "seconds": time.perf_counter() - start,
            }
            rows.append(row)
            print(
                f"{method:17s} {choice:12s} pointing {row['pointing']:.3f}  energy "
                f"{row['energy']:.3f} (box share {row['box_share']:.3f})  "
                f"{row['seconds']:.1f} s",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"nodes": choices, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
