"""Exports PaddlePaddle image models to ONNX through every route the installed Paddle offers.

A development tool for checking onnxcam against real PaddlePaddle exports; it is not a
run-time dependency and nothing in the package imports it. It builds two models:

* ``mobilenet_v2``: ``paddle.vision.models.mobilenet_v2(pretrained=False)`` with seeded random
  weights and random BatchNorm statistics (nothing is downloaded), 224 x 224 input;
* ``shapes``: a small conv -> BN -> ReLU network (Paddle's default ``Conv2D``, i.e. with a
  bias) ending in global average pooling and a linear layer, trained on the synthetic shapes
  task of ``tools/synthetic.py`` (96 x 96 RGB, ``x / 255``, NCHW: the ``unit`` preset) with
  the recipe of ``tools/train_shapes.py`` (random smooth masks, flips, AdamW, one cycle);
  3 epochs of 10,000 images reach about 98 % test accuracy in about 7 minutes on 2 cores.

Weights are stored once in ``OUT/weights/NAME.npz`` and reused by later runs, so the exports
of every Paddle version hold the same numbers (``--retrain`` starts over). Each model is
exported with a fixed batch of 1 (input spec ``[1, 3, H, W]``) and a dynamic batch
(``[None, 3, H, W]``) through each route to ``OUT/NAME_ROUTE_{fixed,dynamic}.onnx``:

* ``pdexport-p2oXY``: ``paddle.onnx.export(layer, prefix, input_spec=...)``, which saves the
  layer with ``paddle.jit.save`` into a temporary folder and converts it with paddle2onnx X.Y;
* ``cli-p2oXY``: ``paddle.jit.save`` into ``OUT/inference/paddleX.Y/NAME_{fixed,dynamic}/``,
  then the ``paddle2onnx`` command (printed). Paddle 2.x writes ``model.pdmodel``; Paddle 3
  writes ``model.json`` (PIR), which only paddle2onnx >= 2.0 reads (paddle2onnx 1.3 logs
  "Failed to parse", writes an empty .onnx file and exits with status 0);
* ``cli-p2oXY-nofold`` (paddle2onnx >= 2.0 only): the same with ``--optimize_tool None``:
  the graph paddle2onnx writes when Polygraphy's constant folding is not used.

``--opset N`` passes an opset to every route (and appends ``-opN`` to the route names);
by default none is passed and each route uses its own default (9, raised where an operator
needs it). Every file is checked with ONNX Runtime against Paddle's own outputs (batch 1,
and batch 2 for the dynamic exports; for ``shapes`` also the test accuracy).

Environments that work on Python 3.11 (CPU)::

    # Paddle 3 + paddle2onnx 2.1 (reads model.json and model.pdmodel)
    python3 -m venv /tmp/venv-paddle
    /tmp/venv-paddle/bin/pip install paddlepaddle==3.3.1 paddle2onnx==2.1.0 \\
        onnxruntime opencv-python-headless onnx_graphsurgeon sympy
    # Paddle 2.6 + paddle2onnx 1.3 (reads model.pdmodel only); paddle.jit.save of Paddle 2.6.2
    # dies with a segmentation fault under numpy 2, hence the pins
    python3 -m venv /tmp/venv-paddle13
    /tmp/venv-paddle13/bin/pip install paddlepaddle==2.6.2 paddle2onnx==1.3.1 onnx==1.17.0 \\
        onnxruntime 'numpy<2' 'protobuf<5' 'opencv-python-headless<4.11'

paddle2onnx 2.1 pins ``onnx<=1.17.0`` and by default folds constants with Polygraphy, which
pip-installs ``onnx_graphsurgeon`` and ``sympy`` during the export when they are missing (and
writes the unfolded graph when that fails), hence installing them up front. Run from the
repository root, once per environment (the first run trains ``shapes`` and stores the
weights; the second reuses them)::

    /tmp/venv-paddle/bin/python tools/export_paddle.py
    /tmp/venv-paddle13/bin/python tools/export_paddle.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import paddle
import paddle2onnx
from paddle import nn

_REPO = Path(__file__).resolve().parents[1]


if str(_REPO) not in sys.path:  # the repository's tools/, from any working directory
    sys.path.insert(0, str(_REPO))

from tools import synthetic  # noqa: E402  (numpy and OpenCV only)

CLASSES: tuple[str, ...] = synthetic.CLASSES

P2O_VERSION = tuple(int(p) for p in paddle2onnx.__version__.split(".")[:2])
P2O_TAG = f"p2o{P2O_VERSION[0]}{P2O_VERSION[1]}"
MODELS = ("shapes", "mobilenet_v2")
SIZES = {"shapes": 96, "mobilenet_v2": 224}
INPUT_NAME = "x"


class ShapesNet(nn.Layer):
    """conv(s2) -> pool -> 3 x conv, each conv -> BN -> ReLU, then GAP -> linear.

    The last ReLU map is 24 x 24 at 96 x 96 input (stride 4), as in ``tools/train_shapes.py``.
    The convolutions keep Paddle's default bias, so exports show how a bias is added.
    """

    def __init__(self, num_classes: int = len(CLASSES), widths: tuple[int, ...] = (24, 32, 48, 64)):
        super().__init__()
        w1, w2, w3, w4 = widths

        def cbr(c_in: int, c_out: int, stride: int = 1) -> list[nn.Layer]:
            return [
                nn.Conv2D(c_in, c_out, 3, stride=stride, padding=1),
                nn.BatchNorm2D(c_out),
                nn.ReLU(),
            ]

        self.features = nn.Sequential(
            *cbr(3, w1, stride=2),  # 96 -> 48
            nn.MaxPool2D(2),  # 48 -> 24
            *cbr(w1, w2),
            *cbr(w2, w3),
            *cbr(w3, w4),  # last ReLU: the CAM target layer, 24 x 24
        )
        self.gap = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(w4, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc(paddle.flatten(self.gap(self.features(x)), 1))


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW in [0, 1] (the ``unit`` preset)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def mask_randomly(x: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplies a random ``fraction`` of a batch by smooth random masks in [0, 1].

    As in ``tools/train_shapes.py``: bilinearly upsampled random g x g grids (g in 2..6),
    min-max normalised per image, so the class scores of Score-CAM's masked inputs stay
    meaningful.
    """
    n, _, h, w = x.shape
    g = int(rng.integers(2, 7))
    grids = rng.random((n, g, g), dtype=np.float32)
    field = np.stack([cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR) for grid in grids])
    lo = field.min(axis=(1, 2), keepdims=True)
    hi = field.max(axis=(1, 2), keepdims=True)
    field = (field - lo) / np.maximum(hi - lo, 1e-6)
    chosen = rng.random(n) < fraction
    out = x.copy()
    out[chosen] *= field[chosen, None]
    return out


