"""What saliency inside the graph costs: one inference of the exported model ÷ one of the
original (median of several runs, ONNX Runtime CPU, batch 1 and 8), for each method on
EfficientNet-Lite0 and a ResNet-18-shaped model (224×224, random weights, built here), and
the same method run by ``onnxcam explain`` in-process (``Explainer.explain(tensor=...)`` per
image, over the original's batch-1 inference).

    python tools/bench_export.py [--runs 20] [--threads N] [--model M ...] [--method M ...]

Prints a Markdown table (for BENCHMARKS.md). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import resnet_shaped  # noqa: E402  (tests/, on the path above)

from onnxcam import Explainer, export  # noqa: E402

METHODS = ("cam", "activation", "recipro", "eigencam")
MODELS = ("EfficientNet-Lite0", "ResNet-18-shaped")
GOALS = {"cam": 1.1, "activation": 1.05, "recipro": 1.5}


def medians_s(fns: list[Callable[[], object]], runs: int) -> list[float]:
    """The median seconds of each function, run in turns (so a load that comes and goes on
    a shared machine falls on all of them alike)."""
    for fn in fns:
        for _ in range(3):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, kept in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - start)
    return [statistics.median(kept) for kept in times]


#: Sessions taken in turns must not spin: ONNX Runtime's threads busy-wait after a run, and on
#: a machine with few cores the next session's run would pay for it.
NO_SPIN = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def session(model: onnx.ModelProto | Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    for key, value in NO_SPIN.items():
        options.add_session_config_entry(key, value)
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def runner(sess: ort.InferenceSession, x: np.ndarray) -> Callable[[], object]:
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", action="append", choices=MODELS, help="(default: both)")
    parser.add_argument("--method", action="append", choices=METHODS, help="(default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        resnet = Path(tmp) / "resnet18_shaped.onnx"
        onnx.save(resnet_shaped.build(), str(resnet))
        models = {
            "EfficientNet-Lite0": ROOT / "models" / "efficientnet_lite0.onnx",
            "ResNet-18-shaped": resnet,
        }
        print("| model | method | batch | original ms | exported ms | exported ÷ original "
              "| goal | onnxcam explain ms/image | explain ÷ original |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for label, path in models.items():
            if args.model and label not in args.model:
                continue
            original = session(path, args.threads)
            rng = np.random.default_rng(0)
            x8 = rng.uniform(-1, 1, (8, 3, 224, 224)).astype(np.float32)
            one = x8[:1]
            for method in args.method or METHODS:
                exported = session(export(path, method=method), args.threads)
                explainer = Explainer(
                    path, method=method, threads=args.threads,
                    session_options={"config_entries": NO_SPIN},
                )  # fmt: skip
                for b in (1, 8):
                    fns = [runner(original, x8[:b]), runner(exported, x8[:b])]
                    if b == 1:
                        fns.append(lambda e=explainer, x=one: e.explain(tensor=x))
                    base, cost, *rest = medians_s(fns, args.runs)
                    explain = f"{rest[0] * 1e3:.1f} | {rest[0] / base:.2f}×" if rest else "| "
                    ratio = cost / base
                    goal = GOALS.get(method)
                    met = (
                        "–" if goal is None else f"≤ {goal} {'met' if ratio <= goal else 'MISSED'}"
                    )
                    print(
                        f"| {label} | {method} | {b} | {base * 1e3:.1f} | {cost * 1e3:.1f} "
                        f"| {ratio:.3f}× | {met} | {explain} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
