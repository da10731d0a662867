"""The formats a device loads, one module each, registered in `FORMATS` (see `base`)."""

from edgedistill.export.formats.base import (
    FORMATS,
    DeployArtifact,
    DeployFormat,
    HereRuntime,
    OnnxFiles,
    Sources,
    format_for,
    format_names,
    here_runtime,
    made_with,
    register,
)

# Imported for their registrations, in the order formats are made: ONNX first.
from edgedistill.export.formats import onnx, ort, tensorrt, executorch, litert, coreml  # noqa: E402,F401  isort: skip

__all__ = [
    "FORMATS", "DeployArtifact", "DeployFormat", "HereRuntime", "OnnxFiles", "Sources", "format_for", "format_names",
    "here_runtime", "made_with", "register",
]
