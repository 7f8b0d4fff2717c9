"""Loading: an ONNX model from a path or from bytes, checked, with errors that say what is
wrong with it."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import onnx

from ..errors import ModelError
from ..text import first_line


def load_model(source: str | Path | bytes) -> onnx.ModelProto:
    """Load and check an ONNX model from a path (external data resolved next to the file) or
    from its serialized bytes (which cannot refer to external data).

    Raises:
        ModelError: the file is missing, empty, truncated or not an ONNX model.
    """
    if isinstance(source, bytes):
        name = f"the model bytes ({len(source):,} bytes)"
        if not source:
            raise ModelError("the model bytes are empty (expected a serialized ONNX model)")
        try:
            model = onnx.load_model_from_string(source)
        except Exception as exc:
            raise ModelError(
                f"cannot read {name} as an ONNX model ({type(exc).__name__}: {first_line(exc)})"
            ) from exc
        if any(_is_external(t) for t in model.graph.initializer):
            raise ModelError(
                f"{name} refer to external data files; pass the model's path instead, so the "
                "files are found next to it"
            )
        return _checked(model, name)
    path = Path(source)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except OSError as exc:  # a name too long, a loop of links, no permission
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelError(f"model path is not a file: {path} (expected an .onnx file)")
    if info.st_size == 0:
        raise ModelError(f"model file is empty: {path} (expected an ONNX model)")
    # The checker reads the file itself, before the model is loaded: checking the loaded
    # proto would serialize it again, and either way would hold the weights a third time.
    try:
        onnx.checker.check_model(str(path))
        failed: Exception | None = None
    except Exception as exc:
        failed = exc
    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # protobuf DecodeError, missing external data, path checks
        raise ModelError(
            f"cannot read {path} as an ONNX model ({type(exc).__name__}: {first_line(exc)}); "
            "is the file complete and exported with torch.onnx/tf2onnx/paddle2onnx?"
        ) from exc
    return _checked(model, str(path), check=False, failed=failed)


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _decodes(message: Any) -> None:
    """Check every text field of ``message`` is UTF-8 (protobuf hands back bytes for one that
    is not, and fails only when that value is copied somewhere later).

    Raises:
        UnicodeDecodeError: a text field that is not UTF-8.
    """
    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == 3
        if field.type == field.TYPE_STRING:
            for text in value if repeated else [value]:
                if isinstance(text, bytes):  # protobuf hands back invalid UTF-8 as bytes
                    text.decode("utf-8")
        elif field.type == field.TYPE_MESSAGE:
            for item in value if repeated else [value]:
                _decodes(item)


def _checked(
    model: onnx.ModelProto, name: str, *, check: bool = True, failed: Exception | None = None
) -> onnx.ModelProto:
    """The model, once it has a graph and passes the ONNX checker (run here with ``check``;
    ``failed``: what the checker said of the file when it was checked from there)."""
    try:
        _decodes(model)
    except UnicodeDecodeError:
        raise ModelError(
            f"{name} holds text that is not valid UTF-8: the file is corrupt"
        ) from None
    if len(model.graph.node) == 0 or len(model.graph.input) == 0 or len(model.graph.output) == 0:
        raise ModelError(
            f"{name} is not a usable ONNX model: its graph has "
            f"{len(model.graph.node)} nodes, {len(model.graph.input)} inputs and "
            f"{len(model.graph.output)} outputs (the file may be truncated or not ONNX)"
        )
    if check:
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            failed = exc
    if failed is not None:
        raise ModelError(f"{name} fails the ONNX checker: {first_line(failed)}") from failed
    return model
