#!/usr/bin/env python3
"""Fuzz onnxcam with mutated models and images: every outcome must be a result or one clean
error line; never a traceback, a crash, native noise on stderr, or memory past a bound.

Models are the tests' tiny CNN, mutated at the proto level (attributes, shapes, element
types, nodes, metadata) or at the byte level; images are small PNG, JPEG, BMP, TIFF and WebP
files with bytes flipped, truncated, headers rewritten to absurd sizes, or junk appended.
Each case goes through the library (``Explainer(...).explain``), and every fifth one through
the command line as well. Everything runs in this process, with file descriptor 2 captured:
a crash ends the process (the caller sees it), and anything native code prints is counted.

Usage::

    python tools/fuzz.py --seed 0 --models 200 --images 200 [--json counts.json]

The test suite runs it on a fixed seed in a subprocess (tests/test_fuzz.py); run it longer by
hand with larger counts and other seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import struct
import sys
import tempfile
import traceback
from pathlib import Path

import cv2
import numpy as np
import onnx
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import build_tiny, tiny_weights  # noqa: E402

from onnxcam import Explainer, OnnxCamError  # noqa: E402
from onnxcam.cli import cli  # noqa: E402

ABSURD = [0, 1, 2, 3, 7, 255, 65535, 2**31 - 1, 2**31, 2**40, -1, -7]


def base_model(folder: Path) -> onnx.ModelProto:
    return onnx.load(str(build_tiny(folder / "base.onnx", tiny_weights())))


def mutate_model(model: onnx.ModelProto, rng: random.Random) -> bytes:
    """One random change to a copy of ``model``, serialized (byte flips act on the bytes)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    kind = rng.choice(["attr", "dims", "elem", "drop", "rename", "meta", "bytes", "truncate"])
    if kind == "attr":
        node = rng.choice(graph.node)
        if node.attribute:
            attr = rng.choice(node.attribute)
            if attr.ints:
                attr.ints[rng.randrange(len(attr.ints))] = rng.choice(ABSURD)
            elif attr.type == onnx.AttributeProto.INT:
                attr.i = rng.choice(ABSURD)
    elif kind == "dims":
        value = rng.choice([*graph.input, *graph.output])
        dims = value.type.tensor_type.shape.dim
        if dims:
            dim = dims[rng.randrange(len(dims))]
            if rng.random() < 0.3:
                dim.dim_param = rng.choice(["N", "", "\x1b[31mred", "a" * 500])
            else:
                dim.dim_value = rng.choice(ABSURD)
    elif kind == "elem":
        value = rng.choice([*graph.input, *graph.output])
        value.type.tensor_type.elem_type = rng.choice([0, 2, 7, 8, 9, 10, 11, 16, 99])
    elif kind == "drop" and len(graph.node) > 1:
        del graph.node[rng.randrange(len(graph.node))]
    elif kind == "rename":
        node = rng.choice(graph.node)
        node.input[0] = rng.choice(["nowhere", "", node.output[0]])
    elif kind == "meta":
        key = rng.choice(["labels", "names", "onnxcam.preset", "imgsz", "character"])
        value = rng.choice([
            '{"1000000000": "x"}', '{"-1": "a"}', "{0: 'a', 'b': 2}", "\x1b]0;title\x07",
            "[" * 10_000, "tf", "nonsense", "[640, 640]", "[0, 0]", "__import__('os')",
            "x\n" * 200_000,
        ])  # fmt: skip
        out.metadata_props.add(key=key, value=value)
    data = out.SerializeToString()
    if kind == "bytes":
        raw = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        data = bytes(raw)
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    return data


def base_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    img = np.clip(
        np.linspace(0, 200, 48 * 64 * 3).reshape(48, 64, 3) + rng.uniform(0, 40, (48, 64, 3)),
        0,
        255,
    )
    img = img.astype(np.uint8)
    found = {}
    for ext in (".png", ".jpg", ".bmp", ".tif", ".webp"):
        ok, buf = cv2.imencode(ext, img)
        if ok:
            found[ext] = buf.tobytes()
    return found