def predict(model: nn.Layer, x: np.ndarray, batch: int = 250) -> np.ndarray:
    model.eval()
    with paddle.no_grad():
        return np.concatenate(
            [model(paddle.to_tensor(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
        )


def train_shapes(model: ShapesNet, args: argparse.Namespace) -> None:
    """Trains ``model`` in place (AdamW, one-cycle learning rate, flips, random masks)."""
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    x_train, y_train, _ = synthetic.stack_samples(
        synthetic.make_samples(args.train_size, args.train_seed)
    )
    x_test, y_test, _ = synthetic.stack_samples(
        synthetic.make_samples(args.test_size, args.test_seed)
    )
    t_data = time.perf_counter() - t0
    print(f"shapes: {len(x_train)} train / {len(x_test)} test images in {t_data:.0f}s")
    steps_per_epoch = len(x_train) // args.batch_size
    total = args.epochs * steps_per_epoch
    sched = paddle.optimizer.lr.OneCycleLR(
        max_learning_rate=args.lr, total_steps=total, phase_pct=0.2
    )
    opt = paddle.optimizer.AdamW(
        learning_rate=sched, parameters=model.parameters(), weight_decay=args.weight_decay
    )
    t1 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = rng.permutation(len(x_train))
        correct, loss_sum = 0, 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size : (b + 1) * args.batch_size]
            x = to_input(x_train[idx])
            if rng.random() < 0.5:  # label-preserving flips: one draw per batch
                x = x[:, :, :, ::-1]
            if rng.random() < 0.5:
                x = x[:, :, ::-1, :]
            x = mask_randomly(np.ascontiguousarray(x), args.mask_fraction, rng)
            y = paddle.to_tensor(y_train[idx])
            logits = model(paddle.to_tensor(x))
            loss = nn.functional.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            opt.clear_grad()
            sched.step()
            loss_sum += float(loss) * len(idx)
            correct += int((logits.argmax(1).numpy() == y_train[idx]).sum())
        seen = steps_per_epoch * args.batch_size
        acc = float((predict(model, to_input(x_test)).argmax(1) == y_test).mean())
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.4f}, "
            f"train acc {correct / seen:.4f}, test acc {acc:.4f}, {time.perf_counter() - t1:.0f}s"
        )
    model.eval()


