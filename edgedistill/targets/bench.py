"""`edgedistill bench`: one model's latency on each target, measured where a runner reaches the
device and predicted elsewhere, every figure labelled with its source. The figures come from the
one latency service (`targets.latency`), as a run's do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgedistill.errors import UserError
from edgedistill.targets.android_tools import PerfTests, idle_text
from edgedistill.targets.cost import graph_cost
from edgedistill.targets.latency import Latency, LatencyService, Timing
from edgedistill.targets.profile import Target

Mode = Literal["auto", "measure", "predict"]

NOISY = "noisy: rerun on a quiet machine"


@dataclass(frozen=True)
class BenchRow:
    """One target's figures for the model. `detail` says how they were obtained and, measured,
    their spread (p90/p50, p99/p50) and the device's load per CPU; `noisy` says the spread or the
    load says the device was busy (`targets.latency.is_noisy`), and `detail` then ends with
    `NOISY`."""

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
    noisy: bool = False
    spread_p90: float | None = None
    spread_p99: float | None = None
    load: float | None = None


def bench(
    model: Path,
    targets: Sequence[Target],
    mode: Mode = "auto",
    addresses: Mapping[str, str] | None = None,
    timing: Timing = Timing(),
    perf_test: PerfTests = PerfTests(),
    seq_len: int | None = None,
) -> tuple[BenchRow, ...]:
    """Figures of `model` on each target: `auto` measures where it can and predicts elsewhere.
    `seq_len` sizes the dynamic axes after the batch (a transformer's sequence length); `perf_test`
    holds the Android timing binaries, each of which must time `model`'s kind of file."""
    if model.is_dir():
        raise UserError(f"{model} is a folder: give the .onnx file in it to benchmark, such as {model / 'model.onnx'}")
    addresses = dict(addresses or {})
    unknown = sorted(set(addresses) - {t.name for t in targets})
    if unknown:
        raise UserError(f"--address names {', '.join(unknown)}, which is not among the --target values: add it or drop the address")
    idle = perf_test.idle({model.suffix})
    if idle is not None:
        raise UserError(f"{idle_text(*idle)}, and {model.name} is not one: bench such a file, or drop that --perf-test")
    service = LatencyService(targets, addresses, timing, perf_test)
    peak: int | None = None
    rows = []
    for target in targets:
        if mode == "measure" or (mode == "auto" and service.measurable(target, model)):
            lat = service.measure(model, target, seq_len)
        else:
            lat = service.predict(model, target, seq_len=seq_len)
        if peak is None:
            # Peak activations come from the graph; a file the cost analysis cannot read still measures.
            peak = _peak(model, seq_len)
        rows.append(_row(model, target, lat, peak))
    return tuple(rows)


def _peak(model: Path, seq_len: int | None) -> int:
    try:
        return graph_cost(model, seq_len=seq_len or 128).peak_activation_bytes
    except UserError:
        return 0


def _row(model: Path, target: Target, lat: Latency, peak: int) -> BenchRow:
    if lat.source == "measured":
        where = f" at {lat.address}" if lat.address else ""
        detail = (
            f"{lat.runner} runner on {lat.device}{where}: {lat.runtime}, {lat.provider}, "
            f"threads {lat.threads or 'default'}, {lat.runs} runs{_conditions(lat)}"
        )
    else:
        how = lat.calibration or "uncalibrated defaults"
        detail = f"roofline on the {target.name} profile, {how}, within ×{1 + lat.error_band:.2g} either way"
    return BenchRow(
        target.name, lat.source, lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.low_ms, lat.high_ms, lat.throughput_per_s,
        model.stat().st_size, peak, detail, lat.noisy, lat.spread_p90, lat.spread_p99, lat.load,
    )


def _conditions(lat: Latency) -> str:
    """`; spread p90 1.2x p99 2.0x of p50, load 0.58 per CPU`, with what is known, what stands
    in for a percentile the runtime's tool does not print, and the noisy mark."""
    parts = []
    if lat.spread_p90 is not None and lat.spread_p99 is not None:
        parts.append(f"spread p90 {lat.spread_p90:.2f}x p99 {lat.spread_p99:.2f}x of p50")
    if lat.stand_ins:
        parts.append(lat.stand_ins)
    parts.append("load unknown" if lat.load is None else f"load {lat.load:.2f} per CPU")
    if lat.noisy:
        parts.append(NOISY)
    return "; " + ", ".join(parts)
