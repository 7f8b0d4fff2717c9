"""Trains a small semantic segmenter on synthetic scenes and exports it to ONNX.

The data come from ``tools/scenes.py`` (2-6 shapes of 5 classes per 160 x 160 scene, with a
label map: 0 background, 1 + class on object pixels). The model is a small U-Net-like
encoder-decoder whose output has stride 4: ``logits`` ``[batch, 6, 40, 40]`` for a 160 x 160
input, so a consumer has to map between the input and output resolutions.

* Encoder: four stages ``enc1`` ... ``enc4`` of two Conv-BN-ReLU blocks each (the first with
  stride 2): 80 x 80 x 16, 40 x 40 x 32, 20 x 20 x 48, 10 x 10 x 64.
* Decoder: ``dec3`` (upsample x2, concatenate ``enc3``, two Conv-BN-ReLU: 20 x 20 x 48) and
  ``dec2`` (upsample x2, concatenate ``enc2``, two Conv-BN-ReLU: 40 x 40 x 32), then ``head``,
  a 1 x 1 convolution to the 6 class logits.

BN is folded into the convolutions at export. Training target at the output resolution: the
fraction of each label in every 4 x 4 block (soft cross-entropy); the evaluation compares the
argmax with the block's majority label (see ``tools/check_detectors.py``).

Export: ``models/shapes_seg.onnx``, opset 17, input ``input`` float32 ``[batch, 3, 160, 160]``
RGB ``x / 255`` (preset ``unit``), output ``logits`` ``[batch, 6, 40, 40]``, dynamic batch.

This script needs torch (tools only). From the repository root::

    /tmp/venv-torch/bin/python tools/train_segmenter.py
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.check_detectors import SEG_STRIDE, block_labels, segmentation_metrics  # noqa: E402
from tools.scenes import CLASSES, make_scenes  # noqa: E402
from tools.train_detector import infer_shapes  # noqa: E402

OPSET = 17
SIZE = 160
NUM_LABELS = 1 + len(CLASSES)
LABEL_NAMES = ("background", *CLASSES)
NAMES = "{" + ", ".join(f"{i}: {n!r}" for i, n in enumerate(LABEL_NAMES)) + "}"


class ConvBNReLU(nn.Module):
    def __init__(self, c1: int, c2: int, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 3, s, 1, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _stage(c1: int, c2: int, s: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict([("conv1", ConvBNReLU(c1, c2, s)), ("conv2", ConvBNReLU(c2, c2))])
    )


class ShapesSegmenter(nn.Module):
    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 48, 64)) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.enc1 = _stage(3, w1, 2)  # 80
        self.enc2 = _stage(w1, w2, 2)  # 40
        self.enc3 = _stage(w2, w3, 2)  # 20
        self.enc4 = _stage(w3, w4, 2)  # 10
        self.up4 = nn.Upsample(scale_factor=2, mode="nearest")  # 10 -> 20
        self.up3 = nn.Upsample(scale_factor=2, mode="nearest")  # 20 -> 40
        self.dec3 = _stage(w4 + w3, w3, 1)  # 20
        self.dec2 = _stage(w3 + w2, w2, 1)  # 40
        self.head = nn.Conv2d(w2, NUM_LABELS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e2 = self.enc2(self.enc1(x))
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(torch.cat([self.up4(e4), e3], 1))
        d2 = self.dec2(torch.cat([self.up3(d3), e2], 1))
        return self.head(d2)


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(images)
    return t.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def soft_targets(label_maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) uint8 labels -> (N, 6, H / 4, W / 4) label fractions of each 4 x 4 block."""
    onehot = F.one_hot(label_maps.long(), NUM_LABELS).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(onehot, SEG_STRIDE)


def augment(x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
    """One random symmetry of the square per batch; ``y`` is (N, C, h, w)."""
    f = torch.randint(0, 2, (3,), generator=g).tolist()
    if f[0]:
        x, y = x.flip(3), y.flip(3)
    if f[1]:
        x, y = x.flip(2), y.flip(2)
    if f[2]:
        x, y = x.transpose(2, 3), y.transpose(2, 3)
    return x.contiguous(), y.contiguous()


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch: int = 100) -> np.ndarray:
    model.eval()
    return np.concatenate(
        [model(to_input(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]
    )


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, SIZE, SIZE),),
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
    for key, value in (
        ("onnxcam.task", "semantic-segmentation"),
        ("names", NAMES),
        ("onnxcam.preset", "unit"),
        ("onnxcam.output_stride", str(SEG_STRIDE)),
    ):
        prop = m.metadata_props.add()
        prop.key, prop.value = key, value
    m.doc_string = (
        f"onnxcam shapes semantic segmenter; input float32 [batch, 3, {SIZE}, {SIZE}] RGB x/255 "
        f"(preset unit); logits [batch, {NUM_LABELS}, {SIZE // SEG_STRIDE}, "
        f"{SIZE // SEG_STRIDE}] (stride {SEG_STRIDE}), labels 0 background + 5 shapes"
    )
    m = infer_shapes(m)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def describe(path: Path, last: int = 8) -> None:
    m = onnx.load(str(path))
    shapes: dict[str, list[int | str]] = {}
    for vi in [*m.graph.value_info, *m.graph.output, *m.graph.input]:
        shapes[vi.name] = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
    ops = [n.op_type for n in m.graph.node]
    print(f"{path.name}: {len(ops)} nodes, ops {sorted(set(ops))}")
    print(f"metadata: {[(p.key, p.value) for p in m.metadata_props]}")
    for n in m.graph.node[-last:]:
        outs = ", ".join(f"{o} {shapes.get(o, '?')}" for o in n.output)
        print(f"  {n.op_type:10s} {n.name:28s} -> {outs}")


