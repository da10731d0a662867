import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx
from edgedistill.targets.android_tools import PerfTests
from edgedistill.targets.bench import bench
from edgedistill.targets.profile import load_target
from edgedistill.targets.latency import Timing

from conftest import tiny_cnn

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    return export_onnx(tiny_cnn(), x[:2], x, tmp_path_factory.mktemp("bench") / "cnn.onnx").path


@pytest.fixture(autouse=True)
def no_user_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_auto_measures_here_and_predicts_elsewhere(model):
    names = ["host-cpu", "pixel-8", "galaxy-s24", "raspberry-pi-5", "jetson-orin-nano", "jetson-agx-orin"]
    rows = bench(model, [load_target(n) for n in names], "auto", timing=Timing(warmup=1, runs=5))
    assert [r.target for r in rows] == names
    assert rows[0].source == "measured" and "local runner" in rows[0].detail
    for r in rows[1:]:
        assert r.source == "predicted" and "uncalibrated" in r.detail
        assert r.low_ms < r.p50_ms < r.high_ms
    assert all(r.file_bytes == model.stat().st_size and r.peak_activation_bytes > 0 for r in rows)


def test_predict_mode_predicts_this_machine_too(model):
    (row,) = bench(model, [load_target("host-cpu")], "predict")
    assert row.source == "predicted"


def test_measure_mode_needs_a_reachable_target(model):
    with pytest.raises(UserError, match="--address pixel-8="):
        bench(model, [load_target("pixel-8")], "measure")
    with pytest.raises(UserError, match="perf-test"):
        bench(model, [load_target("pixel-8")], "measure", {"pixel-8": "emulator-5554"})


def test_a_binary_for_another_runtime_than_the_model_is_one_line(model, tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"x")
    with pytest.raises(UserError, match=r"--perf-test litert=.* times .tflite files, and cnn.onnx is not one"):
        bench(model, [load_target("pixel-8")], "auto", {"pixel-8": "R58M"}, perf_test=PerfTests((("litert", binary),)))
    result = runner.invoke(app, ["bench", str(model), "--target", "pixel-8", "--perf-test", f"litert={binary}"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and "is not one" in result.stderr


def test_calibrate_with_a_binary_for_another_runtime_is_one_line(tmp_path):
    binary = tmp_path / "executor_runner"
    binary.write_bytes(b"x")
    result = runner.invoke(app, ["calibrate", "--target", "pixel-8", "--address", "R58M", "--perf-test", f"executorch={binary}"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "times .pte files, and the calibration suite is ONNX models" in result.stderr


def test_an_address_for_a_target_not_benchmarked(model):
    with pytest.raises(UserError, match="not among the --target"):
        bench(model, [load_target("host-cpu")], "auto", {"pixel-8": "x"})


def test_bench_command_prints_and_writes_json(model, tmp_path):
    out = tmp_path / "b.json"
    result = runner.invoke(app, ["bench", str(model), "--target", "host-cpu", "--target", "pixel-8", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "measured" in result.output and "predicted" in result.output
    rows = json.loads(out.read_text())
    assert [r["source"] for r in rows] == ["measured", "predicted"]


def test_bench_bad_mode_is_one_line(model):
    result = runner.invoke(app, ["bench", str(model), "--mode", "guess"])
    assert result.exit_code == 2 and "--mode" in result.stderr


def test_calibrate_then_targets_shows_it(tmp_path):
    result = runner.invoke(app, ["calibrate", "--target", "host-cpu"])
    assert result.exit_code == 0, result.output
    assert "median |error|" in result.output
    listed = json.loads(runner.invoke(app, ["targets", "--json"]).output)
    host = next(t for t in listed if t["name"] == "host-cpu")
    assert host["calibration"]["target"] == "host-cpu"
    assert next(t for t in listed if t["name"] == "pixel-8")["calibration"] is None


def test_calibrate_an_unreachable_target_is_one_line():
    result = runner.invoke(app, ["calibrate", "--target", "pixel-8"])
    assert result.exit_code == 2 and "--address" in result.stderr


def test_a_folder_is_not_a_model(tmp_path):
    with pytest.raises(UserError, match="is a folder: give the .onnx file in it to benchmark"):
        bench(tmp_path, [load_target("host-cpu")])


def test_bench_json_replaces_an_earlier_one(model, tmp_path):
    out = tmp_path / "b.json"
    out.write_text('[{"target": "old"}]')
    result = runner.invoke(app, ["bench", str(model), "--mode", "predict", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert [r["target"] for r in json.loads(out.read_text())] == ["host-cpu"]
