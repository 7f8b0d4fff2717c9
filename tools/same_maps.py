"""Check that two commits compute the same maps, bit for bit.

Each commit is checked out into a temporary ``git worktree``; in each, a child process with that
worktree's ``onnxcam`` first on ``sys.path`` explains the examples with every method
(:data:`onnxcam.methods.METHODS`; RISE, SS-CAM and IS-CAM with fewer samples through their
options) on the shipped models, and saves every target's map (at the image's and at the input's
size) to a ``.npz``. The two sets are then compared: the largest absolute difference per
(model, method) is printed, and the exit status is 1 when any map differs at all, when a pair
ran on one side only, or when a pair is refused differently; method/model pairs that a commit
refuses with an onnxcam error (a documented refusal, e.g. ``cam`` without a linear head) are
listed, not compared.

Example::

    python tools/same_maps.py --before 228ec58 --after HEAD
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

#: model file -> the example images it is explained on (few, so both runs fit in minutes).
CASES = {
    "shapes_cnn.onnx": ["shapes_scenes.png", "coffee.png"],
    "efficientnet_lite0.onnx": ["coffee.png"],
    "shapes_det_yolov8.onnx": ["shapes_scenes.png"],
    "shapes_det_nms.onnx": ["shapes_scenes.png"],
    "shapes_seg.onnx": ["shapes_scenes.png"],
}

# Runs in the child, inside one worktree: argv = worktree, output .npz, cases as JSON.
CHILD = r"""
import json, sys
from dataclasses import replace
from pathlib import Path

tree, out, cases = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, str(tree))
import numpy as np
import onnxcam
from onnxcam.errors import OnnxCamError
from onnxcam.methods import METHODS

where = Path(onnxcam.__file__).resolve()
if tree.resolve() not in where.parents:
    sys.exit(f"onnxcam was imported from {where}, not from {tree}")
FEWER = {"rise": {"samples": 200}, "sscam": {"samples": 2}, "iscam": {"samples": 3}}
maps, refused = {}, {}
for model, images in cases.items():
    for method in METHODS:
        options = None
        if method in FEWER:
            options = replace(METHODS[method].presets["official"], **FEWER[method])
        key = f"{model}|{method}"
        try:
            explainer = onnxcam.Explainer(tree / "models" / model, method=method, options=options)
            for image in images:
                result = explainer.explain(tree / "examples" / image)
                for i, t in enumerate(result.targets):
                    maps[f"{key}|{image}|t{i}|image"] = t.saliency
                    maps[f"{key}|{image}|t{i}|input"] = t.saliency_input
        except OnnxCamError as exc:
            refused[key] = f"{type(exc).__name__}: {exc}"
        print(key, "refused" if key in refused else "done", file=sys.stderr, flush=True)
np.savez(out, **maps)
Path(out + ".refused.json").write_text(json.dumps(refused, indent=1))
"""


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def maps_of(rev: str, work: Path, tag: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every map the commit ``rev`` computes, and the pairs it refuses."""
    tree = work / tag
    git("worktree", "add", "--detach", "--force", str(tree), rev)
    try:
        out = str(work / f"{tag}.npz")
        env = {**os.environ, "PYTHONPATH": str(tree)}
        child = [sys.executable, "-c", CHILD, str(tree), out, json.dumps(CASES)]
        subprocess.run(child, check=True, env=env, cwd=str(tree))
        with np.load(out) as saved:
            maps = {k: saved[k] for k in saved.files}
        refused = json.loads(Path(out + ".refused.json").read_text())
        return maps, refused
    finally:
        git("worktree", "remove", "--force", str(tree))


def compare(
    before: tuple[dict[str, np.ndarray], dict[str, str]],
    after: tuple[dict[str, np.ndarray], dict[str, str]],
) -> bool:
    """Print the largest difference per (model, method); True when every map is identical."""
    (a, a_refused), (b, b_refused) = before, after
    same = True
    pairs = sorted({k.rsplit("|", 3)[0] for k in (*a, *b)} | set(a_refused) | set(b_refused))
    for pair in pairs:
        model, method = pair.split("|")
        if pair in a_refused or pair in b_refused:
            agree = a_refused.get(pair) == b_refused.get(pair)
            same &= agree
            shown = (a_refused.get(pair) or b_refused.get(pair) or "").splitlines()[0][:110]
            state = "refused (both)" if agree else "REFUSED ON ONE SIDE ONLY / DIFFERENTLY"
            print(f"{model:26} {method:10} {state}: {shown}")
            continue
        keys = sorted({k for k in (*a, *b) if k.startswith(pair + "|")})
        worst = 0.0
        for key in keys:
            if key not in a or key not in b or a[key].shape != b[key].shape:
                worst = float("inf")
                break
            diff = np.abs(a[key].astype(np.float64) - b[key].astype(np.float64))
            worst = max(worst, float(diff.max(initial=0.0)))
            if not np.array_equal(a[key], b[key], equal_nan=True):
                worst = max(worst, float(np.finfo(np.float64).tiny))  # differs, even if only NaN
        same &= worst == 0.0
        print(f"{model:26} {method:10} maps {len(keys) // 2:3}  max |diff| {worst:.3g}")
    return same


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before", required=True, help="a commit (e.g. the merge-base with main)")
    p.add_argument("--after", default="HEAD", help="a commit (default: HEAD)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="same-maps-") as tmp:
        work = Path(tmp)
        before = maps_of(git("rev-parse", args.before), work, "before")
        after = maps_of(git("rev-parse", args.after), work, "after")
    same = compare(before, after)
    print("identical" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
