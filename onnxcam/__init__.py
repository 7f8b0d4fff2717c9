"""onnxcam: Score-CAM saliency maps for image CNNs exported to ONNX."""

from .errors import (
    ConfigError,
    DeviceError,
    ImageError,
    ModelError,
    NodeError,
    NumericalError,
    OnnxCamError,
    OutputError,
)
from .explain import Explainer, ExplainerConfig, Result, version
from .scorecam import ScoreCamOptions

__version__ = version()

__all__ = [
    "ConfigError",
    "DeviceError",
    "Explainer",
    "ExplainerConfig",
    "ImageError",
    "ModelError",
    "NodeError",
    "NumericalError",
    "OnnxCamError",
    "OutputError",
    "Result",
    "ScoreCamOptions",
    "__version__",
]
