"""The files each target deploys: made once each from a student's fp32 and int8 ONNX, checked
against their source, and linted for the runtime that will run them on the device.

A format is a maker registered by name; a new format is a new maker, not a new branch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgedistill.compress.quantize import Int8StaticSymmetric, QuantResult, quantize
from edgedistill.export.fp16 import to_fp16
from edgedistill.export.lint import LintResult, lint
from edgedistill.export.ort_mobile import export_ort
from edgedistill.export.tensorrt import TrtArtifact, TrtBuild, build_tensorrt
from edgedistill.targets.profile import Target


@dataclass(frozen=True)
class Sources:
    """What deployment artifacts are made from: a student's ONNX files, and real inputs to check
    them (`val_x`, scored by `score`, higher is better) and to calibrate int8 (`calib_x`).
    `make_int8` False skips every int8 artifact (quantization is off for the run)."""

    fp32: Path
    int8: Path | None
    folder: Path
    val_x: np.ndarray
    calib_x: np.ndarray
    score: Callable[[np.ndarray], float]
    symmetric: Int8StaticSymmetric
    max_drop: float = 0.01
    make_int8: bool = True


@dataclass(frozen=True)
class DeployArtifact:
    """One file made for one or more targets. `path` is the file a device loads (for TensorRT
    without a GPU here: the trtexec script that builds the engine on the device); `source` is
    the ONNX it was made from."""

    format: str
    precision: str
    path: Path
    source: Path
    targets: tuple[str, ...]
    parity_max_abs_err: float | None
    parity_tolerance: float | None
    lint: tuple[LintResult, ...]
    build: TrtArtifact | None = None
    quantization: QuantResult | None = None

    @property
    def passed(self) -> bool:
        """Parity held where it was checked."""
        return self.parity_max_abs_err is None or self.parity_max_abs_err <= self.parity_tolerance


@dataclass(frozen=True)
class Skipped:
    """An artifact a target asked for that could not be made, and why."""

    format: str
    precision: str
    targets: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Deployment:
    """What `deploy` made for the targets, and what it could not make."""

    made: tuple[DeployArtifact, ...]
    skipped: tuple[Skipped, ...]


@dataclass
class _Onnx:
    """The ONNX files formats are built from, each made once, on first need."""

    src: Sources
    made: dict[str, Path] = field(default_factory=dict)
    symmetric: QuantResult | None = None

    def fp16(self) -> tuple[Path, float, float]:
        art = to_fp16(self.src.fp32, self.src.folder / "model.fp16.onnx", self.src.val_x)
        self.made["fp16"] = art.path
        return art.path, art.parity_max_abs_err, art.parity_tolerance

    def at(self, precision: str) -> Path:
        if precision == "fp32":
            return self.src.fp32
        if precision == "int8" and self.src.int8 is not None:
            return self.src.int8
        return self.made.get("fp16") or self.fp16()[0]

    def int8_symmetric(self) -> QuantResult:
        if self.symmetric is None:
            s = self.src
            self.symmetric = quantize(
                s.fp32, s.folder / "model.int8-symmetric.onnx", (s.symmetric,), s.calib_x, s.score, s.val_x, s.max_drop
            )
        return self.symmetric


Maker = Callable[[str, _Onnx, tuple[str, ...]], DeployArtifact]
_MAKERS: dict[str, Maker] = {}


def register_format(name: str) -> Callable[[Maker], Maker]:
    """Register the maker of one artifact format."""

    def decorate(maker: Maker) -> Maker:
        _MAKERS[name] = maker
        return maker

    return decorate


def wanted(targets: Sequence[Target]) -> dict[tuple[str, str], tuple[str, ...]]:
    """Each (format, precision) the targets ask for, in order, with the targets that want it."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for t in targets:
        for a in t.artifacts:
            out[(a.format, a.precision)] = (*out.get((a.format, a.precision), ()), t.name)
    return out


def deploy(src: Sources, want: dict[tuple[str, str], tuple[str, ...]]) -> Deployment:
    """Make every (format, precision) of `want` (see `wanted`) beyond the fp32 and int8 ONNX, which
    the export and quantize stages make."""
    onnx = _Onnx(src)
    made: list[DeployArtifact] = []
    skipped: list[Skipped] = []
    # ONNX first: the other formats reuse the ONNX file of their precision.
    for (fmt, precision), names in sorted(want.items(), key=lambda item: item[0][0] != "onnx"):
        if fmt == "onnx" and precision in ("fp32", "int8"):
            continue
        if precision == "int8" and not src.make_int8:
            skipped.append(Skipped(fmt, precision, names, "quantization is disabled: set quantize.enabled = true"))
            continue
        made.append(_MAKERS[fmt](precision, onnx, names))
    return Deployment(tuple(made), tuple(skipped))


@register_format("onnx")
def _onnx(precision: str, onnx: _Onnx, names: tuple[str, ...]) -> DeployArtifact:
    # Only fp16 reaches here: fp32 and int8 ONNX are the export and quantize stages' own files.
    path, err, tolerance = onnx.fp16()
    return DeployArtifact("onnx", precision, path, onnx.src.fp32, names, err, tolerance, ())


@register_format("ort")
def _ort(precision: str, onnx: _Onnx, names: tuple[str, ...]) -> DeployArtifact:
    source = onnx.at(precision)
    art = export_ort(source, onnx.src.folder / f"model.{precision}.ort", onnx.src.val_x)
    return DeployArtifact(
        "ort", precision, art.path, source, names, art.parity_max_abs_err, art.parity_tolerance,
        (lint(source, "ort-mobile"),),
    )


@register_format("tensorrt")
def _tensorrt(precision: str, onnx: _Onnx, names: tuple[str, ...]) -> DeployArtifact:
    # int8 comes from a symmetric QDQ model (explicit quantization, the form TensorRT takes);
    # fp16 from the fp16 ONNX, which strongly typed builds (TensorRT 10 and 11) accept as it is.
    quant = onnx.int8_symmetric() if precision == "int8" else None
    source = quant.path if quant is not None else onnx.at("fp16")
    art = build_tensorrt(TrtBuild(source, precision), onnx.src.folder, timing_cache=onnx.src.folder.parent / "tensorrt.cache")
    path = art.engine if art.built else art.command_path
    return DeployArtifact("tensorrt", precision, path, source, names, None, None, (lint(source, "tensorrt"),), art, quant)
