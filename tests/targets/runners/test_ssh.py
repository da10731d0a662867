"""The ssh runner against a real OpenSSH server on 127.0.0.1, started for these tests.

The "device" is this machine: its Python has numpy and onnxruntime, as a Raspberry Pi's would.
"""

import getpass
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import NO_HOST_CHECK, free_port

from edgedistill.errors import UserError
from edgedistill.targets.runners import bench_script
from edgedistill.targets.runners.base import RUNNERS, Measurement
from edgedistill.targets.runners.ssh import SshRunner, parse_address, parse_trtexec



def _runner(sshd, tmp_path, **settings) -> SshRunner:
    fields = dict(
        host="127.0.0.1",
        user=getpass.getuser(),
        port=sshd["port"],
        identity=sshd["key"],
        python=sys.executable,
        workdir=str(tmp_path / "device"),
        threads=1,
        warmup=2,
        runs=20,
        throughput_batch=4,
        options=NO_HOST_CHECK,
        connect_timeout_s=5,
        timeout_s=60,
    )
    fields.update(settings)
    return SshRunner(**fields)


def test_ssh_runner_is_registered():
    assert RUNNERS["ssh"] is SshRunner


def test_measure_over_ssh(sshd, cnn_onnx, tmp_path):
    seen = []
    m = _runner(sshd, tmp_path).measure(cnn_onnx, target="rpi", progress=lambda d, t: seen.append((d, t)))
    assert isinstance(m, Measurement)
    assert m.source == "measured" and m.runner == "ssh" and m.target == "rpi"
    assert m.runtime.startswith("onnxruntime ") and m.provider == "CPUExecutionProvider"
    # At least the runs asked (more fill the minimum time); the device's own load comes back.
    assert m.threads == 1 and m.batch == 1 and m.runs >= 20 and m.throughput_batch == 4
    assert m.load is not None and m.load >= 0
    assert 0 < m.p50_ms <= m.p90_ms <= m.p99_ms
    assert m.throughput_per_s > 0 and m.device
    assert seen and seen[-1] == (20, 20)
    copied = list((tmp_path / "device").iterdir())
    assert len(copied) == 1 and copied[0].name.endswith("-cnn.onnx")
    # An unchanged model is not sent again, and a second measurement still works.
    before = copied[0].stat().st_mtime_ns
    assert _runner(sshd, tmp_path, runs=5).measure(cnn_onnx).runs >= 5
    assert copied[0].stat().st_mtime_ns == before


def _one_line_error(excinfo, *words):
    text = str(excinfo.value)
    assert "\n" not in text, text
    for word in words:
        assert word in text, text


def test_unreachable_port_is_one_line(cnn_onnx, tmp_path):
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client (apt-get install openssh-client)")
    runner = SshRunner(
        host="127.0.0.1", port=free_port(), options=NO_HOST_CHECK, connect_timeout_s=3, timeout_s=30
    )
    with pytest.raises(UserError) as excinfo:
        runner.measure(cnn_onnx)
    _one_line_error(excinfo, "127.0.0.1", "cannot reach")


def test_wrong_key_is_one_line(sshd, cnn_onnx, tmp_path):
    with pytest.raises(UserError) as excinfo:
        _runner(sshd, tmp_path, identity=sshd["other_key"]).measure(cnn_onnx)
    _one_line_error(excinfo, "127.0.0.1", "refused the key", "ssh-copy-id")


def test_missing_python_on_device_is_one_line(sshd, cnn_onnx, tmp_path):
    with pytest.raises(UserError) as excinfo:
        _runner(sshd, tmp_path, python="/nonexistent/python3").measure(cnn_onnx)
    _one_line_error(excinfo, "127.0.0.1", "could not start", "onnxruntime")


def test_unknown_provider_is_one_line(sshd, cnn_onnx, tmp_path):
    with pytest.raises(UserError) as excinfo:
        _runner(sshd, tmp_path, providers=("NoSuchExecutionProvider",)).measure(cnn_onnx)
    _one_line_error(excinfo, "127.0.0.1", "NoSuchExecutionProvider", "CPUExecutionProvider")


def test_remote_timeout_is_one_line(sshd, cnn_onnx, tmp_path):
    # Enough runs that a 1-second limit cannot hold them.
    with pytest.raises(UserError) as excinfo:
        _runner(sshd, tmp_path, runs=10_000_000, timeout_s=1).measure(cnn_onnx)
    _one_line_error(excinfo, "127.0.0.1", "did not finish within 1 s")
    # The benchmark stopped on the device too, not only the ssh client here.
    assert not _processes_with(str(tmp_path / "device"))


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue  # the process ended meanwhile
    return found


def test_missing_model_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        SshRunner(host="example.invalid").measure(tmp_path / "nope.onnx")


