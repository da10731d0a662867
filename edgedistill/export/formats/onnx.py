"""ONNX at fp16 for GPUs; the fp32 and int8 ONNX files are the run's export and quantize stages' own."""

from __future__ import annotations

from dataclasses import dataclass

from edgedistill.compress.budget import Precision
from edgedistill.export.formats.base import DeployArtifact, DeployFormat, OnnxFiles, register


@dataclass(frozen=True)
class OnnxFormat(DeployFormat):
    """The fp16 ONNX, converted from fp32 and checked against it."""

    def make(self, precision: Precision, files: OnnxFiles, targets: tuple[str, ...]) -> DeployArtifact:
        """The fp16 ONNX file (shared with the formats built from it), with its parity check."""
        art = files.fp16
        source = files.at("fp32")
        return DeployArtifact(
            self.name, precision, art.path, source, targets, art.parity,
            self.lint_source(art.path),
        )


ONNX = register(
    OnnxFormat("onnx", ("fp16",), lint_runtime=None, runs_here=True, staged=("fp32", "int8"), converters=("onnxruntime",))
)
