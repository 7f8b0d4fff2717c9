"""What ``onnxcam serve`` gives under load: throughput and p50/p99 latency of N concurrent
clients against one server on 127.0.0.1 (exact Score-CAM and a 0.25 s budget), cross-request
batching against one request at a time, whether budgeted answers come within their budget plus
one batch, their fidelity (estimate and true r against the exact map), and the cost of the
predictor hop (a second server serving the ``--expose`` model) per masked pass.

    python tools/load.py [--model models/efficientnet_lite0.onnx] [--runs 3]
        [--clients 1,4,16] [--requests 16] [--compare-clients 4] [--time-limit 600]
        [--threads N]

Bounded: each load runs a fixed number of requests and stops at the time limit; it only talks
to servers it started itself on 127.0.0.1. Prints Markdown (for BENCHMARKS.md). Needs
onnxcam[serve] and ``requests``; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import base64
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxcam import Explainer  # noqa: E402
from onnxcam.ingraph import expose  # noqa: E402

PHOTOS = [ROOT / "examples" / "coffee.png", ROOT / "examples" / "chelsea.png"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(model: Path, name: str, *extra: str, threads: int) -> Iterator[str]:
    """``onnxcam serve`` on a free loopback port until the block ends (SIGTERM)."""
    port = free_port()
    command = [sys.executable, "-m", "onnxcam.cli", "serve", str(model), "--name", name,
               "--http-port", str(port), "--grpc-port", "0", "--device", "cpu",
               "--threads", str(threads), *extra]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the server for {model} exited")
            try:
                if requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        else:
            raise SystemExit(f"the server for {model} was not ready in 300 s")
        yield url
    finally:
        process.terminate()
        process.wait(120)


@dataclass
class Load:
    """One load's outcome: seconds per request, the requests done and the wall time."""

    latencies: list[float]
    wall_s: float
    maps: list[tuple[int, np.ndarray, dict]]

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall_s

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))


def load(url: str, name: str, clients: int, requests_total: int, time_limit: float,
         parameters: dict) -> Load:  # fmt: skip
    """``requests_total`` :explain requests from ``clients`` threads (each waits for its answer
    before asking again), stopping early at ``time_limit``."""
    bodies = [
        {"instances": [{"image": {"b64": base64.b64encode(p.read_bytes()).decode()}}],
         "parameters": parameters}
        for p in PHOTOS
    ]  # fmt: skip
    counter = iter(range(requests_total))
    lock = threading.Lock()
    latencies: list[float] = []
    maps: list[tuple[int, np.ndarray, dict]] = []
    stop = time.perf_counter() + time_limit

    def client(_: int) -> None:
        with requests.Session() as session:
            while time.perf_counter() < stop:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                answer = session.post(f"{url}/v1/models/{name}:explain",
                                      json=bodies[i % len(bodies)], timeout=time_limit)  # fmt: skip
                took = time.perf_counter() - t0
                answer.raise_for_status()
                explanation = answer.json()["explanations"][0]
                got = np.load(io.BytesIO(base64.b64decode(explanation["maps"][0]["b64"])))
                with lock:
                    latencies.append(took)
                    maps.append((i % len(bodies), got, explanation["record"]))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return Load(latencies, time.perf_counter() - t0, maps)


