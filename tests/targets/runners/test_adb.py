"""The adb runner: each runtime's command line and parser, the `--perf-test` values and what they
make measurable, always; the real `adb` where installed; a real phone where one is attached."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_cnn

from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx
from edgedistill.targets.android_tools import (
    EXECUTORCH, LITERT, ONNXRUNTIME, TOOLS, PerfTests, ToolRun, parse_benchmark_model, parse_executor_runner,
    parse_perf_test, parse_perf_tests, tool_for,
)
from edgedistill.targets.latency import LatencyService
from edgedistill.targets.profile import load_target
from edgedistill.targets.runners.adb import AdbRunner
from edgedistill.targets.runners.base import RUNNERS, Measurement
from edgedistill.timing import summarise

WD = "/data/local/tmp/edgedistill"

# onnxruntime_perf_test's stdout, in the formats of onnxruntime/test/perftest/performance_runner.cc:
# PerformanceRunner::Run() ("Session creation time cost: ... Peak working set size: ...") and
# PerformanceResult::DumpToFile() with statistics on ("Min Latency: X s" ... "P999 Latency: X s").
PERF_TEST_SAMPLE = """\
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

# benchmark_model's stdout, in the formats of google-ai-edge/LiteRT@f6745779 (see
# android_tools): tflite/tools/benchmark/benchmark_main.cc ("STARTING!"), benchmark_model.cc
# Run() ("The input model file size (MB): X", "Initialized session in Xms.", "Running benchmark
# for at least ...", then the stats line and std::endl, hence the blank line) and
# BenchmarkLoggingListener::OnBenchmarkEnd ("Inference timings in us: ...", "Memory footprint
# delta ..."), each line prefixed "INFO: " by tflite/tools/logging.h; the stats lines as
# StatWithPercentiles::OutputToStream writes them (xla/tsl/util/stats_calculator.h).
BENCHMARK_MODEL_SAMPLE = """\
INFO: STARTING!
INFO: The input model file size (MB): 0.095788
INFO: Initialized session in 4.391ms.
INFO: Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=4893 first=180 curr=93 min=88 max=410 avg=101.93 std=17 p5=91 median=97 p95=131

INFO: Running benchmark for at least 100 iterations and at least 0.2 seconds but terminate if exceeding 150 seconds.
INFO: count=2035 first=96 curr=94 min=87 max=1022 avg=98.1402 std=24 p5=90 median=95 p95=112

INFO: Inference timings in us: Init: 4391, First inference: 180, Warmup (avg): 101.93, Inference (avg): 98.1402
INFO: Memory footprint delta from the start of the tool (MB): init=3.42188 overall=3.67188
"""