def verify(path: Path, torch_logits: np.ndarray, images: np.ndarray, threads: int) -> None:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = to_input(images).numpy()
    logits = np.concatenate(
        [sess.run(None, {"input": x[i : i + 50]})[0] for i in range(0, len(x), 50)]
    )
    diff = float(np.abs(logits - torch_logits).max())
    agree = float((logits.argmax(1) == torch_logits.argmax(1)).mean())
    print(f"onnx vs torch: max |logit diff| {diff:.2e}, argmax agreement {agree:.6f}")
    pair = sess.run(None, {"input": x[:3]})[0]
    singles = np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(3)])
    bdiff = float(np.abs(pair - singles).max())
    print(f"batch of 3 vs three single runs: max |diff| {bdiff:.2e}")
    if diff > 1e-3 or bdiff > 1e-4:
        raise RuntimeError("the ONNX model does not match")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "models" / "shapes_seg.onnx")
    p.add_argument("--train-scenes", type=int, default=4000)
    p.add_argument("--train-seed", type=int, default=20261129)
    p.add_argument("--val-seed", type=int, default=20261128)
    p.add_argument("--val-scenes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="torch seed (init, shuffling, flips)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-miou", type=float, default=0.75)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    print(
        f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, "
        f"numpy {np.__version__}, threads {args.threads}"
    )
    t0 = time.perf_counter()
    train = make_scenes(args.train_scenes, args.train_seed)
    val = make_scenes(args.val_scenes, args.val_seed)
    images = torch.from_numpy(np.stack([s.image for s in train]))
    labels = torch.from_numpy(np.stack([s.label_map for s in train]))
    val_images = np.stack([s.image for s in val])
    val_truth = block_labels(np.stack([s.label_map for s in val]))
    t_data = time.perf_counter() - t0
    fractions = (
        torch.bincount(labels.flatten().long(), minlength=NUM_LABELS) / labels.numel()
    ).tolist()
    print(
        f"data: {len(train)} train scenes (seed {args.train_seed}) in {t_data:.1f}s; "
        f"label fractions {[round(f, 4) for f in fractions]}"
    )

    model = ShapesSegmenter()
    print(f"model: {sum(q.numel() for q in model.parameters())} parameters")
    steps_per_epoch = len(train) // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    g = torch.Generator().manual_seed(args.seed)
    t1 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=g)
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size : (b + 1) * args.batch_size]
            x, y = augment(to_input(images[idx]), soft_targets(labels[idx]), g)
            logits = model(x)
            loss = -(y * F.log_softmax(logits, 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
        m = segmentation_metrics(predict(model, val_images).argmax(1), val_truth)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / steps_per_epoch:.4f} | val mIoU "
            f"{m['mIoU']:.4f} pixel acc {m['pixel_accuracy']:.4f} | "
            f"{time.perf_counter() - t1:.0f}s",
            flush=True,
        )
    t_train = time.perf_counter() - t1

    torch_logits = predict(model, val_images)
    export(model, args.out)
    verify(args.out, torch_logits, val_images, args.threads)
    describe(args.out)
    m = segmentation_metrics(torch_logits.argmax(1), val_truth)
    print(
        f"summary: pixel accuracy {m['pixel_accuracy']:.4f}, mIoU {m['mIoU']:.4f} (objects "
        f"{m['mIoU_objects']:.4f}); IoU "
        + ", ".join(f"{n} {m[f'IoU_{c}']:.4f}" for c, n in enumerate(LABEL_NAMES))
        + f"; train {t_train:.0f}s, data {t_data:.0f}s, total {time.perf_counter() - t0:.0f}s"
    )
    blob = args.out.read_bytes()
    print(f"wrote {args.out.name}: {len(blob)} bytes, sha256 {hashlib.sha256(blob).hexdigest()}")
    if m["mIoU"] < args.min_miou:
        print(f"error: mIoU {m['mIoU']:.4f} < {args.min_miou}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
