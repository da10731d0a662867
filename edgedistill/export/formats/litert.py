"""LiteRT: a `.tflite` flatbuffer made from the student in PyTorch, for Android phones and microcontrollers."""

from __future__ import annotations

from dataclasses import dataclass

from edgedistill.compress.budget import Precision
from edgedistill.export import litert
from edgedistill.export.formats.base import (
    DeployArtifact, DeployFormat, HereRuntime, OnnxFiles, Sources, from_student_unavailable, int8_scheme, register,
)
from edgedistill.export.lint.litert import LITERT, LITERT_MICRO, lint_tflite


@dataclass(frozen=True)
class LiteRTFormat(DeployFormat):
    """`model.<precision>.tflite`, converted from the student by litert-torch (int8 full-integer by
    PT2E on the calibration split, or dynamic-range where the run's int8 ONNX is dynamic and no
    target runs LiteRT Micro, which has no dynamic kernels; fp16 by casting the fp32 file's
    weights) and checked by LiteRT's interpreter here. A student of named feeds (a transformer's
    token ids) is made at batch 1 and the data's max_length. Each file is linted for LiteRT
    (builtin operators only) and for LiteRT Micro (the kernels its op resolver has), and carries
    its activation arena for microcontroller targets.

    It is priced on a device as the student's ONNX of the same precision: the same graph, and the
    int8 ONNX's scheme is the one the cost model knows."""

    def unavailable(self, src: Sources) -> str | None:
        """Without LiteRT, without the student in PyTorch, or for feeds its forward does not name, no file."""
        return litert.available() or from_student_unavailable(src, "a LiteRT file")

    def make(self, precision: Precision, files: OnnxFiles, targets: tuple[str, ...]) -> DeployArtifact:
        """The file at `precision`, checked on the validation inputs and linted for both runtimes."""
        src = files.src
        scheme = int8_scheme(src, precision, targets, full_integer_runtime=True)
        art = litert.export_tflite(
            src.student(precision), precision, files.folder / f"model.{precision}.tflite",
            src.at_fixed_shape(src.calib_x), src.at_fixed_shape(src.val_x), files.int8_error if scheme.dynamic else None,
        )
        source = files.at(precision)
        lints = (lint_tflite(art.path, LITERT), lint_tflite(art.path, LITERT_MICRO))
        return DeployArtifact(
            self.name, precision, art.path, source, targets, art.parity, lints, notes=scheme.notes + src.student_notes(precision),
            arena_bytes=litert.arena_bytes(art.path), seq_len=src.fixed_length,
        )


LITERT_FORMAT = register(
    LiteRTFormat(
        "tflite", litert.PRECISIONS, lint_runtime=LITERT, runs_here=True,
        converters=("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "torchao"),
        here=HereRuntime(
            litert.RUNTIME, ".tflite", litert.run_tflite, litert.timed_tflite, litert.input_shape, litert.input_names
        ),
    )
)
