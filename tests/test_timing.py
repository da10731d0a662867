import pytest

from edgedistill.timing import TimingStats, time_calls


def test_warmup_not_counted_and_stats_ordered():
    calls = []
    stats = time_calls(lambda: calls.append(1), warmup=3, runs=20)
    assert len(calls) == 23
    assert isinstance(stats, TimingStats)
    assert stats.runs == 20
    assert 0.0 <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms


def test_measures_sleep_duration():
    import time

    stats = time_calls(lambda: time.sleep(0.002), warmup=0, runs=5)
    assert stats.p50_ms >= 1.9
    assert stats.mean_ms >= 1.9


def test_progress_called_once_per_timed_run():
    seen = []
    time_calls(lambda: None, warmup=2, runs=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_rejects_zero_runs():
    with pytest.raises(ValueError):
        time_calls(lambda: None, warmup=0, runs=0)