# executor_runner's lines (pytorch/executorch v1.4.1, examples/portable/executor_runner/
# executor_runner.cpp: "Resetting threadpool with num threads = %d", "Model loaded in %f ms.",
# "Iteration %u of %u: %f ms", "Model executed successfully %u time(s) in %f ms.", "%zu outputs: ")
# as `adb logcat -d --pid=PID -s ExecuTorch:I` prints them from the Android platform layer
# (runtime/platform/default/android.cpp: tag "ExecuTorch", the message only), in logcat's default
# threadtime format (date time pid tid level tag: message), which is Android's, not ExecuTorch's.
EXECUTOR_RUNNER_LOGCAT = """\
--------- beginning of main
08-22 15:26:39.101  4321  4321 I ExecuTorch: Resetting threadpool with num threads = 4
08-22 15:26:39.143  4321  4321 I ExecuTorch: Model loaded in 39.258000 ms.
08-22 15:26:39.155  4321  4321 I ExecuTorch: Iteration 1 of 6: 12.500000 ms
08-22 15:26:39.165  4321  4321 I ExecuTorch: Iteration 2 of 6: 10.100000 ms
08-22 15:26:39.175  4321  4321 I ExecuTorch: Iteration 3 of 6: 9.000000 ms
08-22 15:26:39.185  4321  4321 I ExecuTorch: Iteration 4 of 6: 9.500000 ms
08-22 15:26:39.195  4321  4321 I ExecuTorch: Iteration 5 of 6: 11.000000 ms
08-22 15:26:39.205  4321  4321 I ExecuTorch: Iteration 6 of 6: 9.250000 ms
08-22 15:26:39.205  4321  4321 I ExecuTorch: Model executed successfully 6 time(s) in 61.350000 ms.
08-22 15:26:39.205  4321  4321 I ExecuTorch: 1 outputs: 
"""
# The same runner built with the posix platform layer logs to stderr (runtime/platform/default/
# posix.cpp: "%c %02u:%02u:%02u.%06lu executorch:%s:%zu] %s").
EXECUTOR_RUNNER_POSIX = """\
I 00:00:00.041203 executorch:executor_runner.cpp:781] Iteration 1 of 3: 12.500000 ms
I 00:00:00.051310 executorch:executor_runner.cpp:781] Iteration 2 of 3: 10.000000 ms
I 00:00:00.061322 executorch:executor_runner.cpp:781] Iteration 3 of 3: 9.000000 ms
I 00:00:00.061330 executorch:executor_runner.cpp:791] Model executed successfully 3 time(s) in 31.500000 ms.
"""


def _run(tool, warmup=2, runs=4, threads=0):
    return ToolRun(
        binary=f"{WD}/{tool.binary}", model=f"{WD}/m{tool.suffixes[0]}", workdir=WD, threads=threads, warmup=warmup,
        runs=runs, min_time_s=0.2,
    )


def _binaries(tmp_path, *runtimes):
    """A PerfTests of stand-in files (never run) for `runtimes`."""
    pairs = []
    for runtime in runtimes:
        path = tmp_path / TOOLS[runtime].binary
        path.write_bytes(b"x")
        pairs.append((runtime, path))
    return PerfTests(tuple(pairs))


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


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


def test_each_file_has_one_tool():
    assert tool_for(Path("m.onnx")) is tool_for(Path("m.ort")) is ONNXRUNTIME
    assert tool_for(Path("m.int8.tflite")) is LITERT and tool_for(Path("m.fp32.pte")) is EXECUTORCH
    assert tool_for(Path("m.mlpackage")) is None
    suffixes = [s for tool in TOOLS.values() for s in tool.suffixes]
    assert len(suffixes) == len(set(suffixes))


# --- parsers ---


def test_parse_perf_test():
    timed = parse_perf_test(PERF_TEST_SAMPLE, _run(ONNXRUNTIME), "device X1")
    assert timed.p50_ms == pytest.approx(0.804115)
    assert timed.p90_ms == pytest.approx(0.857834)
    assert timed.p99_ms == pytest.approx(1.17341)
    assert timed.mean_ms == pytest.approx(0.813741)
    assert timed.runs == 100 and timed.throughput_per_s == pytest.approx(1215.85)
    assert timed.stand_ins == ""


def test_parse_perf_test_with_exponents():
    text = "P50 Latency: 9.5e-05 s\nP90 Latency: 1e-04 s\nP99 Latency: 1.2e-04 s\n"
    timed = parse_perf_test(text, _run(ONNXRUNTIME), "device X1")
    assert timed.p50_ms == pytest.approx(0.095) and timed.p99_ms == pytest.approx(0.12)
    assert timed.runs is None and timed.mean_ms == timed.p50_ms


def test_parse_perf_test_without_percentiles_is_one_line():
    with pytest.raises(UserError) as excinfo:
        parse_perf_test("Total inference requests: 100\nAverage inference time cost: 0.8 ms\n", _run(ONNXRUNTIME), "device X1")
    assert "device X1" in _one_line(excinfo)