def test_bench_script_runs_alone(cnn_onnx):
    """The device script needs nothing of edgedistill: run it from its text, in a bare directory."""
    out = subprocess.run(
        [sys.executable, "-", str(cnn_onnx), "--runs=5", "--min-time=0", "--warmup=1", "--threads=1", "--progress=1"],
        input=bench_script.script_text(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    lines = out.stdout.strip().splitlines()
    assert lines[:5] == [f"progress {i} 5" for i in range(1, 6)]
    result = json.loads(lines[-1])
    assert set(result) >= {
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "runs",
        "throughput_per_s",
        "runtime",
        "provider",
        "threads",
        "device",
        "load",
    }
    assert result["runs"] == 5 and result["threads"] == 1 and result["load"] >= 0
    assert "edgedistill" not in bench_script.script_text().replace("edgedistill-bench", "").split('"""', 2)[2]


def test_bench_script_times_for_the_minimum_time_too():
    calls = []
    samples = bench_script._time(lambda: calls.append(1), warmup=2, runs=3, min_time_s=0.02)
    # A call of a microsecond: three of them last far less than 20 ms, so many more are timed.
    assert len(samples) > 3 and len(calls) == len(samples) + 2
    assert len(bench_script._time(lambda: None, warmup=0, runs=3, min_time_s=0)) == 3
    assert len(bench_script._time(lambda: None, warmup=0, runs=3, min_time_s=60)) == bench_script.MAX_RUNS


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("raspberrypi.local", (None, "raspberrypi.local", None)),
        ("pi@10.0.0.7", ("pi", "10.0.0.7", None)),
        ("nvidia@jetson:2222", ("nvidia", "jetson", 2222)),
        ("root@[fe80::1]:22", ("root", "fe80::1", 22)),
    ],
)
def test_parse_address(address, expected):
    assert parse_address(address) == expected


def test_from_address():
    r = SshRunner.from_address("pi@rpi:2200", runs=7)
    assert (r.user, r.host, r.port, r.runs) == ("pi", "rpi", 2200, 7)
    assert r.address == "pi@rpi:2200"
    with pytest.raises(UserError, match="already gives the port"):
        SshRunner.from_address("rpi:2200", port=22)


@pytest.mark.parametrize("address", ["", "pi@", "host:port", "a b", "host:70000"])
def test_bad_address(address):
    with pytest.raises(UserError, match="ssh address"):
        SshRunner.from_address(address)


def test_bad_settings():
    with pytest.raises(UserError):
        SshRunner(host="rpi", runs=0)
    with pytest.raises(UserError):
        SshRunner(host="-oProxyCommand=x")


# trtexec's summary as printed by TensorRT's samples/common/sampleReporting.cpp (printEpilog), and
# its --exportTimes records (exportJSONTrace): one per inference, warm-up included.
_TRTEXEC_LOG = """\
[08/31/2025-07:07:40] [I] TensorRT version: 10.3.0
[08/31/2025-07:07:40] [I] Selected Device: Orin
[08/31/2025-07:07:55] [I] === Performance summary ===
[08/31/2025-07:07:55] [I] Throughput: 1663.19 qps
[08/31/2025-07:07:55] [I] Latency: min = 0.617432 ms, max = 0.829102 ms, mean = 0.634685 ms, \
median = 0.629639 ms, percentile(90%) = 0.657227 ms, percentile(95%) = 0.675781 ms, percentile(99%) = 0.689697 ms
"""


def _times(n_warm, n_timed):
    records = []
    for i in range(n_warm + n_timed):
        start = (0.0 if i < n_warm else 200.0) + i
        records.append(
            {
                "startEnqMs": start,
                "endEnqMs": start + 0.1,
                "startH2dMs": start,
                "endH2dMs": start + 0.01,
                "startComputeMs": start + 0.01,
                "endComputeMs": start + 0.5,
                "startD2hMs": start + 0.5,
                "endD2hMs": start + 0.51,
                "h2dMs": 0.01,
                "computeMs": 0.49,
                "d2hMs": 0.01,
                "latencyMs": 100.0 if i < n_warm else 0.5 + i / 1000,
                "endToEndMs": 0.51,
            }
        )
    return json.dumps(records, indent=1)


def test_parse_trtexec():
    m = parse_trtexec(_TRTEXEC_LOG + "edgedistill-times-json\n" + _times(3, 100), target="jetson", warmup_ms=200)
    assert m.source == "measured" and m.runner == "ssh" and m.target == "jetson"
    assert m.runtime == "tensorrt 10.3.0" and m.device == "Orin"
    assert m.runs == 100  # the three warm-up records are dropped
    assert 0.5 < m.p50_ms <= m.p90_ms <= m.p99_ms < 0.61
    assert m.throughput_per_s == pytest.approx(1663.19)


def test_parse_trtexec_without_times_is_one_line():
    with pytest.raises(UserError) as excinfo:
        parse_trtexec(_TRTEXEC_LOG, target="jetson", warmup_ms=200, address="nvidia@jetson:22")
    _one_line_error(excinfo, "nvidia@jetson:22", "no timed inference")
