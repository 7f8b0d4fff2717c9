#!/usr/bin/env python3
"""What the HTML report costs: the same folder explained with and without it.

Writes --images synthetic shapes images (tools/synthetic.py, 96x96), then runs
``onnxcam explain`` on them with a fast method (Score-CAM on the 8 most varied channels of
the shipped shapes CNN) with ``--report`` and ``--no-report``, alternating, --runs times each,
and prints the median wall times and their ratio.

Example::

    python tools/bench_report.py --images 1000 --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.synthetic import make_samples  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "shapes_cnn.onnx")
    p.add_argument("--channels", type=int, default=8, help="Score-CAM on this many channels")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp())
    data = work / "images"
    data.mkdir()
    for i, sample in enumerate(make_samples(args.images, seed=4321)):
        cv2.imwrite(str(data / f"{i:05d}.png"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
    times: dict[str, list[float]] = {"--report": [], "--no-report": []}
    for run in range(max(1, args.runs)):
        for flag in sorted(times, reverse=run % 2 == 1):  # alternate which goes first
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "onnxcam.cli", "explain", str(args.model), str(data),
                   "-o", str(out), "--channels", str(args.channels), "--threads", "2",
                   flag]  # fmt: skip
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[flag].append(time.perf_counter() - t0)
    # The same cost measured directly, free of the run-to-run noise of a shared machine: the
    # report's work replayed on the last run's results (thumbnails, then the page).
    import json

    import numpy as np

    from onnxcam.images import read_image
    from onnxcam.render import build_report, write_thumbnails

    out = work / "out"
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    inputs = [
        (r["files"]["json"][: -len(".json")], read_image(r["source"]),
         np.load(out / r["targets"][0]["files"]["npy"]))
        for r in records
    ]  # fmt: skip
    thumbs, pages = [], []
    for _ in range(max(1, args.runs)):
        shutil.rmtree(out / "thumbs", ignore_errors=True)
        t0 = time.perf_counter()
        for stem, rgb, saliency in inputs:  # what the run does per image, from memory
            write_thumbnails(out, stem, rgb, saliency, alpha=0.5)
        thumbs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        build_report(out)
        pages.append(time.perf_counter() - t0)
    thumbs_s, page_s = statistics.median(thumbs), statistics.median(pages)
    with_report = statistics.median(times["--report"])
    without = statistics.median(times["--no-report"])
    print(
        f"measured directly (medians of {args.runs}): thumbnails {thumbs_s:.2f} s, "
        f"page and contact sheet {page_s:.2f} s: {100 * (thumbs_s + page_s) / without:.1f} % "
        "of the run without the report"
    )
    print(
        f"{args.images} images: {without:.1f} s without the report, {with_report:.1f} s with "
        f"it (medians of {args.runs}); the report adds {100 * (with_report / without - 1):.1f} %"
    )
    print("runs:", {k: [round(v, 1) for v in vs] for k, vs in times.items()})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
