"""`edgedistill bench`: one model's latency on each target, measured where a runner reaches the
device and predicted elsewhere, every figure labelled with its source."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgedistill.errors import UserError
from edgedistill.targets.calibration import load as load_calibration
from edgedistill.targets.cost import graph_cost
from edgedistill.targets.estimate import predict
from edgedistill.targets.profile import Target
from edgedistill.targets.runners.adb import AdbRunner
from edgedistill.targets.runners.local import LocalRunner
from edgedistill.targets.runners.ssh import SshRunner

Mode = Literal["auto", "measure", "predict"]


@dataclass(frozen=True)
class BenchRow:
    """One target's figures for the model. `detail` says how they were obtained."""

    target: str
    source: str
    p50_ms: float
    p90_ms: float | None
    p99_ms: float | None
    low_ms: float | None
    high_ms: float | None
    throughput_per_s: float | None
    file_bytes: int
    peak_activation_bytes: int
    detail: str


def reachable(target: Target, addresses: Mapping[str, str]) -> bool:
    """Whether a runner can measure on `target`: this machine, or a device given an address."""
    return target.runner == "local" or (target.runner in ("ssh", "adb") and target.name in addresses)


def bench(
    model: Path,
    targets: Sequence[Target],
    mode: Mode = "auto",
    addresses: Mapping[str, str] | None = None,
    local: LocalRunner = LocalRunner(),
    perf_test: Path | None = None,
) -> tuple[BenchRow, ...]:
    """Figures of `model` on each target: `auto` measures where it can and predicts elsewhere."""
    addresses = dict(addresses or {})
    unknown = sorted(set(addresses) - {t.name for t in targets})
    if unknown:
        raise UserError(f"--address names {', '.join(unknown)}, which is not among the --target values: add it or drop the address")
    cost = graph_cost(model)
    rows = []
    for target in targets:
        can_measure = reachable(target, addresses)
        if mode == "measure" and not can_measure:
            raise UserError(
                f"cannot measure on {target.name}: its runner is {target.runner!r} and no address was given; "
                f"pass --address {target.name}=ADDRESS, or use --mode predict"
            )
        if mode != "predict" and can_measure:
            runner = local if target.runner == "local" else _remote(target, addresses[target.name], perf_test)
            rows.append(_measured(model, target, runner, cost.peak_activation_bytes))
        else:
            rows.append(_predicted(model, target, cost))
    return tuple(rows)


def _remote(target: Target, address: str, perf_test: Path | None) -> SshRunner | AdbRunner:
    """The runner that reaches `target` at `address` (ssh: user@host:port; adb: a device serial)."""
    if target.runner == "ssh":
        return SshRunner.from_address(address, threads=target.specs.threads if target.specs else 0)
    if perf_test is None:
        raise UserError(
            f"measuring on {target.name} over adb needs onnxruntime_perf_test built for Android: pass --perf-test PATH"
        )
    return AdbRunner(perf_test=perf_test, serial=address or None)


def _measured(model: Path, target: Target, runner: LocalRunner | SshRunner | AdbRunner, peak: int) -> BenchRow:
    m = runner.measure(model, target.name)
    return BenchRow(
        target.name, "measured", m.p50_ms, m.p90_ms, m.p99_ms, None, None, m.throughput_per_s,
        model.stat().st_size, peak,
        f"{m.runner} runner on {m.device}: {m.runtime}, {m.provider}, threads {m.threads or 'default'}, {m.runs} runs",
    )


def _predicted(model: Path, target: Target, cost) -> BenchRow:
    if target.specs is None:
        raise UserError(f"target {target.name} has no [specs] to predict from: add them to its profile")
    calibration = load_calibration(target.name)
    p = predict(cost, target, calibration)
    how = f"calibrated {calibration.created}" if calibration else "uncalibrated defaults"
    return BenchRow(
        target.name, "predicted", p.p50_ms, None, None, p.low_ms, p.high_ms, None,
        model.stat().st_size, cost.peak_activation_bytes,
        f"roofline on the {target.name} profile, {how}, within ×{1 + p.error_band:.2g} either way",
    )
