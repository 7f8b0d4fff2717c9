#!/usr/bin/env python3
"""What a large or hostile ``results.jsonl`` costs: peak memory and time of ``onnxcam report``
and of a rerun that has nothing to do, on a folder of --records records.

One image is explained into a fresh folder (the shapes CNN), then its record is copied
--records times under other names (about 2 kB each, as real records are), with a few hostile
lines among them (a record over 1 MB, wrong field types, names that leave the folder). Each
command runs --runs times in a fresh process under GNU ``time -v``; the medians of its peak
RSS (the whole process) and wall time are printed, with the lines the commands said they
skipped.

Example::

    python tools/bench_records.py --records 100000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.synthetic import make_samples  # noqa: E402


def measure(cmd: list[str]) -> tuple[float, float, str]:
    """Peak RSS (MB) and wall seconds of ``cmd`` under GNU time, and its stderr's last line."""
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1]) / 1024
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr)[1]
    seconds = sum(float(x) * 60**i for i, x in enumerate(reversed(clock.split(":"))))
    said = [line for line in done.stderr.splitlines() if "skipped" in line]
    return rss, seconds, said[-1] if said else ""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "shapes_cnn.onnx")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp())
    image = work / "one.png"
    sample = next(iter(make_samples(1, seed=7)))
    cv2.imwrite(str(image), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
    out = work / "out"
    explain = [sys.executable, "-m", "onnxcam.cli", "explain", str(args.model), str(image),
               "-o", str(out), "--channels", "8", "--threads", "1"]  # fmt: skip
    subprocess.run(explain, check=True, capture_output=True)
    first = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    with open(out / "results.jsonl", "a", encoding="utf-8") as handle:
        for i in range(args.records):
            record = json.loads(json.dumps(first))
            record["source"] = f"/data/{i:06d}.png"
            record["files"] = {k: v.replace("one", f"{i:06d}") for k, v in first["files"].items()}
            for target in record["targets"]:
                target["files"] = {
                    k: v.replace("one", f"{i:06d}") for k, v in target["files"].items()
                }
            handle.write(json.dumps(record) + "\n")
        handle.write(json.dumps({**first, "source": "big", "pad": "x" * (2 << 20)}) + "\n")
        handle.write(json.dumps({"status": "ok", "source": "a", "files": [1]}) + "\n")
        handle.write(json.dumps({"status": "ok", "source": "b", "files": {"j": "../x"}}) + "\n")
    size = (out / "results.jsonl").stat().st_size
    print(f"{args.records} records, results.jsonl {size / 1e6:.0f} MB")
    commands = {
        "report": [sys.executable, "-m", "onnxcam.cli", "report", str(out)],
        "no-op rerun": explain,
    }
    for name, cmd in commands.items():
        runs = [measure(cmd) for _ in range(max(1, args.runs))]
        rss = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"{name:12s} peak RSS {rss:7.0f} MB  wall {wall:6.1f} s  ({runs[-1][2]})")


if __name__ == "__main__":
    main()