def mutate_image(data: bytes, ext: str, rng: random.Random) -> bytes:
    raw = bytearray(data)
    kind = rng.choice(["flip", "truncate", "header", "junk", "zero"])
    if kind == "flip":
        for _ in range(rng.randint(1, 30)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif kind == "truncate":
        raw = raw[: rng.randrange(1, len(raw))]
    elif kind == "header":
        big = rng.choice([9_000, 50_000, 65_535, 2**31 - 1])
        if ext == ".png":
            raw[16:24] = struct.pack(">II", big, big)
        elif ext == ".bmp":
            raw[18:26] = struct.pack("<ii", big, -big)
        elif ext == ".jpg" and b"\xff\xc0" in raw:
            at = raw.index(b"\xff\xc0")
            raw[at + 5 : at + 9] = struct.pack(">HH", min(big, 65_535), min(big, 65_535))
        else:
            raw[4:12] = struct.pack("<II", big, big)
    elif kind == "junk":
        raw += bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
    else:
        raw = bytearray(len(raw))
    return bytes(raw)


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM counts only this program (ru_maxrss would
    also count the process that started it, which Linux carries across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Tally:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.problems: list[str] = []

    def add(self, outcome: str, detail: str = "") -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if outcome in ("unexpected", "multiline", "cli"):
            self.problems.append(f"{outcome}: {detail[-700:]}")


def explain_case(tally: Tally, model: Path | bytes, image: Path | np.ndarray) -> None:
    try:
        Explainer(model, preset="unit", time_limit_s=5.0).explain(image)
        tally.add("ok")
    except OnnxCamError as exc:
        text = str(exc)
        tally.add("multiline" if "\n" in text else "error", text)
    except Exception:
        tally.add("unexpected", traceback.format_exc())


def cli_case(tally: Tally, model: Path, image: Path, out: Path) -> None:
    args = ["explain", str(model), str(image), "-o", str(out), "--preset", "unit",
            "--time-limit", "5", "--overwrite"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    if result.exit_code == 0:
        return
    well_formed = (
        result.exit_code == 1
        and isinstance(result.exception, SystemExit)
        and len(lines) == 1
        and lines[0].startswith("Error: ")
        and "unexpected" not in lines[0]
        and "\x1b" not in result.output
    )
    if not well_formed:
        tally.add("cli", f"exit {result.exit_code}: {result.output!r} {result.exception!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", type=int, default=200)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    tally = Tally()
    stderr_log = tempfile.TemporaryFile()  # noqa: SIM115 (fd 2 points at it until the end)
    saved = os.dup(2)
    os.dup2(stderr_log.fileno(), 2)  # whatever native code prints lands here, and is counted
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            good_image = np.full((32, 32, 3), 120, np.uint8)
            model = base_model(folder)
            good_model = folder / "base.onnx"
            for i in range(args.models):
                data = mutate_model(model, rng)
                explain_case(tally, data, good_image)
                if i % 5 == 0:
                    path = folder / f"m{i}.onnx"
                    path.write_bytes(data)
                    cv2.imwrite(str(folder / "good.png"), good_image)
                    cli_case(tally, path, folder / "good.png", folder / "out")
            bases = base_images()
            for i in range(args.images):
                ext = rng.choice(sorted(bases))
                path = folder / f"img{i}{ext}"
                path.write_bytes(mutate_image(bases[ext], ext, rng))
                explain_case(tally, good_model, path)
                if i % 5 == 0:
                    cli_case(tally, good_model, path, folder / "out")
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
    stderr_log.seek(0)
    noise = stderr_log.read().decode(errors="replace")
    report = {
        "seed": args.seed,
        "models": args.models,
        "images": args.images,
        "counts": tally.counts,
        "problems": tally.problems,
        "stderr": noise[:2000],
        "peak_rss_mb": peak_rss_mb(),
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 1 if tally.problems or noise.strip() else 0


if __name__ == "__main__":
    sys.exit(main())
