"""Calibration: fit the roofline's free parameters (efficiency per op class, per-kernel overhead,
effective memory bandwidth) to latencies measured on one device, and keep the result in a per-user cache.

A calibration made once on a device (or on a machine like it) makes `estimate.predict` far
closer than the uncalibrated defaults; its error on the fitting models is kept as its band.
The `Calibration` record itself is defined in `estimate`, which reads it: this module fits and
stores it, and imports `estimate`, never the other way round.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgedistill.compress.quantize import Int8Static, quantize
from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx
from edgedistill.fileio import atomic_path
from edgedistill.targets.cost import GraphCost, graph_cost
from edgedistill.targets.estimate import (
    DEFAULT_EFFICIENCY,
    DEFAULT_OVERHEAD_MS,
    OP_CLASSES,
    Calibration,
    node_terms,
)

# Efficiency is a fraction of the profile's peak, so it lives in (0, 1]: a fit that wants more
# than 1 says the profile's peak is wrong, and clipping keeps the parameters physical (and the
# model extrapolating sanely to larger graphs) instead of absorbing that error silently.
_EFFICIENCY_BOUNDS = (1e-3, 1.0)
_OVERHEAD_BOUNDS_MS = (1e-5, 1.0)
# Effective bandwidth between the profile's DRAM figure and 64x it (L1/L2-resident working sets).
_BANDWIDTH_SPAN = (1.0, 64.0)
# A weak pull towards the defaults keeps op classes the fitting set barely exercises (e.g.
# "elementwise", almost always memory-bound) at their defaults instead of drifting anywhere.
_PRIOR_WEIGHT = 1e-4
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# -- the suite of models ---------------------------------------------------------------------


class ConvNet(nn.Module):
    """Conv-BN-ReLU blocks (each halving the size after the first), global pooling, a linear head.
    `depthwise` makes each block after the first a depthwise 3x3 plus a pointwise 1x1."""

    def __init__(self, channels: int, widths: Sequence[int], depthwise: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for i, w in enumerate(widths):
            if depthwise and i > 0:
                layers += [nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.ReLU()]
                layers += [nn.Conv2d(c, w, 1), nn.BatchNorm2d(w), nn.ReLU()]
            else:
                layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class MLP(nn.Module):
    """Linear-ReLU layers of the given widths, then a 10-way head."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AttentionBlock(nn.Module):
    """One single-head self-attention block from nn.Linear, matmul and softmax, on (seq, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(self.q(x), self.k(x).transpose(-1, -2)) * self.scale
        return self.out(torch.matmul(torch.softmax(scores, dim=-1), self.v(x)))


@dataclass(frozen=True)
class SuiteModel:
    """One model to export: a name, its factory, its input shape (no batch) and int8 or not."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    int8: bool = False


SUITE = (
    SuiteModel("conv-w8", lambda: ConvNet(3, (8, 16, 32)), (3, 32, 32)),
    SuiteModel("conv-w32", lambda: ConvNet(3, (32, 64, 128)), (3, 32, 32)),
    SuiteModel("conv-w64-s16", lambda: ConvNet(3, (64, 128)), (3, 16, 16)),
    SuiteModel("depthwise-w32", lambda: ConvNet(3, (32, 64, 128), depthwise=True), (3, 32, 32)),
    SuiteModel("mlp-256", lambda: MLP((256, 128)), (256,)),
    SuiteModel("mlp-1024", lambda: MLP((1024, 1024, 1024)), (1024,)),
    SuiteModel("attention-s16-d64", lambda: AttentionBlock(64), (16, 64)),
    SuiteModel("attention-s64-d128", lambda: AttentionBlock(128), (64, 128)),
    SuiteModel("conv-w8-int8", lambda: ConvNet(3, (8, 16, 32)), (3, 32, 32), int8=True),
    SuiteModel("conv-w32-int8", lambda: ConvNet(3, (32, 64, 128)), (3, 32, 32), int8=True),
    SuiteModel("depthwise-w32-int8", lambda: ConvNet(3, (32, 64, 128), depthwise=True), (3, 32, 32), int8=True),
    SuiteModel("mlp-1024-int8", lambda: MLP((1024, 1024, 1024)), (1024,), int8=True),
)