def test_parse_benchmark_model_reads_the_timed_runs_not_the_warmup():
    timed = parse_benchmark_model(BENCHMARK_MODEL_SAMPLE, _run(LITERT), "device X1")
    assert timed.runs == 2035
    assert timed.p50_ms == pytest.approx(0.095)  # median=95 us: a true p50
    assert timed.p90_ms == pytest.approx(0.112)  # its p95 fills p90
    assert timed.p99_ms == pytest.approx(1.022)  # its max fills p99
    assert timed.mean_ms == pytest.approx(0.0981402)
    assert timed.throughput_per_s == pytest.approx(1e6 / 98.1402)
    assert "p90 is benchmark_model's p95" in timed.stand_ins and "p99 its max" in timed.stand_ins


def test_parse_benchmark_model_when_every_run_took_as_long():
    text = "INFO: count=3 curr=120(all same) p5=120 median=120 p95=120\n"
    timed = parse_benchmark_model(text, _run(LITERT), "device X1")
    assert timed.runs == 3 and timed.p50_ms == timed.p90_ms == timed.p99_ms == timed.mean_ms == pytest.approx(0.12)


def test_parse_benchmark_model_with_exponents():
    text = "INFO: count=50 first=2100000 curr=2000000 min=1.9e+06 max=2.2e+06 avg=2.01e+06 std=3e4 p5=1.9e+06 median=2e+06 p95=2.1e+06\n"
    timed = parse_benchmark_model(text, _run(LITERT), "device X1")
    assert timed.p50_ms == pytest.approx(2000.0) and timed.p99_ms == pytest.approx(2200.0)


@pytest.mark.parametrize(
    "text, says",
    [
        # TensorFlow's older benchmark_model logged a plain Stat: no percentiles at all.
        ("INFO: count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929\n", "no median"),
        ("INFO: STARTING!\nERROR: Benchmarking failed.\n", "no timings"),
        ("", "no timings"),
    ],
)
def test_parse_benchmark_model_without_figures_is_one_line(text, says):
    with pytest.raises(UserError) as excinfo:
        parse_benchmark_model(text, _run(LITERT), "device X1")
    line = _one_line(excinfo)
    assert says in line and "device X1" in line and "//tflite/tools/benchmark:benchmark_model" in line


def test_parse_executor_runner_from_logcat_drops_the_warmup():
    timed = parse_executor_runner(EXECUTOR_RUNNER_LOGCAT, _run(EXECUTORCH, warmup=2, runs=4), "device X1")
    kept = summarise([9.0, 9.5, 11.0, 9.25])  # iterations 3 to 6
    assert timed.runs == 4
    assert (timed.p50_ms, timed.p90_ms, timed.p99_ms, timed.mean_ms) == pytest.approx(
        (kept.p50_ms, kept.p90_ms, kept.p99_ms, kept.mean_ms)
    )
    assert timed.p50_ms == pytest.approx(np.percentile([9.0, 9.5, 11.0, 9.25], 50))
    assert timed.throughput_per_s == pytest.approx(1000.0 / kept.mean_ms) and timed.stand_ins == ""


def test_parse_executor_runner_from_stderr_and_logcat_counts_a_line_once():
    timed = parse_executor_runner(EXECUTOR_RUNNER_POSIX * 2, _run(EXECUTORCH, warmup=1, runs=2), "device X1")
    assert timed.runs == 2 and timed.mean_ms == pytest.approx(9.5)


@pytest.mark.parametrize(
    "text",
    [
        # ExecuTorch before 1.4 logged the total only.
        "I 00:00:00.061330 executorch:executor_runner.cpp:720] Model executed successfully 6 time(s) in 61.350000 ms.\n",
        # All the executions were warm-up ones.
        "08-22 15:26:39.155  4321  4321 I ExecuTorch: Iteration 1 of 2: 12.500000 ms\n",
        "",
    ],
)
def test_parse_executor_runner_without_figures_is_one_line(text):
    with pytest.raises(UserError) as excinfo:
        parse_executor_runner(text, _run(EXECUTORCH, warmup=2, runs=4), "device X1")
    line = _one_line(excinfo)
    assert "no time per execution" in line and "ExecuTorch 1.4" in line and "device X1" in line


