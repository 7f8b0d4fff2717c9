"""Checks the shipped detector and segmenter ONNX models on fresh synthetic scenes.

Needs only numpy, OpenCV and onnxruntime (no torch), so it runs in the product's virtual
environment. From the repository root::

    python tools/check_detectors.py            # 200 scenes, seed 777
    python tools/check_detectors.py --scenes 500 --seed 3

It loads ``models/shapes_det_yolov8.onnx``, ``models/shapes_det_yolov5.onnx``,
``models/shapes_det_nms.onnx`` and ``models/shapes_seg.onnx``, runs them on scenes from
``tools/scenes.py`` (a seed the training never used) and prints

* per detector: precision and recall at IoU 0.5 (right class required) for detections with
  score > 0.25 after class-wise NMS (IoU 0.7, at most 100 per image), and mAP50 (detections
  with score > 0.001, per-class AP with 101-point interpolation as in COCO / Ultralytics);
* the agreement of the three detector exports (same detections, boxes and scores to 1e-4);
* for the segmenter: pixel accuracy, per-class IoU and mIoU at the output resolution
  (40 x 40; the ground truth there is the majority label of each 4 x 4 block).

The numpy post-processing here (:func:`nms`, :func:`decode_v5`, :func:`match_image`,
:func:`average_precision`, :func:`block_labels`) is also what the training scripts use to
report their numbers. :func:`nms` follows Ultralytics' ``NMSModel`` (the exporter's
``nms=True`` graph): each anchor keeps its best class only, scores must be strictly greater
than ``conf``, NMS runs per class and suppresses IoU > ``iou``, the result is sorted by score
and cut at ``max_det``.

Exit status 1 if a detector misses the recall target (0.9), the exports disagree, or the
segmenter's mIoU is below 0.75.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.scenes import CLASSES, make_scenes  # noqa: E402

CONF = 0.25  # Ultralytics' predict default, and its exporter's default for nms=True
IOU_NMS = 0.7  # Ultralytics' default NMS IoU
MAX_DET = 100
CONF_MAP = 0.001  # Ultralytics' val default
SEG_STRIDE = 4


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW in [0, 1] (the ``unit`` preset)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of ``(n, 4)`` and ``(m, 4)`` x1, y1, x2, y2 boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def decode_v5(pred: np.ndarray) -> np.ndarray:
    """YOLOv5 layout ``(A, 5 + nc)`` -> YOLOv8 layout ``(4 + nc, A)`` (class x objectness)."""
    return np.concatenate([pred[:, :4], pred[:, 5:] * pred[:, 4:5]], axis=1).T


def nms(
    pred: np.ndarray, conf: float = CONF, iou: float = IOU_NMS, max_det: int = MAX_DET
) -> np.ndarray:
    """Class-wise NMS of one image's YOLOv8 output ``(4 + nc, A)`` (cx, cy, w, h, scores).

    Returns:
        ``(n, 6)`` float32 rows ``x1, y1, x2, y2, score, class``, score descending.
    """
    xywh, scores = pred[:4].T, pred[4:].T
    cls = scores.argmax(1)
    score = scores[np.arange(len(cls)), cls]
    keep = np.flatnonzero(score > conf)
    if len(keep) == 0:
        return np.zeros((0, 6), dtype=np.float32)
    xywh, cls, score = xywh[keep], cls[keep], score[keep]
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    order = np.argsort(-score, kind="stable")
    kept: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    ious = box_iou(boxes[order], boxes[order])
    same = cls[order][:, None] == cls[order][None, :]
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(int(order[i]))
        if len(kept) == max_det:
            break
        suppressed |= same[i] & (ious[i] > iou)
    k = np.array(kept)
    return np.concatenate(
        [boxes[k], score[k, None], cls[k, None].astype(np.float32)], axis=1
    ).astype(np.float32)


def match_image(
    dets: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray, iou: float = 0.5
) -> np.ndarray:
    """Greedy matching by score: a detection is a true positive if it has IoU >= ``iou``
    with a not yet matched ground-truth box of its class. Returns a bool per detection."""
    tp = np.zeros(len(dets), dtype=bool)
    if len(dets) == 0 or len(gt_boxes) == 0:
        return tp
    ious = box_iou(dets[:, :4], gt_boxes)
    ious[dets[:, 5][:, None].astype(np.int64) != gt_classes[None, :]] = 0.0
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i in np.argsort(-dets[:, 4], kind="stable"):
        cand = np.where(taken, 0.0, ious[i])
        j = int(cand.argmax())
        if cand[j] >= iou:
            tp[i] = True
            taken[j] = True
    return tp


def average_precision(tp: np.ndarray, score: np.ndarray, n_gt: int) -> float:
    """AP from detections pooled over images: 101-point interpolated precision-recall area."""
    if n_gt == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-score, kind="stable")
    ctp = np.cumsum(tp[order])
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(ctp) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    return float(trapezoid(np.interp(x, mrec, mpre), x))


def detection_metrics(
    dets_conf: list[np.ndarray],
    dets_map: list[np.ndarray],
    gt_boxes: list[np.ndarray],
    gt_classes: list[np.ndarray],
) -> dict[str, float]:
    """Precision / recall of ``dets_conf`` (IoU 0.5) and mAP50 of ``dets_map``, per image lists."""
    tp = np.concatenate(
        [match_image(d, b, c) for d, b, c in zip(dets_conf, gt_boxes, gt_classes, strict=True)]
    )
    n_det, n_gt = len(tp), int(sum(len(c) for c in gt_classes))
    out = {
        "precision": float(tp.sum() / max(n_det, 1)),
        "recall": float(tp.sum() / max(n_gt, 1)),
        "tp": float(tp.sum()),
        "fp": float(n_det - tp.sum()),
        "fn": float(n_gt - tp.sum()),
    }
    tpm = np.concatenate(
        [match_image(d, b, c) for d, b, c in zip(dets_map, gt_boxes, gt_classes, strict=True)]
    )
    allm = np.concatenate([d for d in dets_map if len(d)] or [np.zeros((0, 6), np.float32)])
    gtc = np.concatenate(gt_classes)
    aps = []
    for c in range(len(CLASSES)):
        sel = allm[:, 5] == c
        ap = average_precision(tpm[sel], allm[sel, 4], int((gtc == c).sum()))
        out[f"AP50_{CLASSES[c]}"] = ap
        aps.append(ap)
    out["mAP50"] = float(np.nanmean(aps))
    return out


def block_labels(label_maps: np.ndarray, stride: int = SEG_STRIDE, classes: int = 6) -> np.ndarray:
    """Label maps ``(N, H, W)`` -> ``(N, H / stride, W / stride)``: the majority label of each
    ``stride x stride`` block (ties go to the lower label, i.e. background first)."""
    n, h, w = label_maps.shape
    blocks = label_maps.reshape(n, h // stride, stride, w // stride, stride)
    counts = np.stack([(blocks == c).sum(axis=(2, 4)) for c in range(classes)], axis=-1)
    return counts.argmax(-1).astype(np.uint8)


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray, classes: int = 6) -> dict[str, float]:
    """Pixel accuracy, IoU per class (intersection and union summed over all images), mIoU."""
    out = {"pixel_accuracy": float((pred == truth).mean())}
    ious = []
    for c in range(classes):
        p, t = pred == c, truth == c
        union = int((p | t).sum())
        iou = float((p & t).sum() / union) if union else float("nan")
        ious.append(iou)
        out[f"IoU_{c}"] = iou
    out["mIoU"] = float(np.nanmean(ious))
    out["mIoU_objects"] = float(np.nanmean(ious[1:]))
    return out


def _session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _run(sess, x: np.ndarray, batch: int = 50) -> np.ndarray:  # type: ignore[no-untyped-def]
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    )


def _same(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> bool:
    return (
        a.shape == b.shape
        and bool(np.all(a[:, 5] == b[:, 5]))
        and np.allclose(a, b, atol=tol, rtol=0)
    )


def _fmt(m: dict[str, float]) -> str:
    return ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) and v % 1 else f"{k} {v:g}" for k, v in m.items()
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--seed", type=int, default=777, help="seed of the test scenes")
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    scenes = make_scenes(args.scenes, args.seed)
    x = to_input(np.stack([s.image for s in scenes]))
    gt_b = [s.boxes for s in scenes]
    gt_c = [s.classes for s in scenes]
    n_obj = sum(len(c) for c in gt_c)
    print(f"{args.scenes} scenes (seed {args.seed}), {n_obj} objects")
    ok = True

    v8 = _run(_session(args.models / "shapes_det_yolov8.onnx", args.threads), x)
    v5 = _run(_session(args.models / "shapes_det_yolov5.onnx", args.threads), x)
    with_nms = _run(_session(args.models / "shapes_det_nms.onnx", args.threads), x)
    print(f"outputs: yolov8 {v8.shape}, yolov5 {v5.shape}, nms {with_nms.shape}")
    dets = {
        "yolov8": [nms(o) for o in v8],
        "yolov5": [nms(decode_v5(o)) for o in v5],
        "nms": [o[o[:, 4] > 0] for o in with_nms],
    }
    dets_map = {
        "yolov8": [nms(o, conf=CONF_MAP) for o in v8],
        "yolov5": [nms(decode_v5(o), conf=CONF_MAP) for o in v5],
    }
    for name in ("yolov8", "yolov5"):
        m = detection_metrics(dets[name], dets_map[name], gt_b, gt_c)
        print(f"{name}: {_fmt(m)}")
        ok &= m["recall"] >= 0.9
    m = detection_metrics(dets["nms"], dets_map["yolov8"], gt_b, gt_c)
    print(f"nms (in-graph, conf 0.25): precision {m['precision']:.4f}, recall {m['recall']:.4f}")
    n_det = sum(len(d) for d in dets["yolov8"])
    for name in ("yolov5", "nms"):
        same = sum(_same(a, b) for a, b in zip(dets["yolov8"], dets[name], strict=True))
        diff = max(
            (
                float(np.abs(a - b).max())
                for a, b in zip(dets["yolov8"], dets[name], strict=True)
                if a.shape == b.shape and len(a)
            ),
            default=0.0,
        )
        print(
            f"agreement yolov8 vs {name}: {same}/{len(scenes)} images identical "
            f"({n_det} detections, max |diff| {diff:.2e})"
        )
        ok &= same == len(scenes)
    raw = np.abs(decode_v5(v5[0]) - v8[0]).max()
    print(f"yolov8 vs yolov5 raw outputs (image 0, scores = obj x cls): max |diff| {raw:.2e}")

    seg_path = args.models / "shapes_seg.onnx"
    logits = _run(_session(seg_path, args.threads), x)
    truth = block_labels(np.stack([s.label_map for s in scenes]))
    sm = segmentation_metrics(logits.argmax(1), truth)
    names = ("background", *CLASSES)
    print(f"segmenter: logits {logits.shape}")
    print(
        f"segmenter: pixel accuracy {sm['pixel_accuracy']:.4f}, mIoU {sm['mIoU']:.4f} "
        f"(objects only {sm['mIoU_objects']:.4f}); IoU "
        + ", ".join(f"{n} {sm[f'IoU_{c}']:.4f}" for c, n in enumerate(names))
    )
    ok &= sm["mIoU"] >= 0.75
    print(f"done in {time.perf_counter() - t0:.1f}s: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
