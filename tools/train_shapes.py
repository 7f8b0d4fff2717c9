"""Trains the small "shapes" CNN used for localisation tests and exports it to ONNX.

The data come from ``tools/synthetic.py`` (one warm target shape per image among cool /
gray distractors; the label is the target's class). The model is a small all-convolutional
network whose last ReLU feature map is 24 x 24 (stride 4 at 96 x 96 input, receptive field
29 px), followed by global average pooling and one linear layer, so it is a textbook target
for CAM-style saliency. (A 12 x 12 variant with one more pooling stage classified as well but
its maps spread about one 8 px cell beyond the target, which cost Score-CAM pointing-game hits
on rings; the finer map fixed that.) Half of the training images are multiplied by smooth
random masks (see :func:`mask_randomly`) so that the class scores of Score-CAM's masked inputs
stay meaningful.

This is the only place in the project that uses PyTorch; it is a development tool, not a
run-time dependency. Install a CPU build explicitly first, e.g.::

    python3 -m venv /tmp/venv-shapes
    /tmp/venv-shapes/bin/pip install torch==2.13.0
    /tmp/venv-shapes/bin/pip install numpy opencv-python-headless onnx onnxruntime

Rebuild ``models/shapes_cnn.onnx`` (from the repository root)::

    /tmp/venv-shapes/bin/python tools/train_shapes.py --out models/shapes_cnn.onnx

The exported graph takes ``input``: float32 NCHW RGB scaled to [0, 1] (``x / 255``, the
``unit`` preset) with a dynamic batch axis, and returns ``logits`` (N, 5). Metadata:
``labels`` (JSON list of class names) and ``onnxcam.preset`` (``unit``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

_REPO = Path(__file__).resolve().parents[1]


def _load_synthetic() -> ModuleType:
    """Imports ``tools/synthetic.py`` by path.

    The module needs only numpy and OpenCV; loading it by path keeps this tool independent of
    the package (and of its run-time dependencies) and of the working directory.
    """
    path = _REPO / "tools" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("onnxcam_synthetic", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


synthetic = _load_synthetic()
CLASSES: tuple[str, ...] = synthetic.CLASSES
make_samples = synthetic.make_samples
stack_samples = synthetic.stack_samples

PRESET = "unit"
OPSET = 17


class ShapesCNN(nn.Module):
    """conv(s2) -> pool -> 3 x conv -> GAP -> linear; the last ReLU map is 24 x 24 (stride 4)."""

    def __init__(
        self, num_classes: int = len(CLASSES), widths: tuple[int, int, int, int] = (24, 32, 48, 64)
    ) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths

        def cbr(i: int, c_in: int, c_out: int, stride: int = 1) -> list[tuple[str, nn.Module]]:
            return [
                (f"conv{i}", nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)),
                (f"bn{i}", nn.BatchNorm2d(c_out)),
                (f"relu{i}", nn.ReLU()),
            ]

        self.features = nn.Sequential(
            OrderedDict(
                [
                    *cbr(1, 3, w1, stride=2),  # 96 -> 48
                    ("pool1", nn.MaxPool2d(2)),  # 48 -> 24
                    *cbr(2, w1, w2),
                    *cbr(3, w2, w3),
                    *cbr(4, w3, w4),  # last ReLU: the CAM target layer, 24 x 24
                ]
            )
        )
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.gap(self.features(x)), 1))


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC RGB -> float32 NCHW in [0, 1] (the ``unit`` preset)."""
    t = torch.as_tensor(images)
    return t.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def mask_randomly(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Multiplies a random ``fraction`` of a batch by smooth random masks in ``[0, 1]``.

    Score-CAM scores a class on the input multiplied by upsampled, min-max normalised
    activation maps: smooth blobs that dim or hide parts of the image. A plain model is
    asked to classify such inputs far from its training data and, e.g., called squares
    with dimmed corners "cross", which sent the saliency map to the background. Training
    on copies masked the same way (bilinearly upsampled random 2x2 to 6x6 grids, min-max
    normalised per image; labels kept) keeps those scores meaningful. Scaling RGB keeps hue
    and saturation, so the task's colour rule still holds; when a mask happens to hide the
    target, the label is a coin toss, which teaches "no visible target -> no confident
    class".
    """
    n, _, h, w = x.shape
    g = int(torch.randint(2, 7, ()))
    field = nn.functional.interpolate(
        torch.rand(n, 1, g, g), size=(h, w), mode="bilinear", align_corners=False
    )
    lo = field.amin(dim=(2, 3), keepdim=True)
    hi = field.amax(dim=(2, 3), keepdim=True)
    field = (field - lo) / (hi - lo).clamp_min(1e-6)
    chosen = (torch.rand(n) < fraction).view(n, 1, 1, 1)
    return torch.where(chosen, x * field, x)


@torch.no_grad()
def predict_torch(model: nn.Module, images: np.ndarray, batch: int = 250) -> np.ndarray:
    model.eval()
    out = [model(to_input(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out)


def export(
    model: nn.Module,
    path: Path,
    size: int,
    doc: str = "Synthetic shapes classifier (onnxcam tools/train_shapes.py)",
) -> None:
    """``input`` (batch, 3, size, size) -> ``logits``, opset 17, metadata ``labels`` and
    ``onnxcam.preset``, ``doc`` as the model's doc string."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, size, size)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=True,
        training=torch.onnx.TrainingMode.EVAL,
        export_params=True,
    )
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for key, value in (("labels", json.dumps(list(CLASSES))), ("onnxcam.preset", PRESET)):
        prop = m.metadata_props.add()
        prop.key, prop.value = key, value
    m.doc_string = doc
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def describe_head(path: Path, last: int = 8) -> None:
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes: dict[str, list[int | str]] = {}
    for vi in [*m.graph.value_info, *m.graph.output, *m.graph.input]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_param or d.dim_value for d in dims]
    ops = [n.op_type for n in m.graph.node]
    print(f"graph: {len(ops)} nodes, ops {sorted(set(ops))}")
    print(f"metadata: {[(p.key, p.value) for p in m.metadata_props]}")
    for n in m.graph.node[-last:]:
        outs = ", ".join(f"{o} {shapes.get(o, '?')}" for o in n.output)
        print(f"  {n.op_type:18s} {n.name:28s} -> {outs}")