# --- command lines ---


def test_perf_test_command_line():
    runner = AdbRunner(perf_test=PerfTests((("onnxruntime", Path("build/onnxruntime_perf_test")),)), serial="R58M",
                       threads=4, runs=50, provider="xnnpack")
    run = runner.tool_run(ONNXRUNTIME, f"{WD}/m.onnx")
    assert ONNXRUNTIME.args(run) == [
        f"{WD}/onnxruntime_perf_test", "-m", "times", "-r", "50", "-x", "4", "-e", "xnnpack", "-I", "-s",
        f"{WD}/m.onnx", f"{WD}/perf_test_result.csv",
    ]
    line = runner.shell_command(ONNXRUNTIME, run)
    assert line.startswith(f"cd {WD} && chmod 755 onnxruntime_perf_test && rm -f perf_test_result.csv && ")
    assert f"LD_LIBRARY_PATH={WD}:$LD_LIBRARY_PATH " in line
    assert line.endswith("2>&1; echo edgedistill-status=$?")
    assert ONNXRUNTIME.provider(run) == "XnnpackExecutionProvider"
    assert runner._serial_args() == ["-s", "R58M"]
    assert AdbRunner()._serial_args() == []


def test_benchmark_model_command_line():
    runner = AdbRunner(threads=4, warmup=3, runs=50)
    run = runner.tool_run(LITERT, f"{WD}/m.int8.tflite")
    assert LITERT.args(run) == [
        f"{WD}/benchmark_model", f"--graph={WD}/m.int8.tflite", "--num_threads=4", "--warmup_runs=3", "--num_runs=50",
        "--min_secs=0.2", "--use_xnnpack=true",
    ]
    assert "--num_threads=-1" in LITERT.args(AdbRunner().tool_run(LITERT, "m.tflite"))  # 0: LiteRT's default
    line = runner.shell_command(LITERT, run)
    assert line.startswith(f"cd {WD} && chmod 755 benchmark_model && LD_LIBRARY_PATH=") and "rm -f" not in line
    assert line.endswith("--use_xnnpack=true 2>&1; echo edgedistill-status=$?")


def test_executor_runner_command_line_reads_its_lines_from_logcat():
    runner = AdbRunner(threads=2, warmup=3, runs=50)
    run = runner.tool_run(EXECUTORCH, f"{WD}/m.fp32.pte")
    assert EXECUTORCH.args(run) == [
        f"{WD}/executor_runner", f"--model_path={WD}/m.fp32.pte", "--num_executions=53", "--cpu_threads=2",
        "--print_output=none",
    ]
    assert "--cpu_threads=-1" in EXECUTORCH.args(AdbRunner().tool_run(EXECUTORCH, "m.pte"))
    line = runner.shell_command(EXECUTORCH, run)
    assert line.startswith(f"cd {WD} && chmod 755 executor_runner || exit 1; LD_LIBRARY_PATH={WD}:$LD_LIBRARY_PATH ")
    assert line.endswith(
        "--print_output=none 2>&1 & pid=$!; wait $pid; status=$?; logcat -d --pid=$pid -s ExecuTorch:I; "
        "echo edgedistill-status=$status"
    )
    assert EXECUTORCH.provider(run) == LITERT.provider(run) == "XNNPACK"


def test_bad_settings():
    with pytest.raises(UserError, match="provider"):
        AdbRunner(provider="gpu")
    with pytest.raises(UserError):
        AdbRunner(runs=0)
    with pytest.raises(UserError):
        AdbRunner(warmup=-1)


# --- --perf-test values ---


