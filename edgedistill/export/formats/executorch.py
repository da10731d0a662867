"""ExecuTorch: a `.pte` program delegated to XNNPACK, made from the student in PyTorch, for phones."""

from __future__ import annotations

from dataclasses import dataclass

from edgedistill.compress.budget import Precision
from edgedistill.export import executorch as et
from edgedistill.export.formats.base import (
    DeployArtifact, DeployFormat, HereRuntime, OnnxFiles, Sources, from_student_unavailable, int8_scheme, register,
)


@dataclass(frozen=True)
class ExecuTorchFormat(DeployFormat):
    """`model.<precision>.pte`, converted from the student by `torch.export` (int8 by PT2E with
    XNNPACK's quantizer: static on the calibration split, or dynamic where the run's int8 ONNX
    is) and checked by ExecuTorch's runtime here. A student of named feeds (a transformer's
    token ids) is made at batch 1 and the data's max_length.

    It is priced on a device, and linted, as the student's ONNX of the same precision: the same
    graph, and the int8 ONNX's scheme is the one the cost model knows."""

    def unavailable(self, src: Sources) -> str | None:
        """Without ExecuTorch, without the student in PyTorch, or for feeds its forward does not name, no program."""
        return et.available() or from_student_unavailable(src, "an ExecuTorch program")

    def make(self, precision: Precision, files: OnnxFiles, targets: tuple[str, ...]) -> DeployArtifact:
        """The program at `precision`, checked on the validation inputs."""
        src = files.src
        scheme = int8_scheme(src, precision, targets, full_integer_runtime=False)
        art = et.export_pte(
            src.student(precision), precision, files.folder / f"model.{precision}.pte",
            src.at_fixed_shape(src.calib_x), src.at_fixed_shape(src.val_x), files.int8_error if scheme.dynamic else None,
        )
        source = files.at(precision)
        return DeployArtifact(
            self.name, precision, art.path, source, targets, art.parity, self.lint_source(source),
            notes=scheme.notes + src.student_notes(precision),
            seq_len=src.fixed_length,
        )


EXECUTORCH = register(
    ExecuTorchFormat(
        "pte", et.PRECISIONS, lint_runtime=None, runs_here=True, converters=("executorch", "torchao"),
        here=HereRuntime(et.RUNTIME, ".pte", et.run_pte, et.timed_pte, et.input_shape, et.input_names),
    )
)
