#!/usr/bin/env python3
"""Anytime Score-CAM under a time budget: what each budget buys, against the exact map.

For each image it times exact Score-CAM (median of --runs), then for each budget (and for a
quarter of the exact time) explains the image --runs times with ``budget_s`` and prints the
median wall time, how many masks ran, the fidelity estimate the record gives, and the true
Pearson correlation of the budgeted map with the exact one. Each session is warmed up first.

Example::

    python tools/bench_budget.py --model models/efficientnet_lite0.onnx \\
        --image examples/coffee.png examples/chelsea.png --budgets 0.1,0.25,0.5,1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from onnxcam import Explainer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/efficientnet_lite0.onnx"))
    p.add_argument("--image", type=Path, nargs="+", default=[Path("examples/coffee.png")])
    p.add_argument("--budgets", default="0.1,0.25,0.5,1", help="seconds, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def timed(explainer: Explainer, image: Path, runs: int):
    explainer.explain(image)  # warm-up: the first run of a session allocates its arena
    results, seconds = [], []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        results.append(explainer.explain(image))
        seconds.append(time.perf_counter() - t0)
    median = int(np.argsort(seconds)[len(seconds) // 2])
    return results[median], statistics.median(seconds), seconds


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    report = []
    for image in args.image:
        exact, exact_s, _ = timed(Explainer(args.model, threads=args.threads), image, args.runs)
        planned = exact.masked_passes
        print(f"{args.model.name} {image.name}: exact {exact_s:.2f} s, {planned} masked passes")
        rows = []
        quarter = round(exact_s / 4, 3)
        for budget, tag in [*((b, "") for b in budgets), (quarter, " (a quarter of exact)")]:
            explainer = Explainer(args.model, threads=args.threads, budget_s=budget)
            result, seconds, all_s = timed(explainer, image, args.runs)
            info = result.targets[0].info
            true = float(np.corrcoef(result.saliency.ravel(), exact.saliency.ravel())[0, 1])
            rows.append(
                {
                    "budget_s": budget,
                    "seconds": seconds,
                    "runs_s": all_s,
                    "masks_run": info["masks_run"],
                    "masks_planned": info["masks_planned"],
                    "fidelity_estimate": info.get("fidelity_estimate"),
                    "pearson_with_exact": true,
                    "fraction_of_exact_time": seconds / exact_s,
                }
            )
            print(
                f"  budget {budget:.3f} s{tag}: {seconds:.3f} s "
                f"({seconds / exact_s:.2f} of exact), {info['masks_run']}/"
                f"{info['masks_planned']} masks, fidelity estimate "
                f"{info.get('fidelity_estimate', float('nan')):.4f}, true r {true:.4f}"
            )
        report.append({"image": str(image), "exact_s": exact_s, "budgets": rows})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
