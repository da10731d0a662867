"""The adb runner: its command line and its parser always; a real phone where one is attached."""

import os
import shutil
import socket
import subprocess

import pytest
from conftest import tiny_cnn

from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx
from edgedistill.targets.runners.adb import AdbRunner, parse_perf_test_output
from edgedistill.targets.runners.base import RUNNERS, Measurement

# onnxruntime_perf_test's stdout, in the formats of onnxruntime/test/perftest/performance_runner.cc:
# PerformanceRunner::Run() ("Session creation time cost: ... Peak working set size: ...") and
# PerformanceResult::DumpToFile() with statistics on ("Min Latency: X s" ... "P999 Latency: X s").
SAMPLE = """\
Session creation time cost: 0.0342617 s
First inference time cost: 2 ms
Total inference time cost: 0.0813741 s
Total inference requests: 100
Average inference time cost: 0.813741 ms
Total inference run time: 0.0822471 s
Number of inferences per second: 1215.85
Avg CPU usage: 96 %
Peak working set size: 41226240 bytes
Min Latency: 0.000761302 s
Max Latency: 0.00121562 s
P50 Latency: 0.000804115 s
P90 Latency: 0.000857834 s
P95 Latency: 0.000893562 s
P99 Latency: 0.00117341 s
P999 Latency: 0.00121562 s
"""


@pytest.fixture(scope="module", autouse=True)
def _leave_no_adb_server():
    """adb starts a server on 127.0.0.1:5037 on first use: stop it afterwards, unless one ran before."""
    try:
        with socket.create_connection(("127.0.0.1", 5037), timeout=1):
            was_running = True
    except OSError:
        was_running = False
    yield
    if not was_running and shutil.which("adb") is not None:
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)


def test_adb_runner_is_registered():
    assert RUNNERS["adb"] is AdbRunner


def test_parse_perf_test_output():
    stats = parse_perf_test_output(SAMPLE)
    assert stats["p50_ms"] == pytest.approx(0.804115)
    assert stats["p90_ms"] == pytest.approx(0.857834)
    assert stats["p99_ms"] == pytest.approx(1.17341)
    assert stats["mean_ms"] == pytest.approx(0.813741)
    assert stats["runs"] == 100
    assert stats["throughput_per_s"] == pytest.approx(1215.85)


def test_parse_perf_test_output_with_exponents():
    text = "P50 Latency: 9.5e-05 s\nP90 Latency: 1e-04 s\nP99 Latency: 1.2e-04 s\n"
    stats = parse_perf_test_output(text)
    assert stats["p50_ms"] == pytest.approx(0.095) and stats["p99_ms"] == pytest.approx(0.12)
    assert "runs" not in stats and stats["mean_ms"] == stats["p50_ms"]


def test_parse_perf_test_output_without_percentiles_is_one_line():
    with pytest.raises(UserError) as excinfo:
        parse_perf_test_output(
            "Total inference requests: 100\nAverage inference time cost: 0.8 ms\n", where="device X1"
        )
    assert "\n" not in str(excinfo.value) and "device X1" in str(excinfo.value)


def test_command_line():
    runner = AdbRunner(
        perf_test="build/onnxruntime_perf_test", serial="R58M", threads=4, runs=50, provider="xnnpack"
    )
    args = runner.perf_test_args("/data/local/tmp/edgedistill/m.onnx")
    assert args == [
        "/data/local/tmp/edgedistill/onnxruntime_perf_test",
        "-m",
        "times",
        "-r",
        "50",
        "-x",
        "4",
        "-e",
        "xnnpack",
        "-I",
        "-s",
        "/data/local/tmp/edgedistill/m.onnx",
        "/data/local/tmp/edgedistill/perf_test_result.csv",
    ]
    line = runner.shell_command("/data/local/tmp/edgedistill/m.onnx")
    assert line.startswith("cd /data/local/tmp/edgedistill && chmod 755 onnxruntime_perf_test && rm -f ")
    assert "LD_LIBRARY_PATH=/data/local/tmp/edgedistill:$LD_LIBRARY_PATH " in line
    assert line.endswith("2>&1; echo edgedistill-status=$?")
    assert runner._serial_args() == ["-s", "R58M"]
    assert AdbRunner(perf_test="p")._serial_args() == []


def test_bad_settings():
    with pytest.raises(UserError, match="provider"):
        AdbRunner(perf_test="p", provider="gpu")
    with pytest.raises(UserError):
        AdbRunner(perf_test="p", runs=0)


def test_missing_binary_is_one_line(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(UserError, match="build onnxruntime_perf_test for Android"):
        AdbRunner(perf_test=tmp_path / "nope").measure(model)


def _attached_devices() -> list[str]:
    if shutil.which("adb") is None:
        pytest.skip("adb is not installed (apt-get install adb)")
    try:
        out = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"adb devices failed: {exc}")
    devices = [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip().endswith("\tdevice")]
    if not devices:
        pytest.skip("no Android device attached (`adb devices` lists none)")
    return devices


def test_no_device_is_one_line(tmp_path):
    """With adb present, a serial that is not attached gives one line naming it."""
    if shutil.which("adb") is None:
        pytest.skip("adb is not installed (apt-get install adb)")
    model, binary = tmp_path / "m.onnx", tmp_path / "onnxruntime_perf_test"
    model.write_bytes(b"x")
    binary.write_bytes(b"x")
    with pytest.raises(UserError) as excinfo:
        AdbRunner(perf_test=binary, serial="edgedistill-no-such-device", timeout_s=30).measure(model)
    text = str(excinfo.value)
    assert "\n" not in text and "edgedistill-no-such-device" in text


def test_measure_on_attached_phone(tmp_path, digits_xy):
    devices = _attached_devices()
    perf_test = os.environ.get("EDGEDISTILL_PERF_TEST")
    if not perf_test:
        pytest.skip("set EDGEDISTILL_PERF_TEST to an onnxruntime_perf_test built for the attached phone")
    x, _ = digits_xy
    model = export_onnx(tiny_cnn(), x[:2], x[:16], tmp_path / "cnn.onnx").path
    m = AdbRunner(perf_test=perf_test, serial=devices[0], runs=20).measure(model, target="phone")
    assert isinstance(m, Measurement) and m.source == "measured" and m.runner == "adb"
    assert 0 < m.p50_ms <= m.p90_ms <= m.p99_ms and m.runs == 20