def test_perf_test_values_bare_and_keyed(tmp_path):
    ort, bm, er = (tmp_path / n for n in ("onnxruntime_perf_test", "benchmark_model", "executor_runner"))
    for path in (ort, bm, er):
        path.write_bytes(b"x")
    given = parse_perf_tests([str(ort), f"litert={bm}", f"executorch={er}"])
    assert given.binary("onnxruntime") == ort and given.binary("litert") == bm and given.binary("executorch") == er
    assert parse_perf_tests([f"onnxruntime={ort}"]) == parse_perf_tests([str(ort)])
    assert parse_perf_tests([]) == PerfTests() and PerfTests().suffixes == ()
    odd = tmp_path / "build=1"
    odd.mkdir()
    (odd / "perf_test").write_bytes(b"x")
    # What precedes "=" is a path, not a name: the whole value is the bare path.
    assert parse_perf_tests([f"{odd}/perf_test"]).binary("onnxruntime") == odd / "perf_test"


@pytest.mark.parametrize(
    "values, says",
    [
        (["tflite={bm}"], "'tflite' is not a runtime"),
        (["litert={bm}", "litert={bm}"], "two binaries for litert"),
        (["{ort}", "onnxruntime={ort}"], "two binaries for onnxruntime"),
        (["litert={tmp}/nope"], "does not exist: build benchmark_model for Android"),
        (["{tmp}/nope"], "does not exist: build onnxruntime_perf_test for Android"),
        (["executorch="], "names no file"),
    ],
)
def test_bad_perf_test_values_are_one_line(tmp_path, values, says):
    (tmp_path / "bm").write_bytes(b"x")
    (tmp_path / "ort").write_bytes(b"x")
    filled = [v.format(bm=tmp_path / "bm", ort=tmp_path / "ort", tmp=tmp_path) for v in values]
    with pytest.raises(UserError) as excinfo:
        parse_perf_tests(filled)
    line = _one_line(excinfo)
    assert says in line
    if "not a runtime" in line:
        assert all(f"{runtime}=PATH" in line for runtime in ("litert", "executorch"))


def test_idle_binaries(tmp_path):
    given = _binaries(tmp_path, "onnxruntime", "litert")
    assert given.idle({".onnx", ".tflite"}) is None
    tool, path = given.idle({".onnx"})
    assert tool is LITERT and path == tmp_path / "benchmark_model"


# --- what a phone measures ---


def _service(perf_test):
    return LatencyService((load_target("pixel-8"),), {"pixel-8": "R58M"}, perf_test=perf_test)


def test_measurable_depends_on_the_binaries_given(tmp_path):
    pixel = load_target("pixel-8")
    only_ort = _service(_binaries(tmp_path, "onnxruntime"))
    assert only_ort.measurable(pixel, Path("m.onnx")) and only_ort.measurable(pixel, Path("m.ort"))
    assert not only_ort.measurable(pixel, Path("m.int8.tflite")) and not only_ort.measurable(pixel, Path("m.fp32.pte"))
    with_litert = _service(_binaries(tmp_path, "onnxruntime", "litert"))
    assert with_litert.measurable(pixel, Path("m.int8.tflite")) and not with_litert.measurable(pixel, Path("m.fp32.pte"))
    only_et = _service(_binaries(tmp_path, "executorch"))
    assert only_et.measurable(pixel, Path("m.fp32.pte")) and not only_et.measurable(pixel, Path("m.onnx"))
    # With no binary, an ONNX file is still tried, so that measuring it says what to pass.
    assert _service(PerfTests()).measurable(pixel, Path("m.onnx"))
    assert not _service(PerfTests()).measurable(pixel, Path("m.tflite"))
    assert not LatencyService((pixel,)).measurable(pixel, Path("m.onnx"))  # no address


def test_a_file_without_its_binary_is_one_line(tmp_path):
    model = tmp_path / "m.int8.tflite"
    model.write_bytes(b"x")
    with pytest.raises(UserError) as excinfo:
        AdbRunner(perf_test=_binaries(tmp_path, "onnxruntime")).measure(model)
    assert "pass --perf-test litert=PATH" in _one_line(excinfo)
    with pytest.raises(UserError) as excinfo:
        AdbRunner().measure(tmp_path / "gone.tflite")
    assert "gone.tflite does not exist" in _one_line(excinfo)


