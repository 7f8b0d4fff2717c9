"""Benchmark the methods against exact Score-CAM on one model and image, in one process.

For each method (``--methods``) it explains the image once to warm up, then ``--runs`` times,
and prints the median wall time and its ratio to exact ``scorecam``'s median, with the passes
the method ran (masked passes of the whole model, head passes of the model after the node).
It also prints what the head after the node costs: its node count against the whole model's,
and the median time per row of a batched head pass against a batched whole-model pass at the
same batch size.

Example::

    python tools/bench_methods.py --model models/efficientnet_lite0.onnx \\
        --image examples/coffee.png --threads 2 --runs 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

METHODS = "scorecam,groupcam,ablation,recipro,cam,eigencam"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/efficientnet_lite0.onnx"))
    p.add_argument("--node", default="auto")
    p.add_argument("--image", type=Path, default=Path("examples/coffee.png"))
    p.add_argument("--methods", default=METHODS, help="comma-separated; scorecam is the base")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="default: onnxcam's choice")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def _median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def head_cost(explainer, image: Path, runs: int) -> str:
    """The head's nodes and the time per row of a batched head pass against a batched
    whole-model pass."""
    import numpy as np

    head = explainer.prepared.head
    if head is None:
        return f"no head: {explainer.prepared.head_note}"
    fwd = explainer.forward(image)
    batch = explainer.batch_size()
    feed = {}
    for cand, maps in zip(explainer.candidates, fwd.features, strict=True):
        shaped = cand.layout.from_chw(maps[None])[0]
        feed[head.feeds[cand.tensor]] = np.repeat(shaped[None], batch, axis=0)
    for name in head.side:
        feed[head.feeds[name]] = np.repeat(fwd.side[name], batch, axis=0)
    stage = explainer.stage(_head_method())
    outputs = [o.name for o in explainer.prepared.outputs]
    inputs = np.repeat(fwd.x, batch, axis=0)
    stage.session.run(feed, outputs)
    explainer.session.run(inputs, outputs)
    head_s = _median_time(lambda: stage.session.run(feed, outputs), max(runs, 5)) / batch
    model_s = _median_time(lambda: explainer.session.run(inputs, outputs), max(runs, 5)) / batch
    clean = f", side inputs {', '.join(head.side)}" if head.side else ""
    return (
        f"head: {head.nodes} of {head.total} nodes{clean}; per row at batch {batch}: head "
        f"{1000 * head_s:.3f} ms, whole model {1000 * model_s:.3f} ms "
        f"({head_s / model_s:.3f} of a forward pass)"
    )


def _head_method():
    from onnxcam.methods import create

    return create("ablation")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # numpy's BLAS on one thread: its spinning threads slow small SVDs down a hundredfold on a
    # loaded machine; ONNX Runtime gets --threads
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from onnxcam import Explainer

    methods = [m for m in args.methods.split(",") if m]
    if "scorecam" not in methods:
        methods.insert(0, "scorecam")
    print(
        f"{args.model.name} node {args.node}, {args.image.name}, {args.threads} threads, "
        f"{args.device}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; median of {args.runs} runs "
        "after one warm-up"
    )
    medians: dict[str, float] = {}
    rows = []
    explainer = None
    for method in methods:
        explainer = Explainer(
            args.model, node=args.node, method=method, threads=args.threads,
            device=args.device, batch_size=args.batch_size, split_head=True,
        )  # fmt: skip
        result = explainer.explain(args.image)
        medians[method] = _median_time(lambda e=explainer: e.explain(args.image), args.runs)
        passes = f"{result.masked_passes} masked, {result.stats.get('head_passes', 0)} head"
        rows.append((method, passes))
    base = medians["scorecam"]
    print(f"{'method':<10}{'median s':>10}{'x scorecam':>12}  passes")
    for method, passes in rows:
        print(f"{method:<10}{medians[method]:>10.3f}{medians[method] / base:>12.4f}  {passes}")
    if explainer is not None:
        print(head_cost(explainer, args.image, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
