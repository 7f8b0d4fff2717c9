"""Exports real Keras 3 / TensorFlow models to ONNX, to check onnxcam against them.

This is a development tool (like ``tools/train_shapes.py``); TensorFlow, Keras and tf2onnx
are never run-time dependencies of onnxcam. It writes, into ``--out-dir``:

* ``shapes_from_keras.onnx``, ``shapes_saved_model.onnx``, ``shapes_keras_export.onnx``: one
  small Keras CNN trained here on the synthetic shapes task (``tools/synthetic.py``), exported
  three ways: (a) ``tf2onnx.convert.from_keras``; (b) ``model.export(DIR)`` (a TF SavedModel)
  then ``python -m tf2onnx.convert --saved-model DIR --opset 17``; (c) Keras 3's own
  ``model.export(path, format="onnx")`` (which calls tf2onnx itself; its default opset is
  kept). The model starts with ``keras.layers.Rescaling(1 / 255)``, so it takes NHWC RGB in
  0..255 (the ``raw`` preset), and ends with a VGG-like head: conv -> MaxPool -> Flatten ->
  Dense (no global pooling) -> softmax. Only ``shapes_from_keras.onnx`` gets the class names
  (metadata ``labels``); none gets ``onnxcam.preset``, so that onnxcam's defaults are tested.
  ``img/shape999.png`` is ``make_samples(1, seed=999)``, a test image for them (a ring).
* ``efficientnet_b0.onnx``: ``keras.applications.EfficientNetB0(weights=None)`` (its graph
  holds Rescaling and Normalization layers), seeded random weights: structure only.
* ``efficientnet_b0_keras_export.onnx``: the same network through Keras 3's
  ``model.export(path, format="onnx")``; with Keras 3.15 / tf2onnx 1.17 it declares the
  Normalization layer's mean and variance as two extra graph inputs that no node consumes.
* ``mobilenet_v2.onnx``: ``keras.applications.MobileNetV2(weights=None)``, seeded random
  weights (expects the ``tf`` preset, which is not inside the graph).
* ``vgg_small.onnx``: a VGG16-shaped network (same layer names and head: Flatten ->
  Dense -> Dense -> Dense softmax) with every width divided by ``--vgg-divisor``; the real
  VGG16 is about 528 MB, too big to keep around. Seeded random weights.

No weights are downloaded: every network is built with ``weights=None`` or trained here.
Every ONNX file is checked against Keras with ONNX Runtime (maximum absolute difference of the
outputs on the same inputs). Install the tools in their own environment, e.g.::

    python3 -m venv /tmp/venv-tf
    /tmp/venv-tf/bin/pip install tensorflow-cpu==2.21.0 keras==3.15.1 tf2onnx==1.17.0 \\
        onnx==1.23.2 onnxruntime==1.32.0 opencv-python-headless==5.0.0.93 numpy==2.4.6

and run, from the repository root::

    /tmp/venv-tf/bin/python tools/export_keras.py --out-dir build/real/keras

(about three minutes on two CPU cores, most of it training).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

_REPO = Path(__file__).resolve().parents[1]
OPSET = 17
SIZE = 96


if str(_REPO) not in sys.path:  # the repository's tools/, from any working directory
    sys.path.insert(0, str(_REPO))

from tools import synthetic  # noqa: E402  (numpy and OpenCV only)

CLASSES: tuple[str, ...] = synthetic.CLASSES


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy, TensorFlow and Keras (``keras.utils.set_random_seed`` does all)."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


# --------------------------------------------------------------------------- shapes model


def build_shapes_model(num_classes: int = len(CLASSES)) -> keras.Model:
    """Rescaling(1/255) -> conv blocks -> conv -> MaxPool -> Flatten -> Dense softmax.

    The last convolution block (``conv4`` + ``bn4`` + ``relu4``) is 24 x 24 x 64 (stride 4);
    the head max-pools it 6 x 6 to 4 x 4 and flattens it (1,024 features) into the Dense
    layer: a VGG-like head, with no global pooling. (A 2 x 2 pool to 12 x 12 learned too
    slowly: about 30 % test accuracy after three epochs on 8,000 images.)
    """
    layers = keras.layers

    def block(x, i: int, filters: int, strides: int = 1):
        x = layers.Conv2D(
            filters, 3, strides=strides, padding="same", use_bias=False, name=f"conv{i}"
        )(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        return layers.ReLU(name=f"relu{i}")(x)

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = block(x, 1, 24, strides=2)  # 96 -> 48
    x = layers.MaxPooling2D(2, name="pool1")(x)  # 48 -> 24
    x = block(x, 2, 32)
    x = block(x, 3, 48)
    x = block(x, 4, 64)  # last conv activation: 24 x 24 x 64
    x = layers.MaxPooling2D(6, name="pool4")(x)  # 4 x 4 x 64
    x = layers.Flatten(name="flatten")(x)  # 1024
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="shapes_vgg")


def mask_randomly(images: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplies a random ``fraction`` of a uint8 NHWC batch by smooth random masks in [0, 1].

    The numpy twin of ``mask_randomly`` in ``tools/train_shapes.py``: a random g x g grid
    (g in 2..6) upsampled bilinearly and min-max normalised per image, so that Score-CAM's
    masked inputs stay within the training distribution. Returns float32 in 0..255.
    """
    n, h, w, _ = images.shape
    out = images.astype(np.float32)
    g = int(rng.integers(2, 7))
    for i in np.flatnonzero(rng.random(n) < fraction):
        field = cv2.resize(
            rng.random((g, g), dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR
        )
        lo, hi = float(field.min()), float(field.max())
        out[i] *= ((field - lo) / max(hi - lo, 1e-6))[..., None]
    return out


def train_shapes(args: argparse.Namespace) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """Trains the shapes model; returns it with the test images (uint8 NHWC) and labels."""
    t0 = time.perf_counter()
    x_train, y_train, _ = synthetic.stack_samples(
        synthetic.make_samples(args.train_size, args.train_seed, SIZE)
    )
    x_test, y_test, _ = synthetic.stack_samples(
        synthetic.make_samples(args.test_size, args.test_seed, SIZE)
    )
    t_data = time.perf_counter() - t0
    print(f"data: {len(x_train)} train / {len(x_test)} test images in {t_data:.1f} s")

    model = build_shapes_model()
    steps = args.epochs * int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, warmup_target=args.lr, warmup_steps=max(steps // 10, 1)
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        flips = rng.random(len(x_train)) < 0.5  # the classes are mirror symmetric
        x = x_train[order].copy()
        x[flips] = x[flips, :, ::-1]
        x = mask_randomly(x, args.mask_fraction, rng)
        hist = model.fit(
            x, y_train[order], batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0
        )
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {hist.history['loss'][-1]:.4f} "
            f"acc {hist.history['accuracy'][-1]:.4f} ({time.perf_counter() - t0:.0f} s)"
        )
    probs = model.predict(x_test.astype(np.float32), batch_size=250, verbose=0)
    acc = float((probs.argmax(1) == y_test).mean())
    t_train = time.perf_counter() - t0
    print(f"test accuracy {acc:.4f} on {len(x_test)} images; training {t_train:.0f} s")
    if acc < args.min_accuracy:
        raise SystemExit(f"test accuracy {acc:.4f} < --min-accuracy {args.min_accuracy}")
    return model, x_test, y_test


def write_sample_image(folder: Path, seed: int) -> Path:
    """Writes ``make_samples(1, seed=seed)`` as ``shape{seed}.png`` (RGB) for onnxcam to explain."""
    sample = synthetic.make_samples(1, seed=seed)[0]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"shape{seed}.png"
    cv2.imwrite(str(path), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
    print(f"{path}: {CLASSES[sample.label]}, box (x0, y0, x1, y1) {sample.box}")
    return path


# --------------------------------------------------------------------------- other models


def build_vgg_small(divisor: int, classes: int = 1000) -> keras.Model:
    """keras.applications.VGG16's layout and layer names, every width divided by ``divisor``."""
    layers = keras.layers
    inputs = keras.Input((224, 224, 3), name="input_layer")
    x = inputs
    for b, (n_conv, width) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), 1):
        for c in range(1, n_conv + 1):
            x = layers.Conv2D(
                width // divisor, 3, padding="same", activation="relu", name=f"block{b}_conv{c}"
            )(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096 // divisor, activation="relu", name="fc1")(x)
    x = layers.Dense(4096 // divisor, activation="relu", name="fc2")(x)
    outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"vgg16_div{divisor}")


# --------------------------------------------------------------------------- export / check


def _signature(model: keras.Model) -> list[tf.TensorSpec]:
    shape = (None, *model.inputs[0].shape[1:])
    return [tf.TensorSpec(shape, tf.float32, name=model.inputs[0].name)]


def export_from_keras(model: keras.Model, path: Path) -> None:
    """(a) ``tf2onnx.convert.from_keras`` with a dynamic batch axis."""
    tf2onnx.convert.from_keras(
        model, input_signature=_signature(model), opset=OPSET, output_path=str(path)
    )


def export_saved_model(model: keras.Model, path: Path) -> None:
    """(b) ``model.export(DIR)`` then the tf2onnx command line on the SavedModel."""
    with tempfile.TemporaryDirectory(prefix="keras_sm_") as tmp:
        sm_dir = Path(tmp) / "saved_model"
        model.export(str(sm_dir), verbose=False)
        cmd = [
            sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(sm_dir),
            "--output", str(path), "--opset", str(OPSET),
        ]  # fmt: skip
        print("  $", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"tf2onnx.convert failed:\n{proc.stdout}\n{proc.stderr}")


def export_keras_onnx(model: keras.Model, path: Path) -> None:
    """(c) Keras 3's ``model.export(path, format="onnx")`` with its default opset."""
    model.export(str(path), format="onnx", verbose=False)


def add_metadata(path: Path, props: dict[str, str]) -> None:
    m = onnx.load(str(path))
    for key, value in props.items():
        prop = m.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(m, str(path))


def verify(path: Path, model: keras.Model, x: np.ndarray) -> float:
    """Runs the ONNX file with ONNX Runtime on ``x`` and prints its max |diff| to Keras."""
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = sess.get_inputs()
    extra = {}
    if len(feeds) != 1:  # e.g. Keras 3's ONNX export of a Normalization layer
        graph = onnx.load(str(path)).graph
        for i in feeds[1:]:
            users = [n.name for n in graph.node if i.name in n.input]
            users_text = ", ".join(users) or "no node"
            print(f"  note: extra graph input {i.name!r} {i.shape}, consumed by {users_text}")
            shape = [d if isinstance(d, int) else 1 for d in i.shape]
            extra[i.name] = np.zeros(shape, dtype=np.float32)
    got = sess.run(None, {feeds[0].name: x, **extra})[0]
    want = np.asarray(model.predict(x, verbose=0))
    diff = float(np.abs(got - want).max())
    agree = int((got.argmax(1) == want.argmax(1)).sum())
    size_mb = path.stat().st_size / 2**20
    print(
        f"  {path.name}: {size_mb:.1f} MB; input {feeds[0].name} {feeds[0].shape}; "
        f"max |onnx - keras| {diff:.2e}; argmax agree {agree}/{len(x)}"
    )
    if not np.allclose(got, want, rtol=1e-3, atol=1e-4):
        raise RuntimeError(f"{path.name}: ONNX Runtime and Keras disagree (max diff {diff})")
    return diff


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", type=Path, default=_REPO / "build" / "real" / "keras")
    p.add_argument("--seed", type=int, default=0, help="seed of Python, numpy, TF and Keras")
    p.add_argument("--train-size", type=int, default=8000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--train-seed", type=int, default=0, help="seed of the training images")
    p.add_argument("--test-seed", type=int, default=1, help="seed of the test images")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--mask-fraction", type=float, default=0.5)
    p.add_argument("--min-accuracy", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vgg-divisor", type=int, default=8, help="width divisor of vgg_small")
    p.add_argument(
        "--skip", nargs="*", default=[], choices=["shapes", "efficientnet", "mobilenet", "vgg"]
    )
    args = p.parse_args(argv)

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    seed_everything(args.seed)
    print(
        f"tensorflow {tf.__version__}, keras {keras.__version__}, tf2onnx {tf2onnx.__version__}, "
        f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}; "
        f"backend {keras.backend.backend()}; seed {args.seed}"
    )
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    if "shapes" not in args.skip:
        write_sample_image(out / "img", seed=999)
        model, x_test, _ = train_shapes(args)
        x = x_test[:16].astype(np.float32)
        for tag, fn in (
            ("from_keras", export_from_keras),
            ("saved_model", export_saved_model),
            ("keras_export", export_keras_onnx),
        ):
            path = out / f"shapes_{tag}.onnx"
            t0 = time.perf_counter()
            try:
                fn(model, path)
            except Exception as exc:  # report and go on: (c) depends on the Keras version
                print(f"  {path.name}: export failed: {type(exc).__name__}: {exc}")
                continue
            if tag == "from_keras":
                add_metadata(path, {"labels": json.dumps(list(CLASSES))})
            print(f"  {path.name}: exported in {time.perf_counter() - t0:.1f} s")
            verify(path, model, x)

    apps = {
        "efficientnet": (
            "efficientnet_b0",
            lambda: keras.applications.EfficientNetB0(
                weights=None, input_shape=(224, 224, 3), classes=1000
            ),
        ),
        "mobilenet": ("mobilenet_v2", lambda: keras.applications.MobileNetV2(weights=None)),
        "vgg": ("vgg_small", lambda: build_vgg_small(args.vgg_divisor)),
    }
    for key, (name, build) in apps.items():
        if key in args.skip:
            continue
        seed_everything(args.seed)
        model = build()
        print(f"{name}: {model.count_params():,} parameters (random, seeded)")
        path = out / f"{name}.onnx"
        t0 = time.perf_counter()
        export_from_keras(model, path)
        print(f"  {path.name}: exported in {time.perf_counter() - t0:.1f} s")
        x = rng.uniform(0, 255, (4, 224, 224, 3)).astype(np.float32)
        if key == "mobilenet":  # MobileNetV2 expects the tf preset outside the graph
            x = x / 127.5 - 1.0
        verify(path, model, x)
        if key == "efficientnet":  # Keras 3's own exporter, for its Normalization layer
            path = out / f"{name}_keras_export.onnx"
            model.predict(x[:1], verbose=0)  # export(format="onnx") refuses an uncalled model
            export_keras_onnx(model, path)
            verify(path, model, x)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
