"""ONNX Runtime Mobile: an .ort file (with its required-operators config) for phones."""

from __future__ import annotations

from dataclasses import dataclass

from edgedistill.compress.budget import Precision
from edgedistill.export.formats.base import DeployArtifact, DeployFormat, OnnxFiles, register
from edgedistill.export.ort_mobile import export_ort


@dataclass(frozen=True)
class OrtFormat(DeployFormat):
    """The ONNX file of the precision converted to .ort, run here and compared with that file."""

    def make(self, precision: Precision, files: OnnxFiles, targets: tuple[str, ...]) -> DeployArtifact:
        """`model.<precision>.ort` from the ONNX file of `precision`, checked on the validation inputs."""
        source, quant = self.source(precision, files)
        art = export_ort(source, files.folder / f"model.{precision}.ort", files.src.val_x)
        return DeployArtifact(
            self.name, precision, art.path, source, targets, art.parity,
            self.lint_source(source), quantization=quant,
        )


# fp16 is listed for ARM hosts: on x86 export_ort refuses it, as the file would run in fp32.
ORT = register(OrtFormat("ort", ("fp32", "fp16", "int8"), lint_runtime="ort-mobile", runs_here=True, converters=("onnxruntime",)))
