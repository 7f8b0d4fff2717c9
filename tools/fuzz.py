#!/usr/bin/env python3
"""Fuzz onnxcam with mutated models and images, and hostile option values: every outcome must
be a result or one clean error line; never a traceback, a crash, native noise on stderr, or
memory past a bound.

Models are the tests' tiny CNN, mutated at the proto level (attributes, shapes, element
types, nodes, metadata) or at the byte level; images are small PNG, JPEG, BMP, TIFF and WebP
files with bytes flipped, truncated, headers rewritten to absurd sizes, or junk appended.
Each case goes through the library (``Explainer(...).explain``), and every fifth one through
the command line as well. Option cases give one to three options of ``explain``, ``evaluate``
or ``nodes`` a hostile value each (NaN, infinities, huge, negative, empty, words, control
characters, a forged line) on the tiny model and a good image. Record cases put hostile lines
(names that leave the folder, wrong types, huge, nested or cut lines) into a real output
folder's ``results.jsonl`` and run ``report``, a rerun or ``--overwrite`` on it: one error line
at most, and no file outside the folder changed; manifest cases read hostile CSV manifests as
``--engine ray`` does. Everything runs in this
process, with file descriptor 2 captured: a crash ends the process (the caller sees it), and
anything native code prints is counted.

Usage::

    python tools/fuzz.py --seed 0 --models 200 --images 200 [--options 200] [--records 100]
        [--manifests 200] [--json counts.json]

The test suite runs it on a fixed seed in a subprocess (tests/test_fuzz.py); run it longer by
hand with larger counts and other seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import struct
import sys
import tempfile
import traceback
from pathlib import Path

import click
import cv2
import numpy as np
import onnx
from click.testing import CliRunner, Result

ROOT = Path(__file__).resolve().parents[1]
# This checkout's onnxcam, as the tests import it (not another installed copy), and its tests'
# tiny models.
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

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


# ----------------------------------------------------------------------------- options

#: Values that no option may take quietly: not-a-number, infinities, huge, tiny and negative
#: numbers, fractions where integers belong, empty text, words, lists of the wrong length,
#: absurd sizes, files that never end, escape sequences and a line that forges another. (No
#: NUL: no process can receive one in its arguments.)
HOSTILE_VALUES = [
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e308", "-1e308", "1e-320", "0", "-0",
    "-1", "0.5", "1.5", str(2**31), str(2**63), str(10**30), "", " ", "abc", "1,2", "1,2,3,4",
    "nan,nan,nan", "inf,1,1", "0,0,0", "1x0", "99999x99999", "/dev/zero", ".", "\x1b[31mred",
    "a\nFAKE: forged line", "\r\t\x07", "\u202etxt", "\u0663",
]  # fmt: skip

# Each command with what runs it cheaply on the tiny model; the fuzzed options come after,
# so that they win. Ray is never started: --engine only ever gets a hostile value or local.
_OPTION_COMMANDS = {
    "explain": ["--preset", "unit", "--time-limit", "2", "--overwrite"],
    "evaluate": ["--preset", "unit", "--time-limit", "2", "--method", "center", "--steps", "2",
                 "--no-road", "--no-adcc"],
    "nodes": [],
}  # fmt: skip


def hostile_args(option: click.Option, rng: random.Random) -> list[str]:
    """``option`` on the command line with a hostile value (a flag as it is; a choice now and
    then with a valid value, so that what it enables is fuzzed too)."""
    name = max(option.opts, key=len)
    if option.is_flag:
        return [rng.choice([*option.opts, *option.secondary_opts])]
    if isinstance(option.type, click.Choice) and rng.random() < 0.4:
        return [name, rng.choice([c for c in option.type.choices if c != "ray"])]
    return [name, rng.choice(HOSTILE_VALUES)]


def strict_json(folder: Path, skip: tuple[str, ...] = ()) -> str | None:
    """The first JSON file under ``folder`` (but those named in ``skip``) that holds NaN or
    Infinity (which JSON.parse refuses), or None."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    for path in sorted(folder.rglob("*.json*")) if folder.is_dir() else []:
        if path.name in skip:
            continue
        text = path.read_text(encoding="utf-8")
        try:
            for line in text.splitlines() if path.suffix == ".jsonl" else [text]:
                json.loads(line, parse_constant=refuse)
        except ValueError as exc:
            return f"{path.name}: {exc}"
    return None


