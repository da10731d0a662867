"""The one timing helper of the project: warm up, time, summarise."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Timed calls stop here even if the minimum time has not passed, so a call of a microsecond does
# not fill memory with samples; ten thousand give a p99 of a hundred samples' tail.
MAX_RUNS = 10_000
# A latency of record (a runner's measurement) is timed for at least this long; internal timings
# (choosing among int8 methods, a TensorRT build) keep to their count.
MIN_TIME_S = 0.2


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
    min_time_s: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> TimingStats:
    """Call `fn` `warmup` times untimed, then time it until both `runs` calls and `min_time_s`
    seconds of timed calls have passed (at most `max(runs, MAX_RUNS)` calls), and summarise them.

    A fast model's hundred runs last a few milliseconds, so one busy moment of the machine would
    be its whole tail; the minimum time spreads the samples over long enough to see that. The
    stats' `runs` is the count actually timed. `progress(done, runs)` is called after each of the
    first `runs` timed calls, outside the timed region; the calls that fill the minimum time after
    them are not reported. `clock` is the time source, in seconds (a fake one in tests).
    """
    if runs < 1 or warmup < 0 or min_time_s < 0:
        raise ValueError(
            f"time_calls needs runs >= 1, warmup >= 0 and min_time_s >= 0, got runs={runs}, warmup={warmup}, "
            f"min_time_s={min_time_s}"
        )
    for _ in range(warmup):
        fn()
    most = max(runs, MAX_RUNS)
    samples: list[float] = []
    first = clock()
    end = first
    while len(samples) < runs or (end - first < min_time_s and len(samples) < most):
        start = clock()
        fn()
        end = clock()
        samples.append(end - start)
        if progress is not None and len(samples) <= runs:
            progress(len(samples), runs)
    return summarise([s * 1000.0 for s in samples])


def summarise(ms: Sequence[float]) -> TimingStats:
    """The statistics of timed calls that took `ms` milliseconds each (at least one): percentiles
    interpolated between the sorted samples (numpy's default), as every timing here is summarised."""
    times = np.asarray(ms, dtype=np.float64)
    if times.size == 0:
        raise ValueError("summarise needs at least one timed call")
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return TimingStats(
        runs=int(times.size), p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), mean_ms=float(times.mean())
    )


def load_per_core() -> float | None:
    """The 1-minute load average divided by the CPUs this process may run on; None where the OS
    has no load average (Windows).

    A load per core near or above 1 means other work was waiting for the CPUs the timed calls ran
    on, which is what makes a figure noisy.
    """
    if not hasattr(os, "getloadavg"):
        return None
    try:
        one_minute = os.getloadavg()[0]
    except OSError:  # no load average to read (e.g. /proc/loadavg is absent)
        return None
    # A container or taskset may allow fewer CPUs than the machine has: the affinity says which.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return one_minute / max(1, cpus)
