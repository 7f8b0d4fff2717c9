"""Write a folder of synthetic images and their ground-truth boxes for ``onnxcam evaluate
--boxes``.

``--kind shapes``: "find the warm shape" images of :mod:`tools.synthetic` (96×96, the task of
``models/shapes_cnn.onnx``), each with its one target box and class. ``--kind scenes``:
multi-object scenes of :mod:`tools.scenes` (160×160, the detector's task), every object's box
and class. Boxes are ``{"box": [x0, y0, x1, y1], "class": c}`` in image pixels, in
``boxes.json`` next to the PNG files.

Example::

    python tools/eval_set.py --kind shapes --count 200 --seed 5 --out /tmp/shapes200
    onnxcam evaluate models/shapes_cnn.onnx /tmp/shapes200 --preset unit \\
        --boxes /tmp/shapes200/boxes.json --method scorecam,recipro,center,random
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kind", choices=("shapes", "scenes"), default="shapes")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--seed", type=int, default=5, help="not a training or test seed")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    args.out.mkdir(parents=True, exist_ok=True)
    boxes: dict[str, list[dict]] = {}
    if args.kind == "shapes":
        from tools.synthetic import make_samples

        for i, sample in enumerate(make_samples(args.count, seed=args.seed)):
            name = f"shapes_{i:04d}.png"
            cv2.imwrite(str(args.out / name), sample.image[:, :, ::-1])
            boxes[name] = [{"box": [float(v) for v in sample.box], "class": int(sample.label)}]
    else:
        from tools.scenes import make_scenes

        for i, scene in enumerate(make_scenes(args.count, seed=args.seed)):
            name = f"scene_{i:04d}.png"
            cv2.imwrite(str(args.out / name), scene.image[:, :, ::-1])
            boxes[name] = [
                {"box": [float(v) for v in box], "class": int(c)}
                for box, c in zip(scene.boxes, scene.classes, strict=True)
            ]
    (args.out / "boxes.json").write_text(json.dumps(boxes, indent=1) + "\n")
    print(f"wrote {len(boxes)} images and boxes.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