_ALLOWED = ("Usage: ", "Try '", "note: ")  # click's usage lines, the Explainer's notes


def option_problem(result: Result, out: Path, skip: tuple[str, ...] = ()) -> str | None:
    """What is wrong with a run's output: a traceback, a control character or a forged line
    anywhere, NaN or Infinity in a JSON file it wrote, or a failure that is not one error
    line (under click's usage lines, or the Explainer's notes); None when nothing is."""
    text = result.output
    lines = [line for line in text.splitlines() if line.strip()]
    if "Traceback" in text or "unexpected" in text.lower():
        return "a traceback or an unexpected error"
    if any(c in text for c in "\x1b\r\x07\u202e") or any(ln.startswith("FAKE") for ln in lines):
        return "a control character or a forged line"
    if result.exit_code == 0:
        bad = strict_json(out, skip)
        return None if bad is None else f"NaN or Infinity in {bad}"
    errors = [line for line in lines if line.startswith("Error: ")]
    others = [line for line in lines if not line.startswith(("Error: ", *_ALLOWED))]
    if (
        result.exit_code in (1, 2)
        and isinstance(result.exception, SystemExit)
        and len(errors) == 1
        and not others
    ):
        return None
    return f"exit {result.exit_code}, not one error line"


def fuzz_options(tally: Tally, rng: random.Random, cases: int, folder: Path) -> None:
    """``cases`` runs of a command with one to three of its options given hostile values, in a
    working folder of their own (relative outputs land there)."""
    model = build_tiny(folder / "opt_model.onnx", tiny_weights())
    image = folder / "opt_good.png"
    cv2.imwrite(str(image), np.full((16, 16, 3), 120, np.uint8))
    work = folder / "opt_cwd"
    work.mkdir()
    here = os.getcwd()
    os.chdir(work)
    try:
        for _ in range(cases):
            command = rng.choice(sorted(_OPTION_COMMANDS))
            options = [p for p in cli.commands[command].params if isinstance(p, click.Option)]
            chosen = rng.sample(options, rng.randint(1, min(3, len(options))))
            fuzzed = [arg for option in chosen for arg in hostile_args(option, rng)]
            given = [str(model)] if command == "nodes" else [str(model), str(image), "-o", "out"]
            args = [command, *given, *_OPTION_COMMANDS[command], *fuzzed]
            result = CliRunner().invoke(cli, args)
            problem = option_problem(result, work / "out")
            if problem:
                tally.add("cli", f"{problem}: {args[3:]!r} -> {result.output!r}")
            else:
                tally.add("option-ok" if result.exit_code == 0 else "option-refused")
    finally:
        os.chdir(here)


# ----------------------------------------------------------------------------- records

#: Names a record may give for its files that leave the output folder, or name its own state.
HOSTILE_NAMES = [
    "../victim.txt", "/etc/passwd", "//attacker.example/p.png", "a/../../b.png", "", ".",
    "x\\..\\y.png", "C:evil.png", "thumbs/../../z.jpg", "a\x00b.png", "results.jsonl",
    "run.json", ".onnxcam.lock", "../outside/photo.png",
]  # fmt: skip
_RECORD_VALUES: list[object] = [
    None, 5, -1.5, True, [], [1], {}, {"a": 1}, "x" * 5000, "line\nFAKE: forged line",
    "\x1b[31mred", float("nan"), float("inf"),
]  # fmt: skip


