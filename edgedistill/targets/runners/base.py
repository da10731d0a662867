"""What a runner returns, and the registry of runners by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Measurement:
    """A latency measured on a device, with everything needed to reproduce it.

    `threads` is the intra-op thread count asked of the runtime; 0 means the runtime's default
    (onnxruntime: one thread per physical core).
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

    def to_dict(self) -> dict[str, object]:
        """The measurement as plain JSON-ready values."""
        return dataclasses.asdict(self)


class Runner(Protocol):
    """Measures an ONNX file's latency on one device."""

    def measure(
        self,
        model_path: Path,
        target: str = ...,
        progress: Callable[[int, int], None] | None = None,
    ) -> Measurement: ...


RUNNERS: dict[str, type] = {}


def register_runner(name: str) -> Callable[[type], type]:
    """Register a runner class under `name` (e.g. "local", "ssh", "adb")."""

    def decorate(cls: type) -> type:
        if name in RUNNERS:
            raise ValueError(f"runner {name!r} is registered twice")
        RUNNERS[name] = cls
        return cls

    return decorate
