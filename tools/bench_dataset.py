"""``tools/bench.py --engine ray``: images per second of a whole folder, local engine against Ray.

Every configuration is the real command (``onnxcam explain MODEL FOLDER -o OUT --no-report``,
with ``--engine ray --workers W --cpus-per-worker 1`` for Ray), run in a fresh process on the
same images into a fresh folder, so each pays what a user pays: start-up, reading, explaining,
writing every file. For each it gives:

- ``wall s``: the command's wall time;
- ``images/s``: the steady rate, ``(N - 1) / (t_last - t_first)`` where ``t`` is the time each
  image's JSON record was written (its last file), so start-up is left out;
- ``fixed s``: what the rate leaves of the wall time, ``wall - N / rate`` (interpreter, model
  load, for Ray the cluster's and the actors' start and the final reconcile).

Ray's overhead per image is ``1 / rate`` minus the local engine's at the same CPUs (one worker
of one CPU against ``--threads 1``). Rounds (``--runs``) interleave every configuration and the
median of each number is reported, so a load change on a shared machine hits all alike.

Example::

    python tools/bench.py --engine ray --model models/shapes_cnn.onnx --count 200 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _images(args: argparse.Namespace, scratch: Path) -> list[Path]:
    """The images of ``--folder`` (recursively), else ``--count`` synthetic ones."""
    if args.folder is not None:
        suffixes = {".png", ".jpg", ".jpeg"}
        return sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in suffixes)
    import cv2

    sys.path.insert(0, str(ROOT))
    from tools.synthetic import make_samples

    folder = scratch / "images"
    folder.mkdir()
    paths = []
    for i, sample in enumerate(make_samples(args.count, seed=11)):
        path = folder / f"img{i:05d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def _link(images: list[Path], folder: Path) -> Path:
    """A folder of links to ``images`` (the command takes a folder; names stay unique)."""
    folder.mkdir()
    for i, image in enumerate(images):
        (folder / f"{i:05d}{image.suffix}").symlink_to(image.resolve())
    return folder


def _timed(model: Path, folder: Path, out: Path, flags: list[str]) -> tuple[float, float]:
    """The command's wall time and its steady rate in images per second."""
    command = [sys.executable, "-m", "onnxcam.cli", "explain", str(model), str(folder),
               "-o", str(out), "--no-report", *flags]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    written = sorted((out / x["files"]["json"]).stat().st_mtime for x in lines)
    shutil.rmtree(out)
    return wall, (len(written) - 1) / (written[-1] - written[0])


def run(args: argparse.Namespace) -> None:
    """Time the local engine and Ray pools on the same images (see the module docstring)."""
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    configs: dict[str, list[str]] = {
        "local, --threads 1": ["--threads", "1"],
        f"local, --threads {args.threads}": ["--threads", str(args.threads)],
    }
    for w in workers:
        configs[f"ray, {w} worker{'s' * (w > 1)} x 1 CPU"] = [
            "--engine", "ray", "--workers", str(w), "--cpus-per-worker", "1",
        ]  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="onnxcam-bench-"))
    try:
        images = _images(args, scratch)
        if len(images) < 2:
            raise SystemExit("--engine ray needs at least 2 images (--count or --folder)")
        folder = _link(images, scratch / "all")
        before = os.getloadavg()[0]
        walls: dict[str, list[float]] = {name: [] for name in configs}
        rates: dict[str, list[float]] = {name: [] for name in configs}
        for round_ in range(max(1, args.runs)):
            for name, flags in configs.items():
                wall, rate = _timed(args.model, folder, scratch / f"out-{round_}", flags)
                walls[name].append(wall)
                rates[name].append(rate)
        n = len(images)
        load = f"{before:.2f} before, {os.getloadavg()[0]:.2f} after"
        print(f"model: {args.model.name}; {n} images; {os.cpu_count()} CPUs; "
              f"load average {load}; median of {max(1, args.runs)} runs")  # fmt: skip
        print("| engine | wall s | images/s (steady) | s per image | fixed s |")
        print("|---|---|---|---|---|")
        rows = {}
        for name in configs:
            wall, rate = statistics.median(walls[name]), statistics.median(rates[name])
            rows[name] = {"wall_s": wall, "rate": rate, "fixed_s": wall - n / rate}
            print(f"| {name} | {wall:.2f} | {rate:.1f} | {1 / rate:.4f} | {wall - n / rate:.2f} |")
        base = 1 / rows["local, --threads 1"]["rate"]
        for name, row in rows.items():
            if name.startswith("ray, 1 "):
                print(f"Ray overhead per image (1 worker x 1 CPU - local --threads 1): "
                      f"{1 / row['rate'] - base:+.4f} s")  # fmt: skip
        if args.json:
            args.json.write_text(
                json.dumps({"images": n, "walls": walls, "rates": rates, "rows": rows}, indent=2)
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