def verify_onnx(
    path: Path, images: np.ndarray, labels: np.ndarray, torch_logits: np.ndarray, threads: int
) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = to_input(images).numpy()
    logits = np.concatenate(
        [sess.run(["logits"], {"input": x[i : i + 250]})[0] for i in range(0, len(x), 250)]
    )
    acc = float((logits.argmax(1) == labels).mean())
    torch_acc = float((torch_logits.argmax(1) == labels).mean())
    diff = float(np.abs(logits - torch_logits).max())
    agree = int((logits.argmax(1) == torch_logits.argmax(1)).sum())
    print(
        f"onnx accuracy {acc:.4f} (torch {torch_acc:.4f}); argmax agree {agree}/{len(x)}; "
        f"max |logit diff| {diff:.2e}"
    )
    if acc != torch_acc:
        raise RuntimeError(f"ONNX accuracy {acc} differs from torch accuracy {torch_acc}")
    pair = sess.run(["logits"], {"input": x[:2]})[0]
    singles = np.concatenate([sess.run(["logits"], {"input": x[i : i + 1]})[0] for i in (0, 1)])
    bdiff = float(np.abs(pair - singles).max())
    print(f"batch of 2 vs two single runs: max |diff| {bdiff:.2e}")
    if not np.allclose(pair, singles, rtol=1e-5, atol=1e-5):
        raise RuntimeError("a batch of 2 differs from two single runs")
    return acc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=_REPO / "models" / "shapes_cnn.onnx")
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--train-seed", type=int, default=0, help="seed of the training images")
    p.add_argument("--test-seed", type=int, default=1, help="seed of the test images")
    p.add_argument("--seed", type=int, default=0, help="torch seed (init, shuffling, flips)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--mask-fraction",
        type=float,
        default=0.5,
        help="fraction of training images multiplied by a smooth random mask in [0, 1]",
    )
    p.add_argument("--min-accuracy", type=float, default=0.95)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(
        f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, "
        f"threads {args.threads}"
    )
    print(f"seeds: train images {args.train_seed}, test images {args.test_seed}, torch {args.seed}")
    t0 = time.perf_counter()
    x_train, y_train, _ = stack_samples(make_samples(args.train_size, args.train_seed, args.size))
    x_test, y_test, _ = stack_samples(make_samples(args.test_size, args.test_seed, args.size))
    t_data = time.perf_counter() - t0
    print(
        f"data: {len(x_train)} train / {len(x_test)} test images of {args.size}px "
        f"in {t_data:.1f}s; train class counts {np.bincount(y_train).tolist()}"
    )

    model = ShapesCNN()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters")
    steps = args.epochs * (len(x_train) // args.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=steps, pct_start=0.2
    )
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    t1 = time.perf_counter()
    for epoch in range(args.epochs):
        loss, train_acc = train_epoch(
            model, opt, sched, xt, yt, args.batch_size, mask_fraction=args.mask_fraction
        )
        test_acc = float((predict_torch(model, x_test).argmax(1) == y_test).mean())
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {loss:.4f}, "
            f"train acc {train_acc:.4f}, test acc {test_acc:.4f}, "
            f"{time.perf_counter() - t1:.0f}s"
        )
    t_train = time.perf_counter() - t1
    return finish(args, model, export, x_test, y_test, t0=t0, t_train=t_train, t_data=t_data)


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    xt: torch.Tensor,
    yt: torch.Tensor,
    batch_size: int,
    *,
    mask_fraction: float,
    ramp: Callable[[int], float] | None = None,
    clip: float | None = None,
) -> tuple[float, float]:
    """One epoch over uint8 images ``xt`` (shuffled, flipped, masked): (mean loss, accuracy).

    ``ramp(b)`` scales ``mask_fraction`` at batch ``b``; ``clip`` clips the gradient norm.
    """
    model.train()
    perm = torch.randperm(len(xt))
    total, correct, loss_sum = 0, 0, 0.0
    for b in range(len(xt) // batch_size):
        idx = perm[b * batch_size : (b + 1) * batch_size]
        x = to_input(xt[idx])
        flips = torch.rand(2) < 0.5  # label-preserving flips: one draw per batch
        if flips[0]:
            x = x.flip(3)
        if flips[1]:
            x = x.flip(2)
        if mask_fraction > 0:
            x = mask_randomly(x, mask_fraction * (ramp(b) if ramp else 1.0))
        y = yt[idx]
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    return loss_sum / total, correct / total


def finish(
    args: argparse.Namespace,
    model: nn.Module,
    export_fn: Callable[[nn.Module, Path, int], None],
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    t0: float,
    t_train: float,
    t_data: float,
    head_nodes: int = 8,
) -> int:
    """Exports the trained model to ``args.out``, checks it in ONNX Runtime, prints the
    summary and returns the exit status (1 below ``args.min_accuracy``)."""
    torch_logits = predict_torch(model, x_test)
    test_acc = float((torch_logits.argmax(1) == y_test).mean())
    export_fn(model, args.out, args.size)
    onnx_acc = verify_onnx(args.out, x_test, y_test, torch_logits, args.threads)
    describe_head(args.out, last=head_nodes)
    blob = args.out.read_bytes()
    print(
        f"summary: test accuracy {test_acc:.4f} (onnx {onnx_acc:.4f}), "
        f"train time {t_train:.0f}s, data time {t_data:.0f}s, "
        f"total {time.perf_counter() - t0:.0f}s"
    )
    print(f"wrote {args.out}: {len(blob)} bytes, sha256 {hashlib.sha256(blob).hexdigest()}")
    if test_acc < args.min_accuracy:
        print(f"error: test accuracy {test_acc:.4f} < {args.min_accuracy}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
