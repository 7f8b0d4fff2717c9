#!/usr/bin/env python3
"""Does the map point at the object? Localisation of detection and segmentation targets on
fresh synthetic scenes (tools/scenes.py), for several choices of node.

Detector (``--detector``): every ground-truth object of every scene is explained with
``detection:box=<its box>:class=<its class>`` (all objects of a scene from one set of masked
passes). Per object: a *hit* when the map's maximum lies inside the object's box, and the
*energy* inside the box (the share of the map's sum that falls in it); *within 8 px* also
counts a peak at most 8 pixels outside the box (the pointing game's usual tolerance is 15 px
at 224). For two objects of the same class in one scene, *follows* counts the pairs where
each object's map peaks in its own box and not in the other's, and *nearer* the maps whose
peak lies nearer their own box than the other's.

Segmenter (``--segmenter``): every class present in a scene is explained with
``segmentation:<1 + class>`` (the predicted region); a hit when the map's maximum lies on a
pixel of that class, and the energy on those pixels.

Node choices: ``auto`` and, for the detector, each scale's head input alone and the last
hidden layer of the class branch (what ``auto`` picked before detectors were recognised).

Example::

    python tools/eval_localisation.py --detector models/shapes_det_yolov8.onnx --images 200 \\
        --size 160x224 --threads 2
    python tools/eval_localisation.py --segmenter models/shapes_seg.onnx --images 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxcam import Explainer, graph  # noqa: E402
from onnxcam.errors import OnnxCamError  # noqa: E402
from tools.scenes import make_scenes  # noqa: E402

SEED = 90210  # fresh: the models were trained and checked on other seeds


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def detector_nodes(model: Path) -> dict[str, str]:
    """``auto``, each scale's head input alone, and the old rule's pick."""
    explainer = Explainer(model)
    choices = {"auto (all scales)": "auto"}
    finest = sorted(explainer.candidates, key=lambda c: -c.spatial[0] * c.spatial[1])
    if len(finest) > 2:
        choices["two finest scales"] = ",".join(c.tensor for c in finest[:2])
    for cand in explainer.candidates:
        h, w = cand.spatial
        choices[f"{h}x{w} head input"] = cand.tensor
    index = graph.GraphIndex(graph.load_model(model))
    choices["old rule (last map upstream)"] = graph.auto_choice(index).candidate.tensor
    return choices


def inside(box: np.ndarray, x: int, y: int) -> bool:
    return bool(box[0] <= x < box[2] and box[1] <= y < box[3])


def distance(box: np.ndarray, x: int, y: int) -> float:
    """Pixels from (x, y) to the nearest pixel of the box (0 inside)."""
    dx = max(box[0] - x, 0.0, x - (box[2] - 1))
    dy = max(box[1] - y, 0.0, y - (box[3] - 1))
    return float(np.hypot(dx, dy))


def energy(saliency: np.ndarray, region: np.ndarray) -> float:
    total = float(saliency.sum())
    return float(saliency[region].sum()) / total if total > 0 else 0.0


def box_specs(boxes: np.ndarray, classes) -> list[str]:  # type: ignore[no-untyped-def]
    """``detection:box=...:class=...`` for each box and its class index."""
    return [
        "detection:box=" + ",".join(f"{v:g}" for v in box) + f":class={int(c)}"
        for box, c in zip(boxes, classes, strict=True)
    ]


def in_box(saliency: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """The map's energy inside the box, and the box's share of the image."""
    region = np.zeros(saliency.shape, bool)
    x0, y0, x1, y1 = box.astype(int)
    region[y0:y1, x0:x1] = True
    return energy(saliency, region), float(region.mean())


def run_detector(model: Path, scenes, node: str, threads: int, fuse: str = "equal") -> dict:  # type: ignore[no-untyped-def]
    explainer = Explainer(model, node=node, threads=threads, fuse=fuse)
    hits, energies, misses, follows, nearer, pairs, seconds = [], [], [], 0, 0, 0, []
    areas = []
    for scene in scenes:
        t0 = time.perf_counter()
        result = explainer.explain(scene.image, target=box_specs(scene.boxes, scene.classes))
        seconds.append(time.perf_counter() - t0)
        peaks = []
        for target, box in zip(result.targets, scene.boxes, strict=True):
            x, y = target.map_stats()["peak"]
            peaks.append((x, y))
            hits.append(inside(box, x, y))
            if not hits[-1]:
                misses.append(distance(box, x, y))
            share, area = in_box(target.saliency, box)
            energies.append(share)
            areas.append(area)
        for i in range(len(scene.boxes)):
            for j in range(i + 1, len(scene.boxes)):
                if scene.classes[i] != scene.classes[j]:
                    continue
                pairs += 1
                a, b = scene.boxes[i], scene.boxes[j]
                nearer += (distance(a, *peaks[i]) < distance(b, *peaks[i])) + (
                    distance(b, *peaks[j]) < distance(a, *peaks[j])
                )
                follows += int(
                    inside(a, *peaks[i]) and not inside(b, *peaks[i])
                    and inside(b, *peaks[j]) and not inside(a, *peaks[j])
                )  # fmt: skip
    return {
        "node": explainer.node_label,
        "objects": len(hits),
        "hit_rate": float(np.mean(hits)),
        "energy_in_box": float(np.mean(energies)),
        "box_area": float(np.mean(areas)),
        "energy_over_area": float(np.mean(np.array(energies) / np.array(areas))),
        "miss_distance_median": statistics.median(misses) if misses else None,
        "hit_within_8px": float(np.mean(hits)) + sum(d <= 8 for d in misses) / len(hits),
        "same_class_pairs": pairs,
        "follows_instance": follows / pairs if pairs else None,
        "peak_nearer_own": nearer / (2 * pairs) if pairs else None,
        "seconds_per_image": statistics.median(seconds),
    }


def run_segmenter(model: Path, scenes, node: str, threads: int) -> dict:  # type: ignore[no-untyped-def]
    explainer = Explainer(model, node=node, threads=threads)
    hits, energies, seconds, skipped = [], [], [], 0
    for scene in scenes:
        present = sorted(int(c) for c in np.unique(scene.label_map) if c > 0)
        specs = [f"segmentation:{c}" for c in present]
        t0 = time.perf_counter()
        try:
            result = explainer.explain(scene.image, target=specs)
        except OnnxCamError:  # a class the model predicts nowhere: explained one by one
            result = None
        seconds.append(time.perf_counter() - t0)
        targets = result.targets if result is not None else []
        if result is None:
            for spec in specs:
                try:
                    targets.extend(explainer.explain(scene.image, target=spec).targets)
                except OnnxCamError:
                    skipped += 1
        for target in targets:
            region = scene.label_map == int(target.class_index or 0)
            x, y = target.map_stats()["peak"]
            hits.append(bool(region[y, x]))
            energies.append(energy(target.saliency, region))
    return {
        "node": explainer.node_label,
        "classes_explained": len(hits),
        "not_predicted": skipped,
        "hit_rate": float(np.mean(hits)),
        "energy_in_class": float(np.mean(energies)),
        "seconds_per_image": statistics.median(seconds),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--detector", type=Path)
    kind.add_argument("--segmenter", type=Path)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", type=_size, default=(160, 160), help="scene size HxW")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nodes", nargs="*", help="node specs to compare (default: see above)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    scenes = make_scenes(args.images, seed=args.seed, size=args.size)
    rows = []
    if args.detector:
        choices = {n: n for n in args.nodes} if args.nodes else detector_nodes(args.detector)
        for name, node in choices.items():
            row = {"choice": name, **run_detector(args.detector, scenes, node, args.threads)}
            rows.append(row)
            follows = row["follows_instance"]
            shown = "n/a" if follows is None else f"{100 * follows:.1f} %"
            if row["peak_nearer_own"] is not None:
                shown += f" (peak nearer its own box {100 * row['peak_nearer_own']:.1f} %)"
            print(
                f"{name:32s} hit {100 * row['hit_rate']:5.1f} %  energy in box "
                f"{100 * row['energy_in_box']:5.1f} %  within 8 px "
                f"{100 * row['hit_within_8px']:5.1f} %  follows the instance {shown} "
                f"of {row['same_class_pairs']} pairs  {row['seconds_per_image']:.2f} s/image  "
                f"({row['objects']} objects; node {row['node']})",
                flush=True,
            )
    else:
        for node in args.nodes or ["auto"]:
            row = {"choice": node, **run_segmenter(args.segmenter, scenes, node, args.threads)}
            rows.append(row)
            print(
                f"{node:32s} hit {100 * row['hit_rate']:5.1f} %  energy on the class "
                f"{100 * row['energy_in_class']:5.1f} %  {row['seconds_per_image']:.2f} s/image "
                f"({row['classes_explained']} classes, {row['not_predicted']} predicted "
                f"nowhere; node {row['node']})",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
