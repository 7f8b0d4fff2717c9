"""onnxcam's exported Recipro-CAM against OpenVINO XAI's ``insert_xai`` (Recipro-CAM) on the
same ONNX file: what one inference of the model with its saliency branch costs against one
of the original, each on its own runtime, and how closely the two maps agree.

Three steps, in two virtual environments (OpenVINO XAI needs numpy < 2; onnxcam's venv does
not have it, and OpenVINO is not one of onnxcam's dependencies). Measured with openvino
2024.4.0 and openvino-xai 1.1.0 (``pip install openvino-xai``, which pulls in openvino)::

    # onnxcam's venv
    python tools/bench_ovxai.py write-model r18.onnx --export r18_recipro.onnx
    # OpenVINO XAI's venv
    python tools/bench_ovxai.py bench r18.onnx ovxai.npz --onnxcam r18_recipro.onnx --runs 30
    # onnxcam's venv
    python tools/bench_ovxai.py compare r18.onnx ovxai.npz

``write-model`` writes the ResNet-18-shaped model (``tests/resnet_shaped.py``, 224×224,
random weights) that ``tools/bench_export.py`` times and, with ``--export``, the model that
``onnxcam.export(method="recipro")`` makes of it (top class, feature resolution). ``bench``
reads the model with ``openvino.Core().read_model``, inserts Recipro-CAM with
``openvino_xai.insert_xai`` (auto target layer, ``embed_scaling`` on: per-class min-max to
0..255, uint8), compiles the original, the inserted model and onnxcam's export on CPU
(default properties) and prints the median time of one inference of each (runs taken in
turns) and its ratio to the original's, at batch 1 and 8 (a model that fails at a batch is
reported, not timed); then saves, for a seeded random input (the first image of
``tools/bench_export.py``'s), the inserted model's map of the top class, the raw per-cell
logits of every class (from a second insertion without scaling) and onnxcam's map as
OpenVINO computes it. ``compare`` runs onnxcam's export on the same input (ONNX Runtime CPU)
and prints the Pearson r and largest difference, at feature resolution, of its map against
OpenVINO XAI's (both min-max scaled to [0, 1]) and against the raw logits put through
softmax and min-max (what onnxcam scores: the target's probability).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def medians_s(fns: list[Callable[[], object]], runs: int) -> list[float]:
    """The median seconds of each function, run in turns (as ``tools/bench_export.py``)."""
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


def images(seed: int = 0) -> np.ndarray:
    """The 8 random inputs of ``tools/bench_export.py`` (the same generator and seed)."""
    return np.random.default_rng(seed).uniform(-1, 1, (8, 3, 224, 224)).astype(np.float32)


def minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min())


def write_model(path: Path, exported: Path | None) -> None:
    import onnx

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import resnet_shaped  # tests/, on the path above

    from onnxcam import export

    onnx.save(resnet_shaped.build(), str(path))
    print(f"{path}: the ResNet-18-shaped model, 224×224")
    if exported is not None:
        onnx.save(export(path, method="recipro"), str(exported))
        print(f"{exported}: it with onnxcam's Recipro-CAM (top class, feature resolution)")


def bench(path: Path, maps: Path, runs: int, exported: Path | None) -> None:
    import openvino as ov
    import openvino_xai as xai
    from openvino_xai.inserter.model_parser import IRParserCls, ModelType

    core = ov.Core()

    def inserted(scaled: bool) -> ov.Model:
        # a fresh read each time: insert_xai's model shares its nodes with the one given
        return xai.insert_xai(
            core.read_model(str(path)),
            task=xai.Task.CLASSIFICATION,
            explain_method=xai.Method.RECIPROCAM,
            embed_scaling=scaled,
        )

    target = IRParserCls.get_target_node(core.read_model(str(path)), ModelType.CNN)
    original = core.compile_model(core.read_model(str(path)), "CPU")
    raw = core.compile_model(inserted(False), "CPU")
    props = ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT")
    shown = ", ".join(f"{p} {original.get_property(p)}" for p in props)
    print(f"openvino {ov.get_version()}, CPU: {shown}")
    print(f"insert_xai target layer: {target.get_friendly_name()} ({target.get_type_name()}, "
          f"{target.get_output_partial_shape(0)})")  # fmt: skip
    makers: dict[str, Callable[[], ov.Model]] = {"openvino-xai insert_xai": lambda: inserted(True)}
    if exported is not None:
        makers["onnxcam export"] = lambda: core.read_model(str(exported))
    compiled = {label: core.compile_model(make(), "CPU") for label, make in makers.items()}
    x8 = images()
    version = ov.get_version().split("-")[0]
    print("| saliency by | runtime | batch | original ms | with saliency ms | with ÷ original |")
    print("|---|---|---|---|---|---|")
    for b in (1, 8):
        x = x8[:b]
        timed = {}
        for label, make in makers.items():
            try:  # a model compiled for the probe: after one failed inference, it fails at 1 too
                core.compile_model(make(), "CPU").create_infer_request().infer({0: x})
            except RuntimeError as exc:  # insert_xai's branch reshapes to (1, classes, h, w)
                why = [line for line in str(exc).splitlines() if line.strip()][-1]
                print(f"| {label} | OpenVINO {version} | {b} | – | – | fails at batch {b}: {why} |")
                continue
            timed[label] = compiled[label].create_infer_request()
        # the original and each model with saliency in turns (the original once per turn)
        requests = [original.create_infer_request(), *timed.values()]
        fns: list[Callable[[], object]] = [lambda r=r, x=x: r.infer({0: x}) for r in requests]
        base, *costs = medians_s(fns, runs)
        for label, cost in zip(timed, costs, strict=True):
            times = f"{base * 1e3:.1f} | {cost * 1e3:.1f} | {cost / base:.3f}×"
            print(f"| {label} | OpenVINO {version} | {b} | {times} |", flush=True)
    one = x8[:1]
    logits = original.create_infer_request().infer({0: one})[0]
    top = int(np.argmax(logits[0]))
    scaled = (
        compiled["openvino-xai insert_xai"].create_infer_request().infer({0: one})["saliency_map"]
    )  # uint8
    cells = raw.create_infer_request().infer({0: one})["saliency_map"]  # each cell's logits
    saved = {"logits": logits, "top": top, "scaled": scaled[0, top], "cells": cells[0]}
    if exported is not None:  # onnxcam's map as OpenVINO computes it
        request = compiled["onnxcam export"].create_infer_request()
        saved["onnxcam_openvino"] = request.infer({0: one})["saliency"][0, 0]
    np.savez(maps, **saved)
    print(f"{maps}: top class {top}, map {scaled.shape} {scaled.dtype}, raw {cells.shape}")


def compare(path: Path, maps: Path) -> None:
    import onnxruntime as ort

    sys.path.insert(0, str(ROOT))
    from onnxcam import export

    saved = np.load(maps)
    top = int(saved["top"])
    model = export(path, method="recipro")  # top class, feature resolution
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, {"input": images()[:1]}), strict=True))
    ours = out["saliency"][0, 0]  # (h, w) in [0, 1]
    print(f"onnxcam map {ours.shape}, top class {int(np.argmax(out['logits'][0]))} "
          f"(OpenVINO's {top}); logits differ by up to "
          f"{np.abs(out['logits'] - saved['logits']).max():.2g}")  # fmt: skip
    if "onnxcam_openvino" in saved:
        differ = np.abs(saved["onnxcam_openvino"] - ours).max()
        print(f"onnxcam's map on OpenVINO and on ONNX Runtime differ by up to {differ:.2g}")
    cells = saved["cells"].astype(np.float64)  # (classes, h, w)
    probs = np.exp(cells - cells.max(0)) / np.exp(cells - cells.max(0)).sum(0)
    for label, theirs in [
        ("OpenVINO XAI map (top-class logit per cell, 0..255 uint8)", saved["scaled"]),
        ("OpenVINO XAI raw logits → softmax → min-max", probs[top]),
        ("OpenVINO XAI raw logits → min-max (float, not uint8)", cells[top]),
    ]:
        a, b = minmax(ours).ravel(), minmax(theirs).ravel()
        r = np.corrcoef(a, b)[0, 1]
        print(f"{label}: Pearson r {r:.6f}, largest difference {np.abs(a - b).max():.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    step = steps.add_parser("write-model", help="write the ResNet-18-shaped model (onnxcam's venv)")
    step.add_argument("model", type=Path)
    step.add_argument("--export", type=Path, help="also write onnxcam's Recipro-CAM export of it")
    step = steps.add_parser("bench", help="time insert_xai's model on OpenVINO (its own venv)")
    step.add_argument("model", type=Path)
    step.add_argument("maps", type=Path, help="where to save the maps (.npz)")
    step.add_argument("--runs", type=int, default=20)
    step.add_argument(
        "--onnxcam", type=Path, help="onnxcam's exported model, timed on OpenVINO alongside"
    )
    step = steps.add_parser("compare", help="onnxcam's map against the saved one (onnxcam's venv)")
    step.add_argument("model", type=Path)
    step.add_argument("maps", type=Path)
    args = parser.parse_args()
    if args.step == "write-model":
        write_model(args.model, args.export)
    elif args.step == "bench":
        bench(args.model, args.maps, args.runs, args.onnxcam)
    else:
        compare(args.model, args.maps)


if __name__ == "__main__":
    main()
