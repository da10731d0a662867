"""What a runner returns, and the registry of runners by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgedistill.targets.android_tools import PerfTests


@dataclass(frozen=True)
class Measurement:
    """A latency measured on a device, with everything needed to reproduce it.

    `threads` is the intra-op thread count asked of the runtime; 0 means the runtime's default
    (onnxruntime: one thread per physical core). `runs` is the count of timed runs actually taken:
    at least the count asked, more where those did not fill the minimum time.
    """

    target: str
    source: str  # always "measured": predictions are a different type, never one of these
    runner: str
    runtime: str  # e.g. "onnxruntime 1.32.0"
    provider: str
    threads: int
    device: str  # CPU model name
    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput_batch: int
    throughput_per_s: float
    seq_len: int | None = None  # the length given to dynamic sequence axes (transformers), else None
    # The device's 1-minute load average per CPU at the end of the measurement; None where the
    # device has no load average (Windows, or a runner that cannot read it, as adb's perf_test).
    load: float | None = None
    # The figures that are not the percentile they fill, and what fills them, where the runtime's
    # tool prints no such percentile (LiteRT's benchmark_model: p90 is its p95); "" when all are.
    stand_ins: str = ""

    def to_dict(self) -> dict[str, object]:
        """The measurement as plain JSON-ready values."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Reach:
    """What opening a runner for one device takes: its address (None for this machine), how to
    time there, the size of dynamic axes after the batch (a transformer's sequence length) and,
    for adb, the Android timing binaries to push, by runtime."""

    address: str | None = None
    threads: int = 0
    warmup: int = 10
    runs: int = 100
    throughput_batch: int = 32
    seq_len: int | None = None
    perf_test: PerfTests = PerfTests()
    # ssh: the device's Python, the key and extra options, the folder the model goes to
    python: str = "python3"
    identity: Path | None = None
    options: tuple[str, ...] = ()
    workdir: str = "/tmp/edgedistill"


class Runner(Protocol):
    """Measures a model file's latency on one device. `accepts` are the file suffixes it can time
    there with what a `Reach` gives (adb: the binaries given); `open` makes one from a `Reach`."""

    @classmethod
    def accepts(cls, reach: Reach) -> tuple[str, ...]: ...

    @classmethod
    def open(cls, reach: Reach) -> "Runner": ...

    def measure(
        self,
        model_path: Path,
        target: str = ...,
        progress: Callable[[int, int], None] | None = None,
    ) -> Measurement: ...


RUNNERS: dict[str, type[Runner]] = {}


def register_runner(name: str) -> Callable[[type], type]:
    """Register a runner class under `name` (e.g. "local", "ssh", "adb")."""

    def decorate(cls: type) -> type:
        if name in RUNNERS:
            raise ValueError(f"runner {name!r} is registered twice")
        RUNNERS[name] = cls
        return cls

    return decorate
