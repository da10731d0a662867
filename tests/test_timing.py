import pytest

from edgedistill.timing import MAX_RUNS, TimingStats, load_per_core, time_calls


def test_warmup_not_counted_and_stats_ordered():
    calls = []
    stats = time_calls(lambda: calls.append(1), warmup=3, runs=20, min_time_s=0)
    assert len(calls) == 23
    assert isinstance(stats, TimingStats)
    assert stats.runs == 20
    assert 0.0 <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms


def test_measures_sleep_duration():
    import time

    stats = time_calls(lambda: time.sleep(0.002), warmup=0, runs=5, min_time_s=0)
    assert stats.p50_ms >= 1.9
    assert stats.mean_ms >= 1.9


def test_progress_called_once_per_timed_run():
    seen = []
    time_calls(lambda: None, warmup=2, runs=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_rejects_zero_runs():
    with pytest.raises(ValueError):
        time_calls(lambda: None, warmup=0, runs=0)
    with pytest.raises(ValueError):
        time_calls(lambda: None, warmup=0, runs=1, min_time_s=-1)


class _FakeClock:
    """A clock that each call of the timed function moves on by `step` seconds."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += self.step


def test_times_until_the_minimum_time_has_passed():
    clock = _FakeClock(0.001)  # 1 ms a call: 20 runs last 20 ms, under the 0.1 s asked
    seen = []
    stats = time_calls(clock.tick, warmup=0, runs=20, min_time_s=0.1, clock=clock, progress=lambda d, t: seen.append(d))
    assert stats.runs == 100
    assert stats.p50_ms == pytest.approx(1.0) and stats.p99_ms == pytest.approx(1.0)
    # Progress covers the runs asked; the runs that fill the minimum time come after a full bar.
    assert seen == list(range(1, 21))


def test_a_slow_call_is_timed_the_runs_asked_only():
    clock = _FakeClock(0.5)  # 20 runs of 0.5 s pass the minimum time long before the count
    assert time_calls(clock.tick, warmup=0, runs=20, min_time_s=0.2, clock=clock).runs == 20


def test_a_fast_call_stops_at_the_maximum_count():
    clock = _FakeClock(1e-9)
    assert time_calls(clock.tick, warmup=0, runs=20, min_time_s=1.0, clock=clock).runs == MAX_RUNS


def test_load_per_core_is_a_ratio_or_unknown():
    load = load_per_core()
    assert load is None or load >= 0
