"""The files each target deploys: made once each from a student's fp32 and int8 ONNX, checked
against their source, and linted for the runtime that will run them on the device.

Each format is an entry of the registry in `edgedistill.export.formats`; `deploy` asks every
entry for the precisions the targets want of it, and never branches on a format's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgedistill.errors import Unmade
from edgedistill.export.formats import FORMATS, DeployArtifact, OnnxFiles, Sources, format_for
from edgedistill.targets.profile import Target

__all__ = ["DeployArtifact", "Deployment", "Skipped", "Sources", "deploy", "wanted"]


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


def wanted(targets: Sequence[Target]) -> dict[tuple[str, str], tuple[str, ...]]:
    """Each (format, precision) the targets ask for, in order, with the targets that want it."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for t in targets:
        for a in t.artifacts:
            out[(a.format, a.precision)] = (*out.get((a.format, a.precision), ()), t.name)
    return out


def deploy(src: Sources, want: dict[tuple[str, str], tuple[str, ...]]) -> Deployment:
    """Make every (format, precision) of `want` (see `wanted`) beyond those the run's export and
    quantize stages make (each format's `staged` precisions: the fp32 and int8 ONNX), in the
    registry's order. An unknown format or precision fails before anything is made; a format
    that cannot be made here (`DeployFormat.unavailable`) or from this student (`Unmade`) is
    skipped with its reason."""
    for fmt, precision in want:
        format_for(fmt).require(precision)
    files = OnnxFiles(src)
    made: list[DeployArtifact] = []
    skipped: list[Skipped] = []
    for entry in FORMATS.values():
        for (fmt, precision), names in want.items():
            if fmt != entry.name or precision in entry.staged:
                continue
            if precision == "int8" and not src.make_int8:
                skipped.append(Skipped(fmt, precision, names, "quantization is disabled: set quantize.enabled = true"))
                continue
            why = entry.unavailable(src)
            if why is not None:
                skipped.append(Skipped(fmt, precision, names, why))
                continue
            try:
                made.append(entry.make(precision, files, names))
            except Unmade as exc:
                skipped.append(Skipped(fmt, precision, names, str(exc)))
    return Deployment(tuple(made), tuple(skipped))
