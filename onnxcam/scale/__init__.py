"""The former name of :mod:`onnxcam.dataset` (whole datasets on Ray Data), kept so that the
documented imports ``onnxcam.scale.ray`` and ``onnxcam.scale.manifest`` go on working.
``--scale`` (a pixel multiplier) has nothing to do with it; new code imports
:mod:`onnxcam.dataset`.

Nothing is imported here, so ``import onnxcam.scale.manifest`` never loads Ray.
"""
