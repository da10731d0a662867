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
from edgedistill.ortsession import feed_slice


@dataclass(frozen=True)
class CoreMLFormat(DeployFormat):
    """`model.<precision>.mlpackage`, converted from the student by coremltools (`export.coreml`):
    fp16 is fp16 weights and fp16 compute. int8 is W8A8 where the student converts so: int8
    weights (symmetric, per output channel) and int8 activations calibrated on the calibration
    inputs, the Neural Engine's int8 arithmetic. Where it does not (ExecuTorch, whose quantizer
    it takes, not installed; PT2E or coremltools refusing the quantized student), int8 is int8
    weights dequantized to fp16 as the package loads (W8A16), its arithmetic fp16, and the
    artifact's notes say why.

    Core ML predicts on macOS only, so nothing here runs the package: its parity is unchecked and
    the artifact says so (`coreml.NOT_RUN`); what is checked is its structure, and it is linted
    against the iOS 17 opset from the package itself.

    Its source, which is scored here and priced on a device, is the ONNX that computes as the
    package does, so `make` picks it from the package made (`source` alone cannot tell which int8
    that is). fp16: the student's fp16 ONNX, the same graph at the same precision. W8A8: the run's
    int8 ONNX, int8 activations as the package has (calibrated by the ONNX quantizer, so scored
    for the same scheme, not the package's exact scales). W8A16: the fp16 ONNX, which computes in
    fp16 as the package does, whereas the int8 ONNX would be priced at the Neural Engine's int8
    peak and scored with int8 activations this package has not; so its predicted latency errs
    slow (its weights are counted as fp16 bytes) and its score leaves out the rounding of its
    weights to int8. Without an int8 ONNX at hand, a W8A8 package is priced from fp16 ONNX too."""

    def unavailable(self, src: Sources) -> str | None:
        """Without coremltools, without the student in PyTorch, or for feeds its forward does not name, no package."""
        return coreml.available() or from_student_unavailable(src, "a Core ML package")

    def source(self, precision: Precision, files: OnnxFiles) -> tuple[Path, QuantResult | None]:
        """The student's fp16 ONNX, the source of an fp16 or W8A16 package; `make` takes the int8
        ONNX instead for a W8A8 one (see the class docstring)."""
        return files.at("fp16"), None

    def make(self, precision: Precision, files: OnnxFiles, targets: tuple[str, ...]) -> DeployArtifact:
        """The package at `precision` for a batch-1 input (int8 calibrated on the calibration
        inputs), its structure checked, its ops linted, its source the ONNX that computes as it does."""
        src = files.src
        dst = files.folder / f"model.{precision}.mlpackage"
        sample = src.at_fixed_shape(feed_slice(src.val_x, 0, 1))
        art = coreml.export_coreml(src.student(precision), sample, precision, dst, src.at_fixed_shape(src.calib_x))
        w8a8 = art.check.int8_scheme == coreml.W8A8 and src.int8 is not None
        source = files.at("int8") if w8a8 else self.source(precision, files)[0]
        lint = (coreml_lint.lint_result(art.path, art.check),)
        return DeployArtifact(
            self.name, precision, art.path, source, targets, Parity.unchecked(), lint,
            notes=art.notes + src.student_notes(precision),
            seq_len=src.fixed_length,
        )


COREML = register(
    CoreMLFormat(
        "mlpackage", coreml.PRECISIONS, lint_runtime=coreml_lint.RUNTIME, runs_here=False,
        converters=("coremltools", "executorch", "torchao"),
    )
)
