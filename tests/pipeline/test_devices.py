"""A run that measures on a device: `edgedistill run --address raspberry-pi-5=USER@127.0.0.1:PORT`
against a real sshd on this machine (the "device" is this machine, whose Python has onnxruntime as a
Pi's would); its artifacts for that target are measured over ssh, and `gate` judges them."""

import getpass
import json
import sys

import pytest
import tomli_w
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.targets.profile import load_target

from conftest import NO_HOST_CHECK, tiny_run_config

runner = CliRunner()


def _pi_profile(folder, sshd) -> str:
    """raspberry-pi-5's profile as a user's file would give it, logging in with the test's key."""
    profile = load_target("raspberry-pi-5").model_dump(mode="json", exclude_none=True)
    profile["ssh"] = {"python": sys.executable, "identity": str(sshd["key"]), "options": list(NO_HOST_CHECK), "workdir": str(folder / "device")}
    path = folder / "raspberry-pi-5.toml"
    path.write_bytes(tomli_w.dumps(profile).encode())
    return str(path)


@pytest.fixture(scope="module")
def pi_run(sshd, tmp_path_factory):
    folder = tmp_path_factory.mktemp("device-run")
    config = tiny_run_config()
    config["targets"] = ["host-cpu", _pi_profile(folder, sshd)]
    config["tiers"] = [{"name": "half", "budget": {"params": "50%", "latency_ms": {"raspberry-pi-5": 1000}}}]
    path = folder / "run.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    out = folder / "run"
    address = f"raspberry-pi-5={getpass.getuser()}@127.0.0.1:{sshd['port']}"
    result = runner.invoke(app, ["run", str(path), "--out", str(out), "--address", address])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text())


def test_the_devices_artifacts_are_measured_over_ssh(pi_run, sshd):
    _, report = pi_run
    (student,) = report["students"]
    on_pi = [a for a in student["artifacts"] if "raspberry-pi-5" in a["targets"]]
    assert on_pi
    for a in on_pi:
        lat = a["latency"]["raspberry-pi-5"]
        assert lat["source"] == "measured" and lat["runner"] == "ssh"
        assert lat["address"] == f"{getpass.getuser()}@127.0.0.1:{sshd['port']}"
        assert lat["p50_ms"] > 0 and lat["runs"] >= 5  # at least the count asked, and for at least the minimum time
    (check,) = [c for c in student["checks"] if c["name"] == "latency_ms:raspberry-pi-5"]
    assert check["ok"] and check["source"].startswith("measured (ssh ")


def test_gate_fails_a_latency_budget_below_the_measured_figure(pi_run, tmp_path):
    out, report = pi_run
    figure = min(a["latency"]["raspberry-pi-5"]["p50_ms"] for a in report["students"][0]["artifacts"] if "raspberry-pi-5" in a["targets"])
    path = str(out / "report.json")
    assert runner.invoke(app, ["gate", path]).exit_code == 0
    broken = runner.invoke(app, ["gate", path, "--budget", f"half.latency_ms.raspberry-pi-5={figure / 2}"])
    assert broken.exit_code == 1, broken.output
    assert "measured over ssh on raspberry-pi-5" in broken.output


def test_an_unreachable_device_is_one_line_and_keeps_what_was_measured(pi_run, tmp_path):
    out, report = pi_run
    config = json.loads((out / "config.json").read_text())
    config["measure"]["runs"] = 6  # a new measurement is needed
    path = tmp_path / "run.toml"
    path.write_bytes(tomli_w.dumps({k: v for k, v in config.items() if v is not None}).encode())
    before = (out / "report.json").read_bytes()
    result = runner.invoke(app, ["run", str(path), "--out", str(out), "--address", "raspberry-pi-5=nobody@127.0.0.1:1"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert (out / "report.json").read_bytes() == before
