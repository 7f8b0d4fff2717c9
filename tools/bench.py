"""Benchmark exact Score-CAM against the ONNX Runtime floor, in one process and one run.

For a model, node, image, thread count and batch size it prints:

- the machine's nominal peak GFLOP/s (from the CPU's vector flags and clock) and a measured
  numpy SGEMM rate, next to the GFLOP/s achieved by onnxcam's masked passes;
- the floor: the per-image time of a plain batched forward pass of the untouched model at the
  same batch size and threads (median of several batches), times the masked passes onnxcam ran;
- onnxcam's exact Score-CAM wall time (median of --runs), split into phases, and the ratio
  onnxcam / floor;
- the peak RSS of a separate process that only runs onnxcam (so the benchmark's own sessions do
  not count);
- with --fast N,...: the top-N channel modes (rank by std and by max): speed-up over exact and
  Pearson correlation with the exact map, and with --metrics the change in Average Drop and
  Insertion AUC;
- with --vs-grad-cam NAME (torch, torchvision and grad-cam importable): pytorch-grad-cam's
  ScoreCAM on the same weights, image and threads, and the time ratio;
- with --engine ray: a whole folder through the local engine and Ray pools of --workers
  (tools/bench_dataset.py): images per second and Ray's overhead per image;
- with --targets SPEC (e.g. top:5): the wall time of explaining the image for every target of
  SPEC against one target (--one SPEC, default the model's default target: the top class of
  a classifier; for a detector pass --one detection:index=0 --targets detection:max=10), runs
  interleaved, and the largest difference between the first target's map and the
  single-target map.

Example::

    python tools/bench.py --model models/efficientnet_lite0.onnx --image examples/coffee.png \\
        --threads 2 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/efficientnet_lite0.onnx"))
    p.add_argument("--node", default="auto")
    p.add_argument("--image", type=Path, nargs="+", default=[Path("examples/coffee.png")])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="default: onnxcam's choice")
    p.add_argument("--runs", type=int, default=3, help="timed onnxcam runs per image")
    p.add_argument("--floor-batches", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fast", default="", help="comma-separated N for the top-N channel modes")
    p.add_argument("--metrics", action="store_true", help="with --fast: Average Drop, Insertion")
    p.add_argument(
        "--vs-grad-cam",
        default=None,
        metavar="NAME",
        help="torchvision model name whose export is --model (e.g. resnet18)",
    )
    p.add_argument("--seed", type=int, default=0, help="torchvision init seed for --vs-grad-cam")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocess")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--sweep", default="", help="comma-separated batch sizes to time")
    p.add_argument("--targets", default=None, metavar="SPEC", help="e.g. top:5, against one")
    p.add_argument(
        "--one",
        default=None,
        metavar="SPEC",
        help="the single target --targets is compared with (default: the model's default "
        "target; for a detector e.g. detection:index=0)",
    )
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: time a folder on the local engine and on Ray (tools/bench_dataset.py)",
    )
    p.add_argument("--workers", default="1,2", help="with --engine ray: Ray pool sizes to time")
    p.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="with --engine ray: the images to explain (default: --count synthetic ones)",
    )
    p.add_argument(
        "--count",
        type=int,
        default=48,
        help="with --engine ray and no --folder: synthetic images to explain",
    )
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--forward-batch", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)  # fmt: skip


def nominal_peak_gflops(threads: int) -> tuple[float | None, str]:
    """Cores x clock x FP32 FLOPs per cycle (2 FMA pipes x vector lanes x 2), from cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "unknown CPU"
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    mhz = [float(ln.split(":")[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")]
    name = next((ln.split(":")[1].strip() for ln in info.splitlines() if "model name" in ln), "")
    lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags else 4
    per_cycle = lanes * 2 * (2 if " fma" in flags else 1)
    if not mhz:
        return None, name
    return threads * max(mhz) / 1000 * per_cycle, f"{name}, {lanes * 32}-bit vectors"


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def model_flops(model_path: Path, height: int, width: int, layout: str) -> float:
    """Multiply-adds x 2 of Conv, Gemm and MatMul for one image."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    concrete = [1, 3, height, width] if layout == "NCHW" else [1, height, width, 3]
    for dim, value in zip(dims, concrete, strict=False):
        dim.ClearField("dim_param")
        dim.dim_value = value
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    inits = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    total = 0.0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if not out:
            continue
        if node.op_type == "Conv" and node.input[1] in inits:
            w = inits[node.input[1]]
            total += 2 * float(np.prod(out)) * float(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0]) or inits.get(node.input[0])
            if a:
                total += 2 * float(np.prod(out)) * float(a[-1])
    return total


def floor_per_image(
    sessions: list, x_shape, dtype, batch: int, n_batches: int, outputs: list[str] | None = None
) -> list[float]:
    """Median per-image time of batched forward passes, one value per session.

    The sessions' runs are interleaved so that load changes on a shared machine hit all of
    them alike.
    """
    import numpy as np

    name = sessions[0].get_inputs()[0].name
    feed = np.random.default_rng(0).uniform(-1, 1, (batch, *x_shape[1:])).astype(dtype)
    for session in sessions:
        for _ in range(2):
            session.run(outputs, {name: feed})
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(n_batches):
        for i, session in enumerate(sessions):
            t = time.perf_counter()
            session.run(outputs, {name: feed})
            times[i].append(time.perf_counter() - t)
    return [statistics.median(ts) / batch for ts in times]


def pearson(a, b) -> float:
    import numpy as np

    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def rss_child(args: argparse.Namespace) -> None:
    """Runs in a subprocess: one exact explanation per image, nothing else."""
    from onnxcam import Explainer

    if args.forward_batch:  # plain forward passes of the untouched model at one batch size
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [args.forward_batch, *(d if isinstance(d, int) else 224 for d in inp.shape[1:])]
        feed = np.zeros(shape, np.float32)
        for _ in range(3):
            session.run(None, {inp.name: feed})
        return

    explainer = Explainer(
        args.model, node=args.node, threads=args.threads, batch_size=args.batch_size,
        device=args.device,
    )  # fmt: skip
    for image in args.image:
        explainer.explain(image)


def peak_rss_mb(argv: list[str]) -> float:
    """Peak RSS of a child process running onnxcam alone (GNU time -v when available)."""
    command = [sys.executable, __file__, *argv, "--rss-child"]
    gnu_time = Path("/usr/bin/time")
    if gnu_time.exists():
        done = subprocess.run(
            [str(gnu_time), "-v", *command], check=True, capture_output=True, text=True
        )
        for line in done.stderr.splitlines():
            if "Maximum resident set size" in line:
                return int(line.split(":")[1]) / 1024
    subprocess.run(command, check=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def grad_cam_seconds(name: str, seed: int, x, threads: int, target: int) -> float:
    """pytorch-grad-cam's ScoreCAM on the same weights and preprocessed input ``x``.

    ``name`` is a torchvision model exported by tools/export_torchvision.py with ``seed``, or
    ``efficientnet_lite0`` (the shipped model's PyTorch source; its head activation module is
    shared with the stem, so the hook goes on ``_bn1``: the same 1,280 channels).
    """
    import torch
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    torch.set_num_threads(threads)
    if name == "efficientnet_lite0":
        from export_efficientnet_lite0 import build_model

        model, _ = build_model()
        layer = model._bn1
    else:
        from export_torchvision import build_torchvision, target_layer

        model = build_torchvision(name, seed)
        layer = target_layer(model)
    cam = ScoreCAM(model=model.eval(), target_layers=[layer])
    t = time.perf_counter()
    cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(target)])
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.rss_child:
        rss_child(args)
        return
    if args.engine == "ray":
        from bench_dataset import run  # this folder: tools/ is on sys.path as a script's

        run(args)
        return

    import numpy as np
    import onnxruntime as ort

    from onnxcam import Explainer, ScoreCamOptions, graph, preprocess
    from onnxcam.metrics import auc  # noqa: F401  (imported to fail early when missing)

    report: dict = {"machine": platform.machine(), "python": platform.python_version()}
    peak, cpu = nominal_peak_gflops(args.threads)
    report["cpu"] = cpu
    report["ort_version"] = ort.__version__
    print(f"cpu: {cpu}; threads {args.threads}; onnxruntime {ort.__version__}")
    sgemm = sgemm_gflops()
    print(f"peak: nominal {peak:.0f} GFLOP/s" if peak else "peak: nominal unknown", end="")
    print(f", numpy SGEMM {sgemm:.0f} GFLOP/s")
    report.update(nominal_peak_gflops=peak, sgemm_gflops=sgemm)

    explainer = Explainer(
        args.model, node=args.node, threads=args.threads, batch_size=args.batch_size,
        device=args.device,
    )  # fmt: skip
    spec = explainer.spec
    batch = explainer.batch_size()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    plain = ort.InferenceSession(
        str(args.model), options, providers=[explainer.provider]
    )  # the untouched model
    flops = model_flops(args.model, spec.height, spec.width, spec.layout)
    shape = (1, spec.channels, spec.height, spec.width)
    if spec.layout == "NHWC":
        shape = (1, spec.height, spec.width, spec.channels)
    exposed = graph.expose(graph.load_model(args.model), explainer.candidate.tensor)
    with_output = ort.InferenceSession(
        exposed.SerializeToString(), options, providers=[explainer.provider]
    )
    cls = explainer.prepared.outputs[0].name  # the class output the masked passes fetch
    per_image, per_image_exposed = floor_per_image(
        [plain, with_output], shape, spec.dtype, batch, args.floor_batches, outputs=[cls]
    )
    print(
        f"model: {args.model.name}, node {explainer.node_label} "
        f"{', '.join(str(c.shape) for c in explainer.candidates)}, "
        f"{flops / 1e9:.2f} GFLOP/image, batch {batch}"
    )
    print(f"floor: {per_image * 1e3:.2f} ms/image ({flops / per_image / 1e9:.1f} GFLOP/s)")
    print(
        f"extra graph output: {per_image_exposed * 1e3:.2f} ms/image with it, "
        f"ratio {per_image_exposed / per_image:.3f} to the untouched model"
    )
    report["exposed_over_plain"] = per_image_exposed / per_image
    if args.sweep:
        sizes = [int(v) for v in args.sweep.split(",")]
        print("batch sweep (untouched model, per-image ms, interleaved):")
        for size in sizes:
            (ms,) = floor_per_image([plain], shape, spec.dtype, size, args.floor_batches)
            rss = peak_rss_mb(["--model", str(args.model), "--threads", str(args.threads),
                               "--device", args.device, "--forward-batch", str(size)])  # fmt: skip
            print(
                f"  batch {size:>3}: {ms * 1e3:7.2f} ms/image, forward-only peak RSS {rss:.0f} MB"
            )
            report.setdefault("sweep", []).append({"batch": size, "ms": ms * 1e3, "rss_mb": rss})
    report.update(model=str(args.model), node=explainer.candidate.label, batch=batch)
    report.update(gflop_per_image=flops / 1e9, floor_ms_per_image=per_image * 1e3)

    rows = []
    for image in args.image:
        # Each run is bracketed by floor measurements, so a load change on a shared machine
        # hits the onnxcam run and its floor alike; the ratio is the median of per-run ratios.
        results, run_ratios = [], []
        for _ in range(max(1, args.runs)):
            (before,) = floor_per_image([plain], shape, spec.dtype, batch, 3, [cls])
            result = explainer.explain(image)
            (after,) = floor_per_image([plain], shape, spec.dtype, batch, 3, [cls])
            results.append(result)
            run_floor = (before + after) / 2 * result.masked_passes
            run_ratios.append(result.timings["total_s"] / run_floor)
        totals = [r.timings["total_s"] for r in results]
        median_run = int(np.argsort(totals)[len(totals) // 2])
        median = results[median_run]
        t = median.timings
        passes = median.masked_passes
        ratio = statistics.median(run_ratios)
        floor = t["total_s"] / run_ratios[median_run]
        achieved = flops * passes / t["masked_s"] / 1e9 if t["masked_s"] else float("nan")
        row = {
            "image": str(image),
            "channels_total": median.channels_total,
            "channels_skipped": median.channels_skipped,
            "masked_passes": passes,
            "total_s": t["total_s"],
            "totals_s": totals,
            "run_ratios": run_ratios,
            "activation_s": t["activation_s"],
            "masks_s": t["masks_s"],
            "masked_s": t["masked_s"],
            "combine_s": t["combine_s"],
            "floor_s": floor,
            "ratio": ratio,
            "masked_gflops": achieved,
        }
        rows.append(row)
        print(
            f"{image.name}: {passes} passes ({median.channels_skipped} of "
            f"{median.channels_total} channels constant); onnxcam {t['total_s']:.2f} s "
            f"(median of {len(totals)}: activation {t['activation_s']:.3f}, masks "
            f"{t['masks_s']:.3f}, masked {t['masked_s']:.2f}, combine {t['combine_s']:.3f}); "
            f"floor {floor:.2f} s; ratio {ratio:.3f} (runs: "
            f"{', '.join(f'{r:.3f}' for r in run_ratios)}); masked passes at {achieved:.1f} GFLOP/s"
        )
        if args.vs_grad_cam:
            x = preprocess.to_tensor(median.image, spec, explainer.norm)
            seconds = grad_cam_seconds(
                args.vs_grad_cam, args.seed, x, args.threads, median.class_index
            )
            row["grad_cam_s"] = seconds
            row["vs_grad_cam"] = t["total_s"] / seconds
            print(f"  pytorch-grad-cam ScoreCAM {seconds:.2f} s; onnxcam / grad-cam "
                  f"{t['total_s'] / seconds:.3f}")  # fmt: skip
        for n in [int(v) for v in args.fast.split(",") if v.strip()]:
            for rank in ("std", "max"):
                fast = Explainer(
                    args.model, node=args.node, threads=args.threads, batch_size=args.batch_size,
                    device=args.device, options=ScoreCamOptions(top_channels=n, rank=rank),
                )  # fmt: skip
                fast_results = [fast.explain(image) for _ in range(max(1, args.runs))]
                ft = statistics.median(r.timings["total_s"] for r in fast_results)
                corr = pearson(fast_results[0].saliency, median.saliency)
                entry = {"n": n, "rank": rank, "total_s": ft, "speedup": t["total_s"] / ft,
                         "pearson": corr}  # fmt: skip
                line = (f"  top-{n} by {rank}: {ft:.2f} s, x{t['total_s'] / ft:.1f} faster, "
                        f"Pearson {corr:.3f}")  # fmt: skip
                if args.metrics:
                    entry.update(_metric_change(explainer, fast, image))
                    line += (
                        f", avg drop {entry['avg_drop_exact']:.1f} -> "
                        f"{entry['avg_drop_fast']:.1f} %, insertion "
                        f"{entry['insertion_exact']:.3f} -> {entry['insertion_fast']:.3f}"
                    )
                print(line)
                row.setdefault("fast", []).append(entry)
        if args.targets:
            row["targets"] = _targets_cost(explainer, image, args.targets, args.runs, args.one)
    report["images"] = rows
    ratios = [r["ratio"] for r in rows]
    print(f"ratio onnxcam / floor: median {statistics.median(ratios):.3f} over {len(rows)} images")

    if not args.no_rss:
        child = [str(args.model), "--node", args.node, "--threads", str(args.threads),
                 "--device", args.device, "--image", *map(str, args.image[:1])]  # fmt: skip
        if args.batch_size:
            child += ["--batch-size", str(args.batch_size)]
        rss = peak_rss_mb(["--model", *child])
        report["peak_rss_mb"] = rss
        print(f"peak RSS of a process running onnxcam alone: {rss:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def _targets_cost(explainer, image, spec: str, runs: int, single: str | None = None) -> dict:
    """Several targets against one, runs interleaved; the ratio is the median of per-pair
    ratios, so a load change hits both sides of a pair alike."""
    import numpy as np

    pairs = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        one = explainer.explain(image, target=single)
        t1 = time.perf_counter()
        many = explainer.explain(image, target=spec)
        t2 = time.perf_counter()
        pairs.append((t1 - t0, t2 - t1))
    ratios = [b / a for a, b in pairs]
    diff = float(np.abs(many.targets[0].saliency - one.saliency).max())
    same_class = many.targets[0].class_index == one.class_index
    print(
        f"  {spec} ({len(many.targets)} maps): {statistics.median(b for _, b in pairs):.2f} s "
        f"against {statistics.median(a for a, _ in pairs):.2f} s for one target; ratio "
        f"{statistics.median(ratios):.3f} (runs: {', '.join(f'{r:.3f}' for r in ratios)}); "
        f"first map vs single-target map: same class {same_class}, max |diff| {diff:.2e}"
    )
    return {"spec": spec, "maps": len(many.targets), "pairs_s": pairs,
            "ratio": statistics.median(ratios), "max_abs_diff": diff}  # fmt: skip


def _metric_change(exact, fast, image) -> dict:
    from onnxcam.evaluate import evaluate

    a = evaluate(exact, image, methods=["scorecam"])[0]
    b = evaluate(fast, image, methods=["scorecam"])[0]
    return {
        "avg_drop_exact": a.drop,
        "avg_drop_fast": b.drop,
        "insertion_exact": a.insertion_auc,
        "insertion_fast": b.insertion_auc,
    }


if __name__ == "__main__":
    main()
