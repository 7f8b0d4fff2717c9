"""onnxcam: gradient-free saliency maps (Score-CAM and friends) for image models in ONNX."""

from .config import ExplainerConfig
from .errors import (
    BusyError,
    ClusterError,
    ConfigError,
    DeviceError,
    ImageError,
    ModelError,
    NodeError,
    NumericalError,
    OnnxCamError,
    OutputError,
    PredictorError,
    TargetError,
    TimeLimitError,
)
from .explain import Explainer, Forward
from .ingraph import export
from .methods import COMPAT, METHODS, ScoreCamOptions
from .result import SCHEMA_VERSION, Result, TargetResult, version
from .targets import KINDS, parse_target

__version__ = version()

__all__ = [
    "COMPAT",
    "KINDS",
    "METHODS",
    "SCHEMA_VERSION",
    "BusyError",
    "ClusterError",
    "ConfigError",
    "DeviceError",
    "Explainer",
    "ExplainerConfig",
    "Forward",
    "ImageError",
    "ModelError",
    "NodeError",
    "NumericalError",
    "OnnxCamError",
    "OutputError",
    "PredictorError",
    "Result",
    "ScoreCamOptions",
    "TargetError",
    "TargetResult",
    "TimeLimitError",
    "__version__",
    "export",
    "parse_target",
]