def build(name: str, args: argparse.Namespace) -> nn.Layer:
    """The model with stored weights, creating (and for ``shapes`` training) them if needed."""
    paddle.seed(args.seed)
    np.random.seed(args.seed)
    model = ShapesNet() if name == "shapes" else paddle.vision.models.mobilenet_v2(pretrained=False)
    path = args.out / "weights" / f"{name}.npz"
    if path.exists() and not args.retrain:
        with np.load(path) as stored:
            model.set_state_dict({k: paddle.to_tensor(stored[k]) for k in stored.files})
        print(f"{name}: weights from {path}")
    else:
        if name == "shapes":
            train_shapes(model, args)
        else:  # random BN statistics, so that the BatchNormalization nodes are not identities
            rng = np.random.default_rng(args.seed)
            for key, value in model.state_dict().items():
                if key.endswith("_mean"):
                    value.set_value(rng.normal(0, 0.1, value.shape).astype("float32"))
                elif key.endswith("_variance"):
                    value.set_value(rng.uniform(0.5, 1.5, value.shape).astype("float32"))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})
        print(f"{name}: weights written to {path}")
    model.eval()
    return model


def spec(name: str, kind: str) -> list[paddle.static.InputSpec]:
    size = SIZES[name]
    batch = 1 if kind == "fixed" else None
    return [paddle.static.InputSpec([batch, 3, size, size], "float32", INPUT_NAME)]


def export_pdexport(model: nn.Layer, name: str, kind: str, target: Path, opset: int | None) -> None:
    """``paddle.onnx.export`` (it appends ``.onnx`` to the prefix)."""
    extra = {} if opset is None else {"opset_version": opset}
    paddle.onnx.export(model, str(target.with_suffix("")), input_spec=spec(name, kind), **extra)
    # paddle2onnx 1.x saves the static model next to the ONNX file and leaves it there
    shutil.rmtree(target.parent / "paddle_model_temp_dir", ignore_errors=True)


def p2o_command(
    model_dir: Path, model_file: str, target: Path, opset: int | None, nofold: bool
) -> list[str]:
    exe = Path(sys.executable).with_name("paddle2onnx")
    cmd = [
        str(exe),
        "--model_dir", str(model_dir),
        "--model_filename", model_file,
        "--params_filename", "model.pdiparams",
        "--save_file", str(target),
    ]  # fmt: skip
    if opset is not None:
        cmd += ["--opset_version", str(opset)]
    if nofold:
        cmd += ["--optimize_tool", "None"]
    return cmd


