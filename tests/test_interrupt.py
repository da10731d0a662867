"""Interrupting a real `edgedistill run` (SIGINT, SIGTERM) keeps every finished stage; a rerun resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from conftest import tiny_run_config

TESTS = Path(__file__).parent


def _config(tmp_path: Path) -> Path:
    config = tiny_run_config()
    # Long enough distillation that the signal lands while a student is being trained.
    config["distill"]["epochs"] = 20
    config["distill"]["patience"] = 20
    # One int8 method: with two, the faster by measured p50 wins, and timing noise is not what this tests.
    config["quantize"] = {"methods": ["int8-static"]}
    path = tmp_path / "run.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    return path


def _run(config: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen(
        [sys.executable, "-m", "edgedistill", "run", str(config), "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job (`pytest &`, nohup) starts with SIGINT ignored, which Python and
        # this child would inherit: give the child the default, as a terminal's foreground run has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _stages(out: Path) -> dict:
    try:
        return json.loads((out / "manifest.json").read_text())["stages"]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _comparable(report: dict) -> list:
    """What a rerun must reproduce: everything but timings and dates."""
    return [(s["name"], s["params"], s["knob"], s["metrics"], [(a["path"], a["metrics"]) for a in s["artifacts"]])
            for s in report["students"]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The report of the same config run straight through (in-process: runs are deterministic)."""
    from edgedistill.config import load_config
    from edgedistill.pipeline import run

    folder = tmp_path_factory.mktemp("whole")
    return json.loads(run(load_config(_config(folder)), folder / "run").report_path.read_text())


# SIGTERM takes the same path as SIGINT after the handler; it runs with the long tests to keep the
# default suite within its 15 minutes.
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])
def test_interrupted_run_resumes_to_the_same_report(tmp_path, sig, code, uninterrupted):
    config = _config(tmp_path)
    out = tmp_path / "run"
    proc = _run(config, out)
    deadline = time.monotonic() + 120
    while "student:half" not in _stages(out):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first student never finished"
        time.sleep(0.05)
    time.sleep(0.5)  # into the second student's distillation
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
    finished = _stages(out)
    assert "student:half" in finished and "measure:quarter" not in finished
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"
    for stage in finished.values():
        assert all((out / p).is_file() for p in stage["outputs"])

    rerun = _run(config, out)
    stdout, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err
    assert "half: distilled earlier" in stdout
    resumed = json.loads((out / "report.json").read_text())
    assert _comparable(resumed) == _comparable(uninterrupted)
