"""A measurement whose spread or load says the device was busy is marked noisy, and says so."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.export.onnx import export_onnx
from edgedistill.targets.bench import NOISY, bench
from edgedistill.targets.latency import LatencyService, is_noisy, measured
from edgedistill.targets.profile import load_target
from edgedistill.targets.runners import Measurement
from edgedistill.targets.runners.local import LocalRunner

from conftest import tiny_cnn


def _measurement(p50: float, p90: float, p99: float, load: float | None) -> Measurement:
    return Measurement(
        target="host-cpu", source="measured", runner="local", runtime="onnxruntime 1.0", provider="CPUExecutionProvider",
        threads=0, device="a CPU", batch=1, runs=2000, p50_ms=p50, p90_ms=p90, p99_ms=p99,
        throughput_batch=32, throughput_per_s=1000.0, load=load,
    )


def test_a_wide_spread_is_noisy():
    # The figure: p99 4.27 ms at p50 0.13 ms, on an otherwise idle-looking machine.
    lat = measured(_measurement(0.13, 0.15, 4.27, load=0.2))
    assert lat.noisy
    assert lat.spread_p90 == pytest.approx(0.15 / 0.13) and lat.spread_p99 == pytest.approx(4.27 / 0.13)
    assert lat.load == 0.2


def test_a_steady_measurement_is_not_noisy():
    lat = measured(_measurement(0.052, 0.060, 0.104, load=0.58))
    assert not lat.noisy and lat.spread_p99 == pytest.approx(2.0)


def test_a_loaded_machine_is_noisy_even_when_the_runs_missed_it():
    assert measured(_measurement(1.0, 1.1, 1.5, load=1.6)).noisy


def test_the_rule_with_nothing_known_is_not_noisy():
    assert not is_noisy(None, None)
    assert is_noisy(5.1, None) and not is_noisy(5.0, None)
    assert is_noisy(None, 1.01) and not is_noisy(None, 1.0)


def test_a_prediction_is_never_noisy(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    model = export_onnx(tiny_cnn(), x[:2], x, tmp_path / "cnn.onnx").path
    target = load_target("pixel-8")
    lat = LatencyService((target,)).predict(model, target)
    assert not lat.noisy and lat.spread_p99 is None and lat.load is None


@pytest.fixture
def noisy_here(tmp_path, monkeypatch):
    """A model whose measurement on this machine comes back with the issue's wide spread."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(LocalRunner, "measure", lambda self, path, target="host-cpu", progress=None: _measurement(0.13, 0.15, 4.27, 1.2))
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    return export_onnx(tiny_cnn(), x[:2], x, tmp_path / "cnn.onnx").path


def test_bench_says_the_spread_the_load_and_noisy(noisy_here):
    (row,) = bench(noisy_here, [load_target("host-cpu")], "measure")
    assert row.noisy and row.load == 1.2
    assert "spread p90 1.15x p99 32.85x of p50" in row.detail and "load 1.20 per CPU" in row.detail
    assert row.detail.endswith(NOISY)


def test_bench_command_marks_a_noisy_row_and_writes_its_fields(noisy_here, tmp_path):
    out = tmp_path / "b.json"
    result = CliRunner().invoke(app, ["bench", str(noisy_here), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "noisy: rerun on a quiet machine" in " ".join(result.output.split())
    (row,) = json.loads(out.read_text())
    assert row["noisy"] is True and row["load"] == 1.2
    assert row["spread_p90"] == pytest.approx(0.15 / 0.13) and row["spread_p99"] == pytest.approx(4.27 / 0.13)
