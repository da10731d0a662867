"""Core ML: an iOS 17 mlprogram `.mlpackage` (a folder), made from the student in PyTorch, for iPhones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgedistill.compress.budget import Precision
from edgedistill.compress.quantize import QuantResult
from edgedistill.export import coreml
from edgedistill.export.formats.base import (
    DeployArtifact, DeployFormat, OnnxFiles, Sources, from_student_unavailable, register,
)
from edgedistill.export.lint import coreml as coreml_lint
from edgedistill.export.parity import Parity


@dataclass(frozen=True)
class CoreMLFormat(DeployFormat):
    """`model.<precision>.mlpackage`, converted from the student by coremltools (`export.coreml`):
    fp16 is fp16 weights and fp16 compute; int8 is int8 weights (symmetric, per output channel)
    dequantized to fp16 as the package loads, so its arithmetic is fp16 too: only the file and the
    weights' memory traffic shrink.

    Core ML predicts on macOS only, so nothing here runs the package: its parity is unchecked and
    the artifact says so (`coreml.NOT_RUN`); what is checked is its structure, and it is linted
    against the iOS 17 opset from the package itself.

    Its source, which is scored here and priced on a device, is the student's fp16 ONNX at both
    precisions. For fp16 it is the same graph at the same precision. For int8 weights the fp16
    ONNX still computes as the package does (fp16), whereas the run's int8 ONNX would be priced at
    the Neural Engine's int8 peak and scored with int8 activations, which this package has not. So
    an int8 package's predicted latency errs slow (its weights are counted as fp16 bytes), and its
    score does not include the rounding of its weights to int8."""

    def unavailable(self, src: Sources) -> str | None:
        """Without coremltools, without the student in PyTorch, or for named inputs, no package."""
        return coreml.available() or from_student_unavailable(src, "a Core ML package")

    def source(self, precision: Precision, files: OnnxFiles) -> tuple[Path, QuantResult | None]:
        """The student's fp16 ONNX at both precisions (see the class docstring for why)."""
        return files.at("fp16"), None

    def make(self, precision: Precision, files: OnnxFiles, targets: tuple[str, ...]) -> DeployArtifact:
        """The package at `precision` for a batch-1 input, its structure checked and its ops linted."""
        src = files.src
        dst = files.folder / f"model.{precision}.mlpackage"
        art = coreml.export_coreml(src.model, src.val_x[:1], precision, dst)
        source, _ = self.source(precision, files)
        lint = (coreml_lint.lint_result(art.path, art.check),)
        return DeployArtifact(
            self.name, precision, art.path, source, targets, Parity.unchecked(), lint, notes=(art.check.note,)
        )


COREML = register(CoreMLFormat("mlpackage", coreml.PRECISIONS, lint_runtime=coreml_lint.RUNTIME, runs_here=False))
