"""How well `estimate.predict` foresees latency on a CPU: calibrate host-cpu on the calibration
suite, then measure and predict held-out models (other families, widths, depths, batch sizes and
int8 versions; none used to calibrate) and write the errors to benchmarks/RESULTS.md.

Run: python -m benchmarks.prediction_error [--quick]
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from benchmarks.fixtures import torch_threads
from benchmarks.results import Figure, main
from edgedistill.examples.digits import cnn
from edgedistill.ortsession import open_session
from edgedistill.targets.calibration import MLP, AttentionBlock, ConvNet, SuiteModel, calibrate, export_model
from edgedistill.targets.cost import graph_cost
from edgedistill.targets.estimate import predict
from edgedistill.targets.profile import load_target
from edgedistill.targets.runners.local import cpu_name
from edgedistill.timing import time_calls

HEADING = "## 4. Prediction error (host-cpu)"
WARMUP, RUNS = 50, 500
QUICK_WARMUP, QUICK_RUNS = 5, 50


@dataclass(frozen=True)
class HeldOut:
    """A held-out model and the batch it is measured and predicted at."""

    spec: SuiteModel
    batch: int = 1


HELD_OUT = (
    HeldOut(SuiteModel("digits-cnn-w0.25", lambda: cnn(0.25), (1, 8, 8))),
    HeldOut(SuiteModel("digits-cnn-w0.5", lambda: cnn(0.5), (1, 8, 8))),
    HeldOut(SuiteModel("digits-cnn-w1", lambda: cnn(1.0), (1, 8, 8))),
    HeldOut(SuiteModel("digits-cnn-w2", lambda: cnn(2.0), (1, 8, 8))),
    HeldOut(SuiteModel("digits-cnn-w1", lambda: cnn(1.0), (1, 8, 8)), batch=8),
    HeldOut(SuiteModel("digits-cnn-w1-int8", lambda: cnn(1.0), (1, 8, 8), int8=True)),
    HeldOut(SuiteModel("digits-cnn-w2-int8", lambda: cnn(2.0), (1, 8, 8), int8=True)),
    HeldOut(SuiteModel("tiny-mlp", lambda: MLP((64, 32)), (1, 8, 8))),
    HeldOut(SuiteModel("mlp-512-256", lambda: MLP((512, 256)), (512,)), batch=16),
    HeldOut(SuiteModel("conv-deep-24px", lambda: ConvNet(3, (16, 32, 48, 64)), (3, 24, 24))),
    HeldOut(SuiteModel("depthwise-w16-48px", lambda: ConvNet(3, (16, 32, 64), depthwise=True), (3, 48, 48))),
    HeldOut(SuiteModel("attention-s32-d96", lambda: AttentionBlock(96), (32, 96))),
    HeldOut(SuiteModel("attention-s32-d96-int8", lambda: AttentionBlock(96), (32, 96), int8=True)),
)


@dataclass(frozen=True)
class Row:
    """One held-out model: measured and predicted p50 at its batch."""

    name: str
    batch: int
    measured_ms: float
    predicted_ms: float
    uncalibrated_ms: float

    @property
    def ratio(self) -> float:
        return self.predicted_ms / self.measured_ms


def measure_p50(path: Path, batch: int = 1, warmup: int = WARMUP, runs: int = RUNS) -> float:
    """p50 ms of `path` at `batch` with onnxruntime's defaults, the way the local runner times it."""
    session = open_session(path)
    feed = {}
    for inp in session.get_inputs():
        shape = (batch, *inp.shape[1:])
        feed[inp.name] = np.random.default_rng(0).random(shape).astype(np.float32)
    return time_calls(lambda: session.run(None, feed), warmup=warmup, runs=runs).p50_ms


def host_target() -> Any:
    """host-cpu's profile; a stand-in with this CPU's nominal figures if the profile has no specs."""
    target = load_target("host-cpu")
    if getattr(target, "specs", None) is not None:
        return target
    cores = len(os.sched_getaffinity(0))
    peak = cores * 2.6 * 64  # GHz x fp32 FLOP/cycle (two 256-bit FMA pipes) per core
    return SimpleNamespace(
        name=target.name,
        kind=target.kind,
        specs=SimpleNamespace(peak_gflops={"fp32": peak, "fp16": peak, "int8": 4 * peak}, bandwidth_gbs=20.0, threads=cores),
    )