def median_load(runs: int, *args) -> Load:
    """The run of median throughput among ``runs``."""
    done = sorted((load(*args) for _ in range(runs)), key=lambda r: r.throughput)
    return done[len(done) // 2]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "efficientnet_lite0.onnx")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=16, help="requests per load")
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--compare-clients",
        type=int,
        default=4,
        help="clients of the shared side of the comparison",
    )
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    local = Explainer(args.model, device="cpu", threads=args.threads)
    exact = [local.explain(p).saliency for p in PHOTOS]
    batch = local.batch_size()
    x = local.preprocess(PHOTOS[0])
    session = local.runner.session
    session.run(np.repeat(x, batch, axis=0))
    t0 = time.perf_counter()
    for _ in range(5):
        session.run(np.repeat(x, batch, axis=0))
    batch_s = (time.perf_counter() - t0) / 5
    print(f"model {args.model.name}, batch {batch}, one batch {batch_s:.3f} s, "
          f"{args.threads} threads, median of {args.runs} runs\n")  # fmt: skip

    with server(args.model, "m", threads=args.threads) as url:
        print("| load | clients | requests | throughput (req/s) | p50 (s) | p99 (s) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for label, parameters in (("exact", {}), ("budget 0.25 s", {"budget_s": 0.25})):
            for n in clients:
                total = max(args.requests, n) if label != "exact" else n
                result = median_load(args.runs, url, "m", n, total, args.time_limit, parameters)
                print(f"| {label} | {n} | {len(result.latencies)} | {result.throughput:.3f} "
                      f"| {result.p(50):.3f} | {result.p(99):.3f} |")  # fmt: skip
                if label != "exact" and n == 4:
                    budgeted = result
        print()
        served = [r["timings"]["request_s"] for _, _, r in budgeted.maps]  # the server's clock
        within = [t <= 0.25 + batch_s for t in served]
        rs = [pearson(m, exact[k]) for k, m, _ in budgeted.maps]
        estimates = [r["targets"][0]["fidelity_estimate"] for _, _, r in budgeted.maps]
        masks = [r["targets"][0]["masks_run"] for _, _, r in budgeted.maps]
        print(f"budget 0.25 s, 4 clients: {sum(within)}/{len(within)} answers within 0.25 s + "
              f"one batch ({0.25 + batch_s:.3f} s) of their arrival, on the server's clock "
              f"(max {max(served):.3f} s; at the client, with the transfer: max "
              f"{max(budgeted.latencies):.3f} s); masks "
              f"run median {statistics.median(masks):g} (min {min(masks)}); fidelity estimate "
              f"median {statistics.median(estimates):.4f}; true r against the exact map median "
              f"{statistics.median(rs):.4f} (min {min(rs):.4f})\n")  # fmt: skip

        # Cross-request batching against one request at a time, side by side, exact maps.
        print("| exact Score-CAM | throughput (req/s) | ratio |")
        print("| --- | ---: | ---: |")
        n = args.compare_clients
        alone = [load(url, "m", 1, n, args.time_limit, {}) for _ in range(args.runs)]
        shared = [load(url, "m", n, 2 * n, args.time_limit, {}) for _ in range(args.runs)]
        a = statistics.median(r.throughput for r in alone)
        s = statistics.median(r.throughput for r in shared)
        print(f"| one request at a time | {a:.3f} | 1.00 |")
        print(f"| {n} clients, shared batches | {s:.3f} | {s / a:.2f} |\n")

    # The predictor hop: the same passes in-process and through a second server.
    with tempfile.TemporaryDirectory() as tmp:
        exposed = Path(tmp) / "exposed.onnx"
        exposed.write_bytes(expose(args.model).SerializeToString())
        with server(exposed, "p", threads=args.threads) as url:
            host = url.removeprefix("http://")
            remote = Explainer(args.model, backend="remote", predictor=f"{host}/p")
            times = {"in-process": [], "predictor": []}
            passes = 0
            for _ in range(args.runs):
                for label, explainer in (("in-process", local), ("predictor", remote)):
                    t0 = time.perf_counter()
                    result = explainer.explain(PHOTOS[0])
                    times[label].append(time.perf_counter() - t0)
                    if label == "predictor":
                        gap = float(np.abs(result.saliency - exact[0]).max())
                        passes = int(result.stats.get("channels_used", 0)) or passes
            inner, outer = (statistics.median(times[k]) for k in ("in-process", "predictor"))
            print(f"predictor hop: exact Score-CAM in-process {inner:.2f} s, through a predictor "
                  f"on loopback {outer:.2f} s ({passes} masked passes: "
                  f"{(outer - inner) / max(passes, 1) * 1000:.2f} ms more per pass); max abs "
                  f"difference of the maps {gap:.2g}")  # fmt: skip


if __name__ == "__main__":
    main()