def export_cli(
    model: nn.Layer, name: str, kind: str, target: Path, opset: int | None, nofold: bool, out: Path
) -> None:
    """``paddle.jit.save`` + the ``paddle2onnx`` command."""
    paddle_xy = ".".join(paddle.__version__.split(".")[:2])
    model_dir = out / "inference" / f"paddle{paddle_xy}" / f"{name}_{kind}"
    shutil.rmtree(model_dir, ignore_errors=True)
    paddle.jit.save(model, str(model_dir / "model"), input_spec=spec(name, kind))
    files = sorted(p.name for p in model_dir.iterdir())
    model_file = "model.json" if "model.json" in files else "model.pdmodel"
    cmd = p2o_command(model_dir, model_file, target, opset, nofold)
    print(f"  jit.save wrote {files}")
    print("  $ " + " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    log = (done.stdout + done.stderr).strip().splitlines()
    print("  | " + "\n  | ".join(line for line in log[-4:]))
    if done.returncode != 0:
        raise RuntimeError(f"paddle2onnx exited with {done.returncode}")


def verify(model: nn.Layer, name: str, kind: str, path: Path, args: argparse.Namespace) -> str:
    """ONNX Runtime against Paddle: max |diff| at batch 1 (and 2 when dynamic)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    rng = np.random.default_rng(7)
    size = SIZES[name]
    if name == "shapes":
        images = synthetic.stack_samples(synthetic.make_samples(4, seed=3))[0]
        x = to_input(images)
    else:
        x = rng.random((4, 3, size, size), dtype=np.float32)
    ref = predict(model, x)
    diffs = [float(np.abs(sess.run(None, {feed: x[:1]})[0] - ref[:1]).max())]
    if kind == "dynamic":
        diffs.append(float(np.abs(sess.run(None, {feed: x[:2]})[0] - ref[:2]).max()))
    text = "max |diff| " + ", ".join(f"{d:.2e}" for d in diffs)
    if kind == "dynamic" and name == "shapes" and args.test_size:
        test, y_test, _ = synthetic.stack_samples(
            synthetic.make_samples(args.test_size, args.test_seed)
        )
        xt = to_input(test)
        logits = np.concatenate(
            [sess.run(None, {feed: xt[i : i + 250]})[0] for i in range(0, len(xt), 250)]
        )
        text += f"; onnx test accuracy {float((logits.argmax(1) == y_test).mean()):.4f}"
    if max(diffs) > 1e-3:
        raise RuntimeError(f"{path.name}: {text}")
    return text


def routes(opset: int | None) -> list[str]:
    suffix = "" if opset is None else f"-op{opset}"
    out = [f"pdexport-{P2O_TAG}{suffix}", f"cli-{P2O_TAG}{suffix}"]
    if P2O_VERSION >= (2, 0):
        out.append(f"cli-{P2O_TAG}-nofold{suffix}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=_REPO / "build" / "real" / "paddle")
    p.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS)
    )
    p.add_argument(
        "--opset", type=int, default=None, help="opset for every route (default: theirs)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="paddle / numpy seed (init, shuffling, masks)"
    )
    p.add_argument("--retrain", action="store_true", help="ignore stored weights")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--train-seed", type=int, default=0, help="seed of the training images")
    p.add_argument("--test-seed", type=int, default=1, help="seed of the test images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--mask-fraction", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    paddle.set_device("cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        pir = bool(paddle.get_flags("FLAGS_enable_pir_api")["FLAGS_enable_pir_api"])
    except (ValueError, KeyError):  # Paddle 2.x has no such flag
        pir = False
    print(
        f"paddle {paddle.__version__} (PIR {'on' if pir else 'off'}), "
        f"paddle2onnx {paddle2onnx.__version__}, "
        f"onnxruntime {ort.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}"
    )
    failures = 0
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in MODELS:
            p.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        model = build(name, args)
        for route in routes(args.opset):
            for kind in ("fixed", "dynamic"):
                target = args.out / f"{name}_{route}_{kind}.onnx"
                target.unlink(missing_ok=True)
                print(f"{target.name}:")
                try:
                    if route.startswith("pdexport"):
                        export_pdexport(model, name, kind, target, args.opset)
                    else:
                        export_cli(
                            model, name, kind, target, args.opset, "nofold" in route, args.out
                        )
                    if not target.exists() or target.stat().st_size == 0:
                        # paddle2onnx reports many failures only in its log, exit status 0
                        raise RuntimeError("no ONNX model written (see the log above)")
                    checked = verify(model, name, kind, target, args)
                    print(f"  ok, {target.stat().st_size} bytes, {checked}")
                except Exception as exc:  # one failed route must not hide the others
                    failures += 1
                    print(f"  FAILED: {type(exc).__name__}: {exc}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
