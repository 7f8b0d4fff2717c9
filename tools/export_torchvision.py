#!/usr/bin/env python3
"""Export randomly initialised torchvision classifiers to ONNX (for benchmarks and parity).

This is a maintainer tool: it is *not* needed to use onnxcam. It needs ``torch`` and
``torchvision`` (pin them: e.g. ``torch==2.14.1 torchvision==0.29.1``), ``onnx`` and, for the
check after export, ``onnxruntime``. No pretrained weights are downloaded: every model is built
with ``weights=None`` after ``torch.manual_seed(seed)``, so the same name and seed give the same
weights in every process on the same torch version (BatchNorm running stats are mean 0 / var 1).
Random-init networks give near-uniform class probabilities: the files are meant for timing and
for comparing implementations on identical weights, not for looking at explanations.

The exported graph has one float32 input ``input`` (batch, 3, 224, 224) (NCHW, RGB, torchvision
normalisation) with a dynamic ``batch`` dimension and one output ``logits`` (batch, 1000), is
written with the TorchScript exporter (``dynamo=False``, module-path node names such as
``/layer4/layer4.1/relu_1/Relu``) at opset 17, and carries ``metadata_props`` ``onnxcam.preset``
= ``imagenet`` plus provenance keys.

Usage::

    python tools/export_torchvision.py [--models resnet18 resnet50] [--seed 0] \\
        [--out-dir build/models]

From Python (``tools/parity.py``, ``tools/bench.py``)::

    from export_torchvision import build_torchvision, export_onnx
    model = build_torchvision("resnet18", seed=0)      # eval mode
    export_onnx(model, "resnet18.onnx", name="resnet18", seed=0)
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

MODELS = ("resnet18", "resnet50", "mobilenet_v3_large")
DEFAULT_MODELS = ("resnet18", "resnet50")
IMAGE_SIZE = 224
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PRESET = "imagenet"


def build_torchvision(name: str, seed: int = 0) -> torch.nn.Module:
    """torchvision model ``name`` with random weights from ``seed``, in eval mode.

    ``torch.manual_seed(seed)`` is called right before construction, so two calls with the
    same arguments give identical weights.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; valid: {', '.join(MODELS)}")
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    return model.eval()


def target_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose output is the last spatial feature map (what Grad-CAM users hook).

    ``layer4[-1]`` for ResNets (its output is the block's final ReLU), ``features[-1]`` for
    MobileNetV3 (the last 1×1 conv + BN + Hardswish).
    """
    if hasattr(model, "layer4"):
        return model.layer4[-1]
    if hasattr(model, "features"):
        return model.features[-1]
    raise ValueError(f"no known target layer for {type(model).__name__}")


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    *,
    name: str,
    seed: int,
    opset: int = OPSET,
    check: bool = True,
) -> Path:
    """Export ``model`` to ``path`` (dynamic batch), add metadata, and optionally check it.

    The check runs ONNX Runtime on CPU on a random batch of two and compares the logits with
    PyTorch's (raises RuntimeError above 1e-3 absolute).
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation warnings
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            export_params=True,
            opset_version=opset,
            do_constant_folding=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    onnx_model = onnx.load(str(path))
    meta = {
        "onnxcam.preset": PRESET,
        "onnxcam.source": f"torchvision.models.{name}(weights=None), torch.manual_seed({seed})",
        "onnxcam.note": "random initialisation: for timing and parity only, not for predictions",
        "onnxcam.torch": torch.__version__,
        "onnxcam.torchvision": torchvision.__version__,
    }
    existing = {p.key: p for p in onnx_model.metadata_props}
    for key, value in meta.items():
        prop = existing.get(key) or onnx_model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))
    if check:
        diff = compare_with_ort(model, path)
        if diff > 1e-3:
            raise RuntimeError(f"{path}: ONNX Runtime and PyTorch logits differ by {diff:.3g}")
    return path


def compare_with_ort(model: torch.nn.Module, path: str | Path, threads: int = 1) -> float:
    """Max absolute logit difference between PyTorch and ONNX Runtime (CPU) on a batch of 2."""
    import numpy as np
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    with torch.no_grad():
        ref = model(x).numpy()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    return float(np.abs(got - ref).max())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(DEFAULT_MODELS))
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed before construction")
    p.add_argument("--out-dir", type=Path, default=Path("build/models"))
    p.add_argument("--opset", type=int, default=OPSET)
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in args.models:
        t0 = time.perf_counter()
        model = build_torchvision(name, args.seed)
        path = export_onnx(
            model,
            args.out_dir / f"{name}.onnx",
            name=name,
            seed=args.seed,
            opset=args.opset,
            check=not args.no_check,
        )
        size_mb = path.stat().st_size / 2**20
        print(f"{name}: {path} ({size_mb:.1f} MiB, {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