def mutate_record(record: dict, rng: random.Random) -> str:
    """One hostile ``results.jsonl`` line made from a real record: names that leave the
    folder, values of the wrong type, a missing field, a huge or deeply nested one, flipped
    bytes, or a line that is not an object."""
    line = json.loads(json.dumps(record))
    kind = rng.choice(["name", "name", "value", "drop", "huge", "nest", "bytes", "type"])
    if kind == "name":
        files = line.setdefault("files", {})
        first = (line.get("targets") or [{}])[0]
        holder = rng.choice([files, first.setdefault("files", {})])
        holder[rng.choice(["json", "overlay", "saliency", "npy"])] = rng.choice(HOSTILE_NAMES)
    elif kind == "value":
        line[rng.choice(sorted(line))] = rng.choice(_RECORD_VALUES)
    elif kind == "drop":
        line.pop(rng.choice(sorted(line)), None)
    elif kind == "huge":
        line["notes"] = ["x" * rng.choice([10, 1 << 20, (1 << 20) + 100])]
    elif kind == "nest":
        depth = rng.choice([10, 500, 5000])
        line["notes"] = "NEST"
        return json.dumps(line).replace('"NEST"', "[" * depth + "1" + "]" * depth)
    elif kind == "type":
        return json.dumps(rng.choice([[line], "text", 5, None]))
    text = json.dumps(line, allow_nan=True)
    if kind == "bytes":
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(32, 127)
        return raw.decode("latin-1")
    return text


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def fuzz_records(tally: Tally, rng: random.Random, cases: int, folder: Path) -> None:
    """``cases`` runs of ``report``, a rerun or ``--overwrite`` on an output folder whose
    ``results.jsonl`` holds hostile lines among real ones: each must end in a result or one
    error line, and no file outside the folder may change."""
    if not cases:
        return
    model = build_tiny(folder / "rec_model.onnx", tiny_weights())
    inputs = folder / "rec_in"
    inputs.mkdir()
    for i in range(2):
        cv2.imwrite(str(inputs / f"{i}.png"), np.full((16, 16, 3), 60 * i, np.uint8))
    outside = folder / "rec_outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("precious\n")
    cv2.imwrite(str(outside / "photo.png"), np.full((300, 300, 3), 200, np.uint8))
    base = folder / "rec_base"
    args = ["explain", str(model), str(inputs), "-o", str(base), "--preset", "unit"]
    CliRunner().invoke(cli, args)
    good = [json.loads(x) for x in (base / "results.jsonl").read_text().splitlines()]
    before = _snapshot(outside)
    for i in range(cases):
        out = folder / f"rec_out{i % 4}"
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(base, out)
        with open(out / "results.jsonl", "a", encoding="utf-8") as handle:
            for _ in range(rng.randint(1, 4)):
                handle.write(mutate_record(rng.choice(good), rng) + "\n")
        command = rng.choice(["report", "rerun", "overwrite"])
        if command == "report":
            args = ["report", str(out)]
        else:
            args = ["explain", str(model), str(inputs), "-o", str(out), "--preset", "unit"]
            args += ["--overwrite"] if command == "overwrite" else []
        result = CliRunner().invoke(cli, args)
        problem = option_problem(result, out, skip=("results.jsonl",))  # hostile by design
        if problem is None and _snapshot(outside) != before:
            problem = "a file outside the output folder changed"
        if problem:
            tally.add("cli", f"records, {command}: {problem}: {result.output[-300:]!r}")
        else:
            tally.add("record-ok" if result.exit_code == 0 else "record-refused")


def fuzz_manifests(tally: Tally, rng: random.Random, cases: int, folder: Path) -> None:
    """``cases`` hostile CSV manifests read as ``--engine ray`` reads them (no Ray is
    started): each is a table or one ConfigError line."""
    if not cases:
        return
    try:
        from onnxcam.dataset.manifest import read_manifest
    except ImportError:  # no pyarrow: the Ray extra is not installed
        return
    rows = [
        "a.png",
        "./a.png",
        "",
        " ",
        "s3://b/x.png",
        "s3://b/./x.png",
        "file:///dev/zero",
        "../../etc/passwd",
        "x\nFAKE",
        '"quoted,comma.png"',
        "a" * 300,
        "\x1b[31m.png",
    ]
    headers = ["path", "path,target,label", "file", "path,path", "", "path,target"]
    for i in range(cases):
        lines = [rng.choice(headers)]
        lines += [rng.choice(rows) + rng.choice(["", ",top:2", ",class:x,", ",,"])
                  for _ in range(rng.randint(0, 6))]  # fmt: skip
        path = folder / f"manifest{i % 4}.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            read_manifest(str(path))
            tally.add("manifest-ok")
        except OnnxCamError as exc:
            text = str(exc)
            tally.add("multiline" if "\n" in text else "manifest-refused", text)
        except Exception:
            tally.add("unexpected", traceback.format_exc())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", type=int, default=200)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--options", type=int, default=0, help="hostile option cases")
    p.add_argument("--records", type=int, default=0, help="hostile results.jsonl cases")
    p.add_argument("--manifests", type=int, default=0, help="hostile manifest cases")
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
            fuzz_options(tally, rng, args.options, folder)
            fuzz_records(tally, rng, args.records, folder)
            fuzz_manifests(tally, rng, args.manifests, folder)
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
        "options": args.options,
        "records": args.records,
        "manifests": args.manifests,
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
