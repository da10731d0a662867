"""The one place a latency is had: measured where a runner reaches the target (this machine, or a
device at an address), predicted from the ONNX graph elsewhere, and always labelled which.

`run`, `bench`, `calibrate` and the search's latency probe all ask a `LatencyService`. It picks the
runner from the runner registry by the target's runner kind, loads each target's calibration
once, and returns one type, `Latency`, whatever the source. Measuring never needs the cost
analysis; predicting needs nothing but the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.targets.android_tools import PerfTests
from edgedistill.targets.calibration import Calibration
from edgedistill.targets.calibration import load as load_calibration
from edgedistill.targets.cost import GraphCost, as_precision, graph_cost
from edgedistill.targets.estimate import predict
from edgedistill.targets.profile import Target, load_target
from edgedistill.targets.runners import RUNNERS, Measurement, Reach

# The name this machine's own measurements are filed under in a report.
HOST = "host-cpu"

# Above these a measurement is noisy (see `is_noisy` for the figures that chose them).
NOISY_P99_SPREAD = 5.0
NOISY_LOAD = 1.0


@dataclass(frozen=True)
class Latency:
    """One latency figure at batch 1. `source` is "measured" (runner, runtime, provider, device,
    threads, runs, and the address where it is not this machine) or "predicted" (profile,
    calibration, error band and its low/high range).

    A measured figure also says its spread (`spread_p90` = p90/p50, `spread_p99` = p99/p50), the
    device's load per CPU when it was taken, and whether those say the device was busy (`noisy`:
    rerun on a quiet machine; see `is_noisy`), and `stand_ins`: which of p90 and p99 are not that
    percentile and what fills them, where the runtime's tool prints none (LiteRT's benchmark_model).
    A predicted figure has none of them and is never noisy."""

    p50_ms: float
    source: str
    p90_ms: float | None = None
    p99_ms: float | None = None
    runner: str = ""
    runtime: str = ""
    provider: str = ""
    device: str = ""
    threads: int = 0
    batch: int = 1
    runs: int = 0
    throughput_batch: int = 0
    throughput_per_s: float | None = None
    profile: str = ""
    calibration: str | None = None
    error_band: float | None = None
    low_ms: float | None = None
    high_ms: float | None = None
    seq_len: int | None = None
    address: str | None = None
    noisy: bool = False
    spread_p90: float | None = None
    spread_p99: float | None = None
    load: float | None = None
    # The figures that are not the percentile they fill, and what fills them ("" when all are).
    stand_ins: str = ""


@dataclass(frozen=True)
class Timing:
    """How measurements are taken: untimed warm-up runs, timed runs at batch 1, the runtime's
    intra-op threads (0: the device's profile, else the runtime's default) and the throughput batch."""

    warmup: int = 10
    runs: int = 100
    threads: int = 0
    throughput_batch: int = 32


@dataclass
class LatencyService:
    """Latencies on the run's (or bench's) targets. `addresses` name the devices a runner reaches
    (`raspberry-pi-5` -> `pi@host:22`, `pixel-8` -> a serial); `perf_test` holds the Android
    timing binaries the adb runner pushes, by runtime."""

    targets: Sequence[Target]
    addresses: Mapping[str, str] = field(default_factory=dict)
    timing: Timing = Timing()
    perf_test: PerfTests = PerfTests()
    _calibrations: dict[str, Calibration | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        names = {t.name for t in self.targets}
        unknown = sorted(set(self.addresses) - names)
        if unknown:
            raise UserError(
                f"an address is given for {', '.join(unknown)}, which is not among the targets "
                f"({', '.join(sorted(names))}): add it to the targets or drop the address"
            )
        for target in self.targets:
            if target.name in self.addresses and target.runner in ("local", "none"):
                raise UserError(
                    f"{target.name} has no runner that takes an address (its profile says runner = {target.runner!r}): "
                    "drop the address, or give a profile with runner = \"ssh\" or \"adb\""
                )

    def target(self, name: str) -> Target:
        """The target named `name`."""
        return next(t for t in self.targets if t.name == name)

    def here(self, path: Path, seq_len: int | None = None, progress: Callable[[int, int], None] | None = None) -> Latency:
        """`path` timed on this machine, filed under `HOST` whether or not it is a target."""
        host = next((t for t in self.targets if t.name == HOST), None) or load_target(HOST)
        return self.measure(path, host, seq_len, progress)

    def reachable(self, target: Target) -> bool:
        """Whether a runner measures on `target`: this machine, or a device given an address."""
        return target.runner == "local" or (target.runner in RUNNERS and target.name in self.addresses)

    def measurable(self, target: Target, path: Path) -> bool:
        """Whether `path` can be timed on `target`: it is reachable and its runner runs such a file
        with what it is given (adb: a binary for that file's runtime)."""
        return self.reachable(target) and path.suffix in RUNNERS[target.runner].accepts(self._reach(target, None))

    def measure(
        self, path: Path, target: Target, seq_len: int | None = None, progress: Callable[[int, int], None] | None = None
    ) -> Latency:
        """Time `path` on `target` with the runner that reaches it."""
        if not self.reachable(target):
            raise UserError(
                f"cannot measure on {target.name}: its runner is {target.runner!r} and no address was given; "
                f"pass --address {target.name}=ADDRESS (or [addresses] in the config), or predict"
            )
        runner = RUNNERS[target.runner].open(self._reach(target, seq_len))
        return measured(runner.measure(path, target.name, progress=progress), self.addresses.get(target.name))

    def predict(self, graph: Path | GraphCost, target: Target, precision: str | None = None, seq_len: int | None = None) -> Latency:
        """The roofline prediction of `graph` (an ONNX file or its cost) on `target`, priced at
        `precision` when given (the search prices an fp32 candidate as the file the target gets)."""
        if target.specs is None:
            raise UserError(f"target {target.name} has no [specs] to predict from: add them to its profile")
        cost = graph if isinstance(graph, GraphCost) else graph_cost(graph, seq_len=seq_len or 128)
        if precision is not None:
            cost = as_precision(cost, precision)
        calibration = self.calibration(target.name)
        p = predict(cost, target, calibration)
        return Latency(
            p50_ms=p.p50_ms, source="predicted", profile=target.name,
            calibration=f"calibrated {calibration.created}" if calibration else None,
            error_band=p.error_band, low_ms=p.low_ms, high_ms=p.high_ms, seq_len=seq_len,
        )

    def calibration(self, name: str) -> Calibration | None:
        """The target's calibration, read from the cache once."""
        if name not in self._calibrations:
            self._calibrations[name] = load_calibration(name)
        return self._calibrations[name]

    def _reach(self, target: Target, seq_len: int | None) -> Reach:
        t = self.timing
        # A device measures with the threads its profile says it runs with, unless the config sets them.
        threads = t.threads or (target.specs.threads if target.runner != "local" and target.specs else 0)
        ssh = target.ssh
        return Reach(
            address=self.addresses.get(target.name), threads=threads, warmup=t.warmup, runs=t.runs,
            throughput_batch=t.throughput_batch, seq_len=seq_len, perf_test=self.perf_test,
            python=ssh.python, identity=Path(ssh.identity) if ssh.identity else None, options=ssh.options, workdir=ssh.workdir,
        )


def measured(m: Measurement, address: str | None = None) -> Latency:
    """A runner's measurement as a `Latency`, with its spread and whether it is noisy."""
    spread_p90, spread_p99 = (m.p90_ms / m.p50_ms, m.p99_ms / m.p50_ms) if m.p50_ms > 0 else (None, None)
    return Latency(
        p50_ms=m.p50_ms, p90_ms=m.p90_ms, p99_ms=m.p99_ms, source=m.source, runner=m.runner,
        runtime=m.runtime, provider=m.provider, device=m.device, threads=m.threads, batch=m.batch,
        runs=m.runs, throughput_batch=m.throughput_batch, throughput_per_s=m.throughput_per_s, seq_len=m.seq_len,
        address=address, noisy=is_noisy(spread_p99, m.load), spread_p90=spread_p90, spread_p99=spread_p99, load=m.load,
        stand_ins=m.stand_ins,
    )


def is_noisy(spread_p99: float | None, load: float | None) -> bool:
    """Whether a measurement says the device was busy while it was taken: its p99 is over
    `NOISY_P99_SPREAD` times its p50, or the load per CPU was over `NOISY_LOAD`.

    A busy CPU does not slow every run a little: the scheduler takes it away for whole time
    slices (milliseconds), so a few runs take tens of times the others and the p99 leaves the p50
    behind while the p90 barely moves. Timing a 0.05 ms CNN on this 2-CPU machine for 0.2 s gave
    p99/p50 1.9-2.0 idle (load 0.58 per CPU, from other work) and 55-170 while two or three
    processes burned the CPUs (load 0.82-1.19, still rising); a 0.013 ms one reached 3.7 idle,
    as a few microseconds of jitter is a large ratio there. Hence 5: far above what an idle
    machine shows, far below what a busy one does. The load is the 1-minute average, so it lags
    a burst, but over 1 per CPU it says others were waiting for the CPUs all along, even when the
    timed runs happened to miss them. A figure that is unknown (None: no load average on the
    device) does not count either way.
    """
    return (spread_p99 is not None and spread_p99 > NOISY_P99_SPREAD) or (load is not None and load > NOISY_LOAD)


def parse_addresses(pairs: Sequence[str]) -> dict[str, str]:
    """`NAME=ADDRESS` strings (as `--address` takes them) as a mapping; one line on a malformed one."""
    out: dict[str, str] = {}
    for text in pairs:
        name, sep, address = text.partition("=")
        if not name or not sep:
            raise UserError(f"--address {text!r} is not NAME=ADDRESS: e.g. --address raspberry-pi-5=pi@192.168.1.20:22")
        out[name] = address
    return out

