"""Shared helpers for the tools that compare onnxcam with pytorch-grad-cam.

Needs ``torch``, ``torchvision`` and ``grad-cam`` besides onnxcam (maintainer tools only).

- :func:`prepare_image`: one image as the model sees it, the same bytes for PyTorch and
  onnxcam: the whole image resized to the model size (area averaging when shrinking,
  bilinear when enlarging, as onnxcam does), then onnxcam's own ``to_tensor``;
- :func:`gradcam_scorecam`: pytorch-grad-cam's ``ScoreCAM`` on that tensor for one class;
- :func:`reference_map`: the same for pytorch-grad-cam's ``ScoreCAM``, ``AblationCAM`` and
  ``EigenCAM`` and torchcam's ``CAM`` (upsampled to the input as onnxcam does);
- :func:`pearson`, :func:`max_abs_diff`: map comparison.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np

from onnxcam import preprocess

IMAGE_SIZE = 224


def prepare_image(
    image: str | Path | np.ndarray, size: int = IMAGE_SIZE, preset: str = "imagenet"
) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb, x)``: the image resized to ``size``×``size`` (RGB uint8) and its float32 NCHW
    tensor (1, 3, size, size) under ``preset``.

    Passing ``rgb`` to onnxcam makes its input resize and its final map resize identities,
    so onnxcam and PyTorch see exactly ``x``.
    """
    if isinstance(image, (str, Path)):
        rgb = preprocess.read_image(image)
    else:
        rgb = preprocess.as_rgb(image)
    h, w = rgb.shape[:2]
    shrinking = size < w or size < h
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    rgb = np.ascontiguousarray(cv2.resize(rgb, (size, size), interpolation=interp))
    spec = preprocess.InputSpec("input", "NCHW", size, size, 3, np.dtype(np.float32))
    x = preprocess.to_tensor(rgb, spec, preprocess.PRESETS[preset])
    return rgb, x


def gradcam_scorecam(
    model, layer, x: np.ndarray, target: int, *, batch_size: int = 16, progress: bool = False
) -> tuple[np.ndarray, float]:
    """pytorch-grad-cam ``ScoreCAM`` for class ``target``: ``(map (H, W) float32, seconds)``.

    ``layer`` is the hooked module (its output is the feature map). The time covers the
    whole ``cam(...)`` call: activation pass, masked passes and combination.
    """
    return _gradcam("ScoreCAM", model, layer, x, target, batch_size=batch_size, progress=progress)


def _gradcam(
    name: str, model, layer, x: np.ndarray, target: int, *, batch_size: int, progress: bool
) -> tuple[np.ndarray, float]:
    """pytorch-grad-cam's method ``name`` (``ScoreCAM``, ``AblationCAM``, ``EigenCAM``)."""
    if not progress:
        os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is first imported
    import pytorch_grad_cam
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    tensor = torch.from_numpy(np.ascontiguousarray(x))
    with getattr(pytorch_grad_cam, name)(model=model, target_layers=[layer]) as cam:
        cam.batch_size = batch_size
        t0 = time.perf_counter()
        out = cam(input_tensor=tensor, targets=[ClassifierOutputTarget(int(target))])
        seconds = time.perf_counter() - t0
    return np.asarray(out[0], np.float32), seconds


#: onnxcam method -> (library, class, onnxcam --compat preset)
REFERENCES = {
    "scorecam": ("pytorch-grad-cam", "ScoreCAM", "grad-cam"),
    "ablation": ("pytorch-grad-cam", "AblationCAM", "grad-cam"),
    "eigencam": ("pytorch-grad-cam", "EigenCAM", "grad-cam"),
    "cam": ("torchcam", "CAM", "torchcam"),
}


def reference_map(
    method: str, model, layer, x: np.ndarray, target: int, *, batch_size: int = 16
) -> tuple[np.ndarray, float]:
    """The reference library's map of ``method`` (see :data:`REFERENCES`) for class
    ``target``, (H, W) float32, and its seconds. torchcam's CAM stays at feature resolution;
    it is upsampled bilinearly with half-pixel centres, as onnxcam upsamples."""
    import torch

    if method == "cam":
        tensor = torch.from_numpy(np.ascontiguousarray(x))
        from torchcam.methods import CAM

        fc = next(name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear))
        t0 = time.perf_counter()
        with CAM(model, target_layer=layer, fc_layer=fc, input_shape=tuple(x.shape[1:])) as cam:
            with torch.no_grad():
                scores = model(tensor)
            small = cam(class_idx=int(target), scores=scores)[0][0].numpy()
        seconds = time.perf_counter() - t0
        size = (x.shape[3], x.shape[2])
        return cv2.resize(small.astype(np.float32), size, interpolation=cv2.INTER_LINEAR), seconds
    name = REFERENCES[method][1]
    return _gradcam(name, model, layer, x, target, batch_size=batch_size, progress=False)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps, flattened (NaN when either is constant)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
