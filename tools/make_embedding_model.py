#!/usr/bin/env python3
"""Cut the shipped EfficientNet-Lite0 at its pooled features: an image-embedding model.

The classifier's graph is cut after global average pooling and flattening, so the new model
maps an image to a 1,280-number embedding (output ``embedding``, float32 ``[batch, 1280]``).
It needs only ``onnx`` (no training framework, nothing downloaded), and the weights are the
shipped model's, so the result is deterministic.

Usage::

    python tools/make_embedding_model.py [--model models/efficientnet_lite0.onnx] \\
        [--out build/efficientnet_lite0_embedding.onnx]

Then explain what makes two photos alike::

    onnxcam explain build/efficientnet_lite0_embedding.onnx a.jpg --target embedding:ref=b.jpg
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import onnx
from onnx import helper

FEATURES = "/Flatten_output_0"  # the pooled, flattened 1280-d features before the classifier
OUTPUT = "embedding"


def cut_at_features(model: onnx.ModelProto, features: str = FEATURES) -> onnx.ModelProto:
    """The part of ``model`` that computes ``features``, with that tensor as its only output
    (renamed ``embedding``, batch dimension kept symbolic)."""
    graph = model.graph
    keep: list[onnx.NodeProto] = []
    needed = {features}
    for node in reversed(graph.node):
        if needed & set(node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
    keep.reverse()
    if not keep:
        raise ValueError(f"no node produces '{features}'")
    nodes = [onnx.NodeProto() for _ in keep]
    for copy, node in zip(nodes, keep, strict=True):
        copy.CopyFrom(node)
        copy.output[:] = [OUTPUT if name == features else name for name in copy.output]
    inits = [i for i in graph.initializer if i.name in needed]
    out = helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["batch", 1280])
    cut = helper.make_graph(nodes, "efficientnet_lite0_embedding", list(graph.input), [out], inits)
    result = helper.make_model(cut, opset_imports=list(model.opset_import))
    result.ir_version = model.ir_version
    keys = {"onnxcam.preset", "onnxcam.license", "onnxcam.source"}
    for prop in model.metadata_props:
        if prop.key in keys:
            result.metadata_props.add(key=prop.key, value=prop.value)
    result.metadata_props.add(
        key="onnxcam.exporter",
        value=f"tools/make_embedding_model.py: efficientnet_lite0.onnx cut at {features}",
    )
    onnx.checker.check_model(result, full_check=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/efficientnet_lite0.onnx"))
    p.add_argument("--out", type=Path, default=Path("build/efficientnet_lite0_embedding.onnx"))
    args = p.parse_args(argv)
    model = cut_at_features(onnx.load(str(args.model)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    args.out.write_bytes(data)
    print(f"{args.out}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