def run(quick: bool = False) -> str:
    """Calibrate, predict the held-out set and return the section."""
    warmup, runs = (QUICK_WARMUP, QUICK_RUNS) if quick else (WARMUP, RUNS)
    measure = functools.partial(measure_p50, warmup=warmup, runs=runs)
    target = host_target()
    # One torch thread while exporting the suite: the exports do not depend on it (onnxruntime times).
    with torch_threads(1), tempfile.TemporaryDirectory(prefix="edgedistill-prediction-") as tmp:
        folder = Path(tmp)
        cal = calibrate(target, measure, folder / "suite")
        rows = []
        for held in HELD_OUT:
            path = export_model(held.spec, folder / "held-out")
            cost = graph_cost(path, batch=held.batch)
            rows.append(
                Row(
                    name=held.spec.name,
                    batch=held.batch,
                    measured_ms=measure(path, held.batch),
                    predicted_ms=predict(cost, target, cal).p50_ms,
                    uncalibrated_ms=predict(cost, target).p50_ms,
                )
            )
    return _section(rows, cal, target, warmup, runs)


def _abs_errors(rows: list[Row], attr: str) -> list[float]:
    return [abs(getattr(r, attr) / r.measured_ms - 1.0) for r in rows]


def _worst(rows: list[Row], attr: str) -> float:
    return max(max(getattr(r, attr) / r.measured_ms, r.measured_ms / getattr(r, attr)) for r in rows)


def _section(rows: list[Row], cal: Any, target: Any, warmup: int, runs: int) -> str:
    median = statistics.median(_abs_errors(rows, "predicted_ms"))
    worst = _worst(rows, "predicted_ms")
    met = median <= 0.20 and worst <= 2.0
    specs = target.specs
    lines = [
        f"Machine: {cpu_name()}, {len(os.sched_getaffinity(0))} cores ({platform.machine()}), "
        f"onnxruntime {ort.__version__} (default threads), onnx {onnx.__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()}. Profile: peak {specs.peak_gflops} GFLOP/s, {specs.bandwidth_gbs} GB/s.",
        "",
        "Method: `calibration.calibrate` exports the calibration suite "
        f"({', '.join(cal.models)}), times each (p50 of {runs} runs after {warmup} warm-up) and fits "
        "the roofline's efficiency per op class, per-kernel overhead and effective bandwidth. The held-out "
        "models below (other families, widths, depths and batch sizes, int8 versions) were never used to "
        "calibrate; each is measured the same way and predicted from `graph_cost` + the calibration.",
        "",
        f"Fitted: efficiency {', '.join(f'{k} {v:.3f}' for k, v in cal.efficiency.items())}; "
        f"overhead {cal.overhead_ms * 1000:.2f} µs per kernel; bandwidth {cal.bandwidth_gbs:.0f} GB/s. "
        f"Fit on the suite: median |error| {cal.median_abs_error:.1%}, worst ratio {cal.worst_ratio:.2f}x.",
        "",
        "| model | batch | measured p50 ms | predicted ms | pred / meas | uncalibrated ms | uncal. / meas |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.batch} | {r.measured_ms:.4f} | {r.predicted_ms:.4f} | {r.ratio:.2f} | "
            f"{r.uncalibrated_ms:.4f} | {r.uncalibrated_ms / r.measured_ms:.2f} |"
        )
    lines += [
        "",
        f"Held-out, calibrated: median |error| **{median:.1%}**, worst ratio **{worst:.2f}x** "
        f"(goal: <= 20 % and <= 2x: {'met' if met else 'NOT met'}). Uncalibrated defaults: median "
        f"{statistics.median(_abs_errors(rows, 'uncalibrated_ms')):.1%}, worst {_worst(rows, 'uncalibrated_ms'):.2f}x.",
    ]
    return "\n".join(lines)


FIGURE = Figure("prediction", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
