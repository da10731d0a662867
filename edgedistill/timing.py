"""The one timing helper of the project: warm up, time, summarise."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimingStats:
    """Wall-clock statistics of `runs` timed calls, in milliseconds."""

    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float


def time_calls(
    fn: Callable[[], object],
    warmup: int,
    runs: int,
    progress: Callable[[int, int], None] | None = None,
) -> TimingStats:
    """Call `fn` `warmup` times untimed, then `runs` times timed, and summarise the timed calls.

    `progress(done, total)` is called after each timed call, outside the timed region.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"time_calls needs runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    samples = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
        if progress is not None:
            progress(i + 1, runs)
    ms = samples * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return TimingStats(
        runs=runs, p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), mean_ms=float(ms.mean())
    )
