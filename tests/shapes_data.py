"""Folders of small synthetic images (tools/synthetic.py, 96x96) for the dataset-scale tests,
and a target that kills its process on one image (a stand-in for a segfault or an OOM kill)."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from tools.synthetic import make_samples

ROOT = Path(__file__).resolve().parents[1]
SHAPES_MODEL = ROOT / "models" / "shapes_cnn.onnx"


def write_shapes(folder: Path, count: int, *, seed: int = 7, split: bool = True) -> list[Path]:
    """``count`` PNGs below ``folder`` (in two subfolders when ``split``); returns them."""
    paths = []
    for i, sample in enumerate(make_samples(count, seed=seed)):
        where = folder / ("a" if i % 2 else "b") if split else folder
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"img{i:03d}.png"
        assert cv2.imwrite(str(path), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def write_bad(folder: Path) -> list[Path]:
    """A PNG that is only a signature and a JPEG of no bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    broken, empty = folder / "broken.png", folder / "empty.jpg"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 64)
    empty.write_bytes(b"")
    return [broken, empty]


class KillOn:
    """A target (the first output's first logit) that SIGKILLs its own process when the clean
    outputs of one image come by: what a segfault in native code or the OOM killer does to
    a worker, with no hook in onnxcam."""

    def __init__(self, clean: np.ndarray) -> None:
        self.clean = np.asarray(clean, np.float32)

    def __call__(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        out = next(iter(outputs.values()))
        if out.shape[0] == 1 and np.allclose(out[0], self.clean, atol=1e-6):
            os.kill(os.getpid(), signal.SIGKILL)
        return out[:, 0]


class Holder:
    """An actor that only holds the resources it was started with (a busy cluster)."""

    def ready(self) -> bool:
        return True
