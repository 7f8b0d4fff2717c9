"""The shipped synthetic-scene detector and segmenter (models/README.md), explained end to end on
fresh scenes from tools/scenes.py (a seed the training never used): maps point at the object
asked about, follow the chosen instance, and the three exports of the detector explain alike.

The full-size measurements (200 scenes, every node choice) are tools/eval_localisation.py's;
the thresholds here sit below what it reports so that a regression fails, not noise.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT

from onnxcam import Explainer
from onnxcam.cli import cli
from tools.eval_localisation import distance, inside
from tools.scenes import make_scenes
from tools.synthetic import CLASSES

DETECTOR = ROOT / "models" / "shapes_det_yolov8.onnx"
SEGMENTER = ROOT / "models" / "shapes_seg.onnx"
SEED = 31337


def box_spec(box: np.ndarray, cls: int) -> str:
    return "detection:box=" + ",".join(f"{v:g}" for v in box) + f":class={cls}"


@pytest.fixture(scope="module")
def explained():
    """24 wide scenes (letterboxed into the 160 x 160 input), every object explained."""
    scenes = make_scenes(24, seed=SEED, size=(160, 224))
    explainer = Explainer(DETECTOR, threads=2)
    results = []
    for scene in scenes:
        specs = [box_spec(b, int(c)) for b, c in zip(scene.boxes, scene.classes, strict=True)]
        results.append(explainer.explain(scene.image, target=specs))
    return scenes, results


def test_box_targets_point_inside_their_objects(explained):
    scenes, results = explained
    hits, energy, share = [], [], []
    for scene, result in zip(scenes, results, strict=True):
        assert len(result.targets) == len(scene.boxes)
        for box, target in zip(scene.boxes, result.targets, strict=True):
            sal = target.saliency
            assert sal.shape == scene.image.shape[:2]
            assert np.isfinite(sal).all()
            x, y = target.map_stats()["peak"]
            hits.append(inside(box, x, y))
            x0, y0, x1, y1 = box.astype(int)
            energy.append(float(sal[y0:y1, x0:x1].sum() / sal.sum()))
            share.append((x1 - x0) * (y1 - y0) / sal.size)
    hit_rate = float(np.mean(hits))
    print(f"\nhit {hit_rate:.3f} energy {np.mean(energy):.3f} share {np.mean(share):.3f}")
    # 0.94 over 200 scenes (0.95 here); the scales stacked into one sum instead of fused as
    # equals gave 0.83 (0.83 here), a single scale 0.57-0.71, a map that ignores the box ~0.3
    assert hit_rate >= 0.88
    assert np.mean(energy) > 3 * np.mean(share)


def test_the_map_follows_the_chosen_instance_of_a_class(explained):
    scenes, results = explained
    nearer, pairs = 0, 0
    for scene, result in zip(scenes, results, strict=True):
        peaks = [t.map_stats()["peak"] for t in result.targets]
        for i in range(len(scene.boxes)):
            for j in range(len(scene.boxes)):
                if i == j or scene.classes[i] != scene.classes[j]:
                    continue
                pairs += 1
                mine, theirs = scene.boxes[i], scene.boxes[j]
                nearer += distance(mine, *peaks[i]) < distance(theirs, *peaks[i])
    print(f"\npeak nearer the chosen instance in {nearer}/{pairs}")
    assert pairs >= 20
    assert nearer / pairs >= 0.85


def test_the_three_exports_explain_alike():
    scene = make_scenes(1, seed=SEED + 1)[0]
    spec = box_spec(scene.boxes[0], int(scene.classes[0]))
    maps = {
        fmt: Explainer(ROOT / "models" / f"shapes_det_{fmt}.onnx", threads=2)
        .explain(scene.image, target=spec)
        .saliency
        for fmt in ("yolov8", "yolov5", "nms")
    }
    np.testing.assert_allclose(maps["yolov5"], maps["yolov8"], atol=1e-5)
    # after in-graph NMS, a masked image whose detection falls under 0.25 scores 0 instead
    # of its small raw score: a map that differs in detail but points at the same object
    corr = np.corrcoef(maps["nms"].ravel(), maps["yolov8"].ravel())[0, 1]
    assert corr > 0.8
    for sal in maps.values():
        y, x = np.unravel_index(np.argmax(sal), sal.shape)
        assert distance(scene.boxes[0], x, y) <= 8


def test_by_default_every_detection_is_explained_with_its_name(tmp_path):
    scene = make_scenes(1, seed=SEED + 2, size=(160, 224))[0]
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    run = CliRunner().invoke(cli, ["explain", str(DETECTOR), str(path), "-o", str(out)])
    assert run.exit_code == 0, run.output
    record = json.loads((out / "scene.json").read_text())
    targets = record["targets"]
    assert len(targets) == len(scene.boxes)
    for truth, cls in zip(scene.boxes, scene.classes, strict=True):
        found = [t for t in targets if t["label"] == CLASSES[int(cls)]]
        ious = [iou(np.array(t["box"]), truth) for t in found]
        assert ious and max(ious) > 0.7
    overlays = sorted(p.name for p in out.glob("scene_t*_overlay.png"))
    assert overlays == [f"scene_t{i}_overlay.png" for i in range(len(targets))]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_segmentation_maps_fall_on_the_class_asked_about():
    scenes = make_scenes(16, seed=SEED + 3)
    explainer = Explainer(SEGMENTER, threads=2)
    hits, energy, share = [], [], []
    for scene in scenes:
        present = sorted(int(c) for c in np.unique(scene.label_map) if c > 0)
        result = explainer.explain(scene.image, target=[f"segmentation:class={c}" for c in present])
        for cls, target in zip(present, result.targets, strict=True):
            region = scene.label_map == cls
            x, y = target.map_stats()["peak"]
            hits.append(bool(region[y, x]))
            energy.append(float(target.saliency[region].sum() / target.saliency.sum()))
            share.append(float(region.mean()))
    print(f"\nhit {np.mean(hits):.3f} energy {np.mean(energy):.3f} share {np.mean(share):.3f}")
    assert np.mean(hits) >= 0.8
    assert np.mean(energy) > 3 * np.mean(share)
