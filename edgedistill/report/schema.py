"""report.json, schema `edgedistill.report/1`: what other tools read. Add fields; never rename them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgedistill.serialize import from_jsonable, to_jsonable
from edgedistill.targets.latency import Latency

SCHEMA = "edgedistill.report/1"
# Files built on the device for its own hardware (TensorRT engines): their size is not known here.
UNSIZED_FORMATS = frozenset({"tensorrt"})


@dataclass(frozen=True)
class QuantizationInfo:
    """How an int8 file was chosen: the method kept and why, layers left in float, every trial."""

    method: str
    reason: str
    kept_float: tuple[str, ...]
    fp32_accuracy: float
    trials: tuple[dict, ...]
    # quantization-aware training where it ran: post-training and QAT scores, and which shipped
    qat: dict | None = None
    # where layers stayed in float: each mixed-precision search's layers, score, bytes and verdict
    assignments: tuple[dict, ...] = ()
    # op types every node of which stayed in float (only the weight-bearing ops were quantized)
    float_ops: tuple[str, ...] = ()


@dataclass(frozen=True)
class Artifact:
    """One file a student (or the teacher) ships as, with its checks and figures."""

    format: str
    precision: str
    path: str
    bytes: int
    metrics: dict[str, float]
    parity_max_abs_err: float | None
    parity_tolerance: float | None
    passed: bool
    latency: dict[str, Latency] = field(default_factory=dict)
    quantization: QuantizationInfo | None = None
    targets: tuple[str, ...] = ()
    lint: tuple[dict, ...] = ()
    build: dict | None = None
    notes: tuple[str, ...] = ()
    # transformers: this machine's latency at each measured sequence length (str(tokens) -> figure)
    seq_latency: dict[str, Latency] = field(default_factory=dict)
    # the task's score on the validation split (higher is better): what the int8 tolerance judges
    score: float | None = None
    # the targets that deploy this file (pipeline.choice): of the files made for a target, the
    # fastest that holds the score
    deployed_for: tuple[str, ...] = ()
    # the activation memory the file's own runtime plans at batch 1 (LiteRT's arena), where known:
    # what a microcontroller target's SRAM is judged on
    arena_bytes: int | None = None


@dataclass(frozen=True)
class Check:
    """One budget of a tier: its absolute limit, the student's value, and where the value came from."""

    name: str
    limit: float
    value: float
    ok: bool
    margin: float
    source: str


@dataclass(frozen=True)
class Deployed:
    """Which file one target deploys and why: the fastest of its files that holds the score, a
    smaller file at equal speed. `findings` say why int8 lost there, from the graph and the
    runtime, each with what to do about it."""

    target: str
    path: str
    format: str
    precision: str
    reason: str
    findings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Teacher:
    source: str
    params: int
    macs: int
    bytes_fp32: int
    peak_activation_bytes: int
    metrics: dict[str, float]
    latency: dict[str, Latency]
    artifacts: tuple[Artifact, ...]
    # factory, pt2, onnx, recorded or query; params and MACs are 0 where the teacher does not reveal them
    kind: str = "factory"
    outputs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Student:
    name: str
    tier: str
    generator: dict
    knob: float
    budget: dict
    params: int
    macs: int
    peak_activation_bytes: int
    metrics: dict[str, float]
    within_budget: bool
    checks: tuple[Check, ...]
    distill: dict
    artifacts: tuple[Artifact, ...]
    skipped: tuple[dict, ...] = ()
    deployed: tuple[Deployed, ...] = ()


@dataclass(frozen=True)
class Report:
    schema: str
    created: str
    edgedistill_version: str
    name: str
    task: str
    data: dict
    teacher: Teacher
    students: tuple[Student, ...]
    failures: tuple[str, ...]
    targets: tuple[dict, ...] = ()
    # What the task's score measures, in words ("" in reports written before it was kept).
    quality: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


def parity_failures(teacher: Teacher, students: tuple[Student, ...]) -> tuple[str, ...]:
    """One line per artifact whose parity check failed: the run's failures."""
    return tuple(
        f"{name}: {a.format} {a.precision} parity error {a.parity_max_abs_err:.2e} exceeds {a.parity_tolerance:.0e} ({a.path})"
        for name, artifacts in [("teacher", teacher.artifacts), *((s.name, s.artifacts) for s in students)]
        for a in artifacts
        if not a.passed
    )


def largest_file(artifacts: tuple[Artifact, ...], precision: str) -> Artifact | None:
    """The file a `bytes` budget is judged on: the largest file any target deploys, whatever its
    precision, as every target ships its own. A report without deployment choices (no target
    wants a file, or an older report) falls back to the largest file at the budget's `precision`.
    TensorRT engines are built on the device for its GPU, so their size is not known here and
    they are left out."""
    sized = [a for a in artifacts if a.format not in UNSIZED_FORMATS]
    deployed = [a for a in sized if a.deployed_for]
    return max(deployed or [a for a in sized if a.precision == precision], key=lambda a: a.bytes, default=None)


def file_source(largest: Artifact, precision: str) -> str:
    """Where a `bytes` check's value came from, as the run and the gate say it."""
    if largest.deployed_for:
        return f"largest deployed file: {largest.path} ({largest.precision}, for {', '.join(largest.deployed_for)})"
    return f"largest {precision} file: {largest.path}"


def deciding_latency(artifacts: tuple[Artifact, ...], target: str) -> tuple[Latency, Artifact] | None:
    """The figure a latency budget on `target` is judged on: the file deployed there; without a
    deployment choice, among the files made for `target` a measured p50 outranks a predicted one,
    and among equals the fastest file decides."""
    figures = [
        (a.latency[target], a) for a in artifacts
        if target in a.targets and target in a.latency and a.latency[target].p50_ms is not None  # NaN loads as None
    ]
    deployed = [f for f in figures if target in f[1].deployed_for]
    return min(deployed or figures, key=lambda f: (f[0].source != "measured", f[0].p50_ms), default=None)


# A device's own memory, judged as hard budgets of every tier that targets it: "flash:<target>"
# holds the file the target deploys, "sram:<target>" its activation arena.
DEVICE_MEMORY = ("flash", "sram")


def device_memory(name: str) -> tuple[str, str] | None:
    """(memory, target) of a device memory check's name ("sram:stm32h743" -> ("sram", "stm32h743")); None for another."""
    memory, sep, target = name.partition(":")
    return (memory, target) if sep and memory in DEVICE_MEMORY else None


def memory_figure(artifacts: tuple[Artifact, ...], memory: str, target: str) -> tuple[float, str]:
    """What a device memory check on `target` is judged on, and where it came from: the bytes of
    the file deployed there (flash), or the activation arena its runtime plans (sram); NaN when
    no file is deployed there or its arena is not known."""
    file = next((a for a in artifacts if target in a.deployed_for), None)
    if file is None:
        return float("nan"), f"no file is deployed on {target}"
    if memory == "flash":
        return float(file.bytes), f"bytes of {file.path}, deployed on {target}"
    if file.arena_bytes is None:
        return float("nan"), f"the activation arena of {file.path} ({file.format}) is not known"
    return float(file.arena_bytes), f"activation arena of {file.path}, as its runtime plans it at batch 1"


def dumps(report: Report) -> str:
    """report.json text."""
    return json.dumps(to_jsonable(report), indent=2) + "\n"


def load(path: Path) -> Report:
    """Read a report.json written by `dumps`."""
    return from_jsonable(Report, json.loads(path.read_text()))
