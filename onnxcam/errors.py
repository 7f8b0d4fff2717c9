"""Typed errors. Every message names what was wrong and what would be valid."""

from __future__ import annotations

from .text import escape

__all__ = [
    "BusyError",
    "ClusterError",
    "ConfigError",
    "DeviceError",
    "ImageError",
    "ModelError",
    "NodeError",
    "NumericalError",
    "OnnxCamError",
    "OutputError",
    "PredictorError",
    "TargetError",
    "TimeLimitError",
]


class OnnxCamError(Exception):
    """Base class of every error onnxcam raises on purpose.

    Its message is one line wherever it is shown or logged: messages quote names from models
    and files, whose newlines and other control characters are escaped here
    (:func:`onnxcam.text.escape`), once for every message.
    """

    def __str__(self) -> str:
        return escape(super().__str__())


class ModelError(OnnxCamError):
    """The model file is missing, unreadable, not ONNX, or cannot take an image."""


class NodeError(OnnxCamError):
    """The requested node is unknown, not a spatial feature map, or cannot be exposed."""


class ImageError(OnnxCamError):
    """The image is missing, not an image, truncated, or of an unusable size."""


class OutputError(OnnxCamError):
    """The output folder or a result file cannot be written."""


class DeviceError(OnnxCamError):
    """ONNX Runtime is missing, or the requested execution provider cannot serve."""


class NumericalError(OnnxCamError):
    """The model produced NaN or Inf."""


class ConfigError(OnnxCamError):
    """An option has a value outside what is valid."""


class TargetError(OnnxCamError):
    """A target did not turn a batch of outputs into one finite score per sample."""


class TimeLimitError(OnnxCamError):
    """An image's passes took longer than the time limit (the model may never finish)."""


class ClusterError(OnnxCamError):
    """A distributed run cannot start or goes on no further: Ray missing or unreachable, a
    request the cluster cannot meet, an output folder the workers do not share, a stall."""


class PredictorError(OnnxCamError):
    """A served predictor (the remote backend) is unreachable, answers with an error, or does
    not serve the inputs and outputs that onnxcam needs."""


class BusyError(OnnxCamError):
    """Too many requests are waiting for their passes; ``retry_after_s`` says when to try
    again (a service answers 503 with it)."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