def export_model(spec: SuiteModel, folder: Path, seed: int = 0) -> Path:
    """Export `spec` (seeded weights, random inputs) to `folder/<name>.onnx`, as int8 QDQ when
    `spec.int8` (static, calibrated on the same random inputs: the values do not change timing)."""
    folder = Path(folder)
    torch.manual_seed(seed)
    model = spec.build().eval()
    x = np.random.default_rng(seed).random((16, *spec.input_shape)).astype(np.float32)
    out = folder / f"{spec.name}.onnx"
    if not spec.int8:
        export_onnx(model, x[:2], x[:4], out)
        return out
    fp32 = folder / f"{spec.name}.fp32.onnx"
    export_onnx(model, x[:2], x[:4], fp32)
    quantize(fp32, out, [Int8Static()], x, lambda _: 0.0, x[:4], timing_runs=1)
    fp32.unlink()
    return out


def suite(folder: Path, seed: int = 0) -> list[Path]:
    """Export the calibration suite (convs of several widths, depthwise, MLPs, attention; fp32 and
    int8 QDQ) to `folder`; returns their paths."""
    return [export_model(spec, folder, seed) for spec in SUITE]


# -- fitting ---------------------------------------------------------------------------------


def fit(
    costs: list[GraphCost], measured_ms: list[float], target: Any, models: Sequence[str] = ()
) -> Calibration:
    """Fit efficiencies per op class, the per-kernel overhead and the effective bandwidth to
    `measured_ms` on `target`.

    Minimises the mean squared log ratio predicted/measured (relative error, so a 20 µs model
    weighs as much as a 20 ms one) by coordinate search in log space from the best point of a
    coarse grid, within the bounds above. `models` names the graphs (kept in the calibration).
    """
    if len(costs) != len(measured_ms) or len(costs) < 2:
        raise UserError(f"calibration needs >= 2 graphs with one measurement each, got {len(costs)} and {len(measured_ms)}")
    if any(not (m > 0 and math.isfinite(m)) for m in measured_ms):
        raise UserError("calibration measurements must be positive finite milliseconds")
    problem = _Problem(costs, np.asarray(measured_ms, dtype=float), target)
    theta = _search(problem)
    ratios = problem.predict(theta) / problem.measured
    return Calibration(
        target=target.name,
        efficiency={c: float(np.exp(v)) for c, v in zip(OP_CLASSES, theta)},
        overhead_ms=float(np.exp(theta[_OVERHEAD])),
        bandwidth_gbs=float(np.exp(theta[_BANDWIDTH])),
        models=tuple(models) or tuple(f"graph-{i}" for i in range(len(costs))),
        median_abs_error=float(np.median(np.abs(ratios - 1.0))),
        worst_ratio=float(np.max(np.maximum(ratios, 1.0 / ratios))),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# Positions in the parameter vector: log efficiency per op class, then these two logs.
_OVERHEAD, _BANDWIDTH = len(OP_CLASSES), len(OP_CLASSES) + 1


class _Problem:
    """Every running node of every graph as flat arrays, so one prediction is a few numpy ops."""

    def __init__(self, costs: list[GraphCost], measured: np.ndarray, target: Any) -> None:
        rows = [(g, OP_CLASSES.index(t.op_class), t.compute_ms, t.bytes)
                for g, cost in enumerate(costs) for t in node_terms(cost, target)]
        if not rows:
            raise UserError("calibration graphs run no kernels: give graphs with compute nodes")
        graph, cls, compute, moved = (np.array(col) for col in zip(*rows))
        self.graph, self.cls = graph.astype(int), cls.astype(int)
        self.compute, self.bytes = compute.astype(float), moved.astype(float)
        self.measured = measured
        bandwidth = target.specs.bandwidth_gbs
        n = len(OP_CLASSES)
        self.lo = np.log([_EFFICIENCY_BOUNDS[0]] * n + [_OVERHEAD_BOUNDS_MS[0], bandwidth * _BANDWIDTH_SPAN[0]])
        self.hi = np.log([_EFFICIENCY_BOUNDS[1]] * n + [_OVERHEAD_BOUNDS_MS[1], bandwidth * _BANDWIDTH_SPAN[1]])
        overhead = DEFAULT_OVERHEAD_MS.get(target.kind, DEFAULT_OVERHEAD_MS["cpu"])
        self.prior = np.log([*(DEFAULT_EFFICIENCY[c] for c in OP_CLASSES), overhead, bandwidth])

    def predict(self, theta: np.ndarray) -> np.ndarray:
        eff = np.exp(theta[: len(OP_CLASSES)])
        memory_ms = self.bytes * 1e3 / (math.exp(theta[_BANDWIDTH]) * 1e9)
        per_node = np.maximum(self.compute / eff[self.cls], memory_ms) + math.exp(theta[_OVERHEAD])
        return np.bincount(self.graph, weights=per_node, minlength=len(self.measured))

    def loss(self, theta: np.ndarray) -> float:
        log_ratio = np.log(self.predict(theta) / self.measured)
        return float(np.mean(log_ratio**2) + _PRIOR_WEIGHT * np.sum((theta - self.prior) ** 2))


def _search(problem: _Problem) -> np.ndarray:
    """Coarse grid over (one shared efficiency, overhead, bandwidth), then coordinate search with
    a halving step: derivative-free, because the roofline's max() has kinks."""
    lo, hi = problem.lo, problem.hi
    grid = [
        np.array([e] * len(OP_CLASSES) + [o, b])
        for e in np.linspace(lo[0], hi[0], 8)
        for o in np.linspace(lo[_OVERHEAD], hi[_OVERHEAD], 12)
        for b in np.linspace(lo[_BANDWIDTH], hi[_BANDWIDTH], 4)
    ]
    theta = min([problem.prior, *grid], key=problem.loss)
    best, step = problem.loss(theta), 1.0
    while step > 1e-3:
        improved = False
        for j in range(len(theta)):
            for delta in (step, -step):
                trial = theta.copy()
                trial[j] = np.clip(trial[j] + delta, lo[j], hi[j])
                value = problem.loss(trial)
                if value < best - 1e-12:
                    theta, best, improved = trial, value, True
        if not improved:
            step /= 2
    return theta


def calibrate(target: Any, measure: Callable[[Path], float], folder: Path) -> Calibration:
    """Export the suite to `folder`, measure each model with `measure(path) -> p50 ms` (e.g.
    `lambda p: LocalRunner().measure(p).p50_ms`) and fit the target's calibration."""
    paths = suite(Path(folder))
    costs = [graph_cost(p) for p in paths]
    measured = [float(measure(p)) for p in paths]
    return fit(costs, measured, target, models=tuple(p.stem for p in paths))


# -- the per-user cache ----------------------------------------------------------------------


def cache_path(target_name: str) -> Path:
    """Where the calibration of `target_name` is kept: $XDG_CACHE_HOME/edgedistill/calibration/."""
    if not _NAME.match(target_name):
        raise UserError(f"target name {target_name!r} cannot name a calibration file: use letters, digits, '.', '_' or '-'")
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "edgedistill" / "calibration" / f"{target_name}.json"


def save(cal: Calibration) -> Path:
    """Write `cal` to the cache (atomically; replaces the target's previous calibration)."""
    path = cache_path(cal.target)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dataclasses.asdict(cal), indent=2) + "\n", encoding="utf-8")
    return path


def load(target_name: str) -> Calibration | None:
    """The cached calibration of `target_name`, or None when there is none."""
    path = cache_path(target_name)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["models"] = tuple(data["models"])
        cal = Calibration(**data)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"calibration file {path} is unreadable ({exc}): delete it and calibrate again") from exc
    if set(cal.efficiency) != set(OP_CLASSES):
        raise UserError(f"calibration file {path} lacks efficiencies for {', '.join(OP_CLASSES)}: delete it and calibrate again")
    return cal
