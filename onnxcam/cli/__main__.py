"""``python -m onnxcam.cli``."""

from . import main

main()
