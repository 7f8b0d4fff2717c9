#!/usr/bin/env python3
"""Soak: many explanations in one process, with the resident memory after each milestone.

Memory that grows with the number of calls (a cache that is never emptied, a session per
call) shows here long before it hurts a service. Each call explains one of the shipped
photos in turn (or a synthetic image) with a fast budget, so 1,000 calls take minutes.

Example::

    python tools/soak.py --model models/efficientnet_lite0.onnx --calls 1000 --budget 0.05
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from onnxcam import Explainer

MILESTONES = (1, 10, 100, 250, 500, 750, 1000, 2000, 5000)


def rss_mb() -> float:
    """Current resident memory (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no /proc/self/status (Linux only)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/efficientnet_lite0.onnx"))
    p.add_argument("--images", type=Path, nargs="*", default=sorted(Path("examples").glob("*.png")))
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--budget", type=float, default=0.05, help="seconds per call (anytime mode)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    explainer = Explainer(args.model, threads=args.threads, budget_s=args.budget)
    images = list(args.images) or [np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8)]
    points = []
    t0 = time.perf_counter()
    for call in range(1, args.calls + 1):
        result = explainer.explain(images[call % len(images)], target="top:2")
        assert np.isfinite(result.saliency).all()
        if call in MILESTONES or call == args.calls:
            point = {"calls": call, "rss_mb": rss_mb(), "seconds": time.perf_counter() - t0}
            points.append(point)
            print(f"after {call:>5} calls: RSS {point['rss_mb']:.0f} MB, {point['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(points, indent=2) + "\n")


if __name__ == "__main__":
    main()