def test_a_file_no_tool_times_is_one_line(tmp_path):
    model = tmp_path / "m.engine"
    model.write_bytes(b"x")
    with pytest.raises(UserError) as excinfo:
        AdbRunner().measure(model)
    assert ".onnx, .ort, .tflite, .pte" in _one_line(excinfo)


@pytest.mark.parametrize("runtime", sorted(TOOLS))
def test_missing_binary_is_one_line(tmp_path, runtime):
    tool = TOOLS[runtime]
    model = tmp_path / f"m{tool.suffixes[0]}"
    model.write_bytes(b"x")
    with pytest.raises(UserError) as excinfo:
        AdbRunner(perf_test=PerfTests(((runtime, tmp_path / "nope"),))).measure(model)
    assert f"build {tool.binary} for Android" in _one_line(excinfo)


# --- the real adb ---


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


@pytest.mark.parametrize("runtime", sorted(TOOLS))
def test_no_device_is_one_line(tmp_path, runtime):
    """With adb present, a serial that is not attached gives one line naming it, whatever the runtime."""
    if shutil.which("adb") is None:
        pytest.skip("adb is not installed (apt-get install adb)")
    model = tmp_path / f"m{TOOLS[runtime].suffixes[0]}"
    model.write_bytes(b"x")
    runner = AdbRunner(perf_test=_binaries(tmp_path, runtime), serial="edgedistill-no-such-device", timeout_s=30)
    with pytest.raises(UserError) as excinfo:
        runner.measure(model)
    assert "edgedistill-no-such-device" in _one_line(excinfo)


def _measure_on_phone(model: Path, runtime: str, env: str) -> Measurement:
    devices = _attached_devices()
    binary = os.environ.get(env)
    if not binary:
        pytest.skip(f"set {env} to a {TOOLS[runtime].binary} built for the attached phone")
    runner = AdbRunner(perf_test=PerfTests(((runtime, Path(binary)),)), serial=devices[0], warmup=2, runs=20)
    m = runner.measure(model, target="phone")
    assert isinstance(m, Measurement) and m.source == "measured" and m.runner == "adb"
    assert m.runtime == TOOLS[runtime].label
    assert 0 < m.p50_ms <= m.p90_ms <= m.p99_ms and m.runs >= 20
    return m


def test_measure_onnx_on_attached_phone(tmp_path, digits_xy):
    _attached_devices()
    x, _ = digits_xy
    model = export_onnx(tiny_cnn(), x[:2], x[:16], tmp_path / "cnn.onnx").path
    assert _measure_on_phone(model, "onnxruntime", "EDGEDISTILL_PERF_TEST").runs == 20


def test_measure_tflite_on_attached_phone(tmp_path, digits_xy):
    _attached_devices()
    from edgedistill.export import litert

    if litert.available() is not None:
        pytest.skip(litert.available())
    x, _ = digits_xy
    model = litert.export_tflite(tiny_cnn(), "fp32", tmp_path / "cnn.fp32.tflite", x[:16], x[:16]).path
    assert _measure_on_phone(model, "litert", "EDGEDISTILL_BENCHMARK_MODEL").stand_ins


def test_measure_pte_on_attached_phone(tmp_path, digits_xy):
    _attached_devices()
    from edgedistill.export import executorch

    if executorch.available() is not None:
        pytest.skip(executorch.available())
    x, _ = digits_xy
    model = executorch.export_pte(tiny_cnn(), "fp32", tmp_path / "cnn.fp32.pte", x[:16], x[:16]).path
    assert _measure_on_phone(model, "executorch", "EDGEDISTILL_EXECUTOR_RUNNER").runs == 20
