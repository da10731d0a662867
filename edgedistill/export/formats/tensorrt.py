"""TensorRT for NVIDIA GPUs: an engine where TensorRT and a GPU are here, else its trtexec script."""

from __future__ import annotations

from dataclasses import dataclass

from edgedistill.compress.budget import Precision
from edgedistill.export.formats.base import DeployArtifact, DeployFormat, OnnxFiles, register
from edgedistill.export.parity import Parity
from edgedistill.export.tensorrt import PRECISIONS, TrtBuild, build_tensorrt


@dataclass(frozen=True)
class TensorRTFormat(DeployFormat):
    """The engine (or the script that builds it on the device), linted against TensorRT's
    support matrix; onnxruntime cannot run it, so it has no parity check here."""

    def make(self, precision: Precision, files: OnnxFiles, targets: tuple[str, ...]) -> DeployArtifact:
        """Build from the symmetric int8 Q/DQ file (explicit quantization, the form TensorRT takes)
        or from the fp16 ONNX, which strongly typed builds (TensorRT 10 and 11) accept as it is."""
        source, quant = self.source(precision, files)
        cache = files.src.timing_cache or files.folder.parent / "tensorrt.cache"
        # A transformer's engine takes any sequence up to the data's max_length, tuned and timed at it.
        length = files.src.fixed_length
        seq = None if length is None else (1, length, length)
        art = build_tensorrt(TrtBuild(source, precision, seq=seq), files.folder, timing_cache=cache)
        path = art.engine if art.built else art.command_path
        return DeployArtifact(
            self.name, precision, path, source, targets, Parity.unchecked(), self.lint_source(source), art, quant,
            files.src.student_notes(precision),
        )


TENSORRT = register(
    TensorRTFormat(
        "tensorrt", PRECISIONS, lint_runtime="tensorrt", runs_here=False, symmetric_int8=True, converters=("tensorrt",),
        # 2: the symmetric int8 of a QAT student is held to the score before QAT, as the run's int8 is;
        # 3: where it does not hold, its weight-bearing ops are quantized alone before layers stay in
        # float; a transformer's engine spans sequence lengths 1 to max_length
        revision=3,
    )
)
