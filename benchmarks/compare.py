"""Side-by-side timing on a noisy machine: contenders timed in interleaved rounds, medians over rounds."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from edgedistill.timing import time_calls


@dataclass(frozen=True)
class Timings:
    """Per-round p50s (ms) of each contender, timed in the same rounds."""

    rounds: dict[str, tuple[float, ...]]
    warmup: int
    runs: int

    def p50_ms(self, name: str) -> float:
        """The median over rounds of the contender's per-round p50."""
        return statistics.median(self.rounds[name])

    def ratio(self, slow: str, fast: str) -> float:
        """How many times faster `fast` is than `slow`: the median of the per-round ratios, so a
        round in which the machine was busy weighs on both sides of its own ratio."""
        return statistics.median(s / f for s, f in zip(self.rounds[slow], self.rounds[fast]))

    @property
    def method(self) -> str:
        n = len(next(iter(self.rounds.values())))
        return f"{n} interleaved rounds of {self.runs} timed calls after {self.warmup} warm-up calls each"


def interleaved(contenders: Mapping[str, Callable[[], object]], rounds: int, runs: int, warmup: int) -> Timings:
    """Time every contender once per round with `time_calls`, starting each round at the next one,
    so no contender always runs first (with a cold cache) or last (after the others heated the CPU)."""
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(time_calls(contenders[name], warmup=warmup, runs=runs).p50_ms)
    return Timings({n: tuple(s) for n, s in samples.items()}, warmup, runs)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def runs_for(fns: Mapping[str, Callable[[], object]], seconds: float, most: int) -> int:
    """Timed calls per round such that the slowest contender's block takes about `seconds` (at
    least 3, at most `most`): cheap calls get many runs, a 100 ms call a few."""
    slowest = max(time_calls(fn, warmup=1, runs=1).p50_ms for fn in fns.values()) / 1000
    return max(3, min(most, int(seconds / max(slowest, 1e-6))))
