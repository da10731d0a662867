"""Every kind of bad input: one line on stderr naming the problem and the fix, exit 2, no traceback,
nothing already written removed."""

import json

import numpy as np
import pytest
import tomli_w
from typer.testing import CliRunner

from edgedistill.cli import app

from conftest import tiny_run_config

runner = CliRunner()


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _run(tmp_path, config: dict | str):
    path = tmp_path / "run.toml"
    if isinstance(config, str):
        path.write_text(config)
    else:
        path.write_bytes(tomli_w.dumps(config).encode())
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "kept.txt").write_text("earlier work")
    result = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert (out / "kept.txt").read_text() == "earlier work"
    return _error_line(result)


def _npz(tmp_path, x, y):
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return str(path)


def _with(change):
    config = tiny_run_config()
    change(config)
    return config


CASES = {
    "malformed TOML": ("name = [", "not valid TOML"),
    "unknown key": (_with(lambda c: c["distill"].update(epoch=3)), "unknown key 'distill.epoch'"),
    "wrong type": (_with(lambda c: c["distill"].update(epochs="many")), "distill.epochs"),
    "unknown target": (_with(lambda c: c.update(targets=["pixel-9"])), "unknown target 'pixel-9'"),
    "unreachable budget": (_with(lambda c: c.update(tiers=[{"name": "t", "budget": {"params": 10}}])), "smallest student"),
    "factory not importable": (_with(lambda c: c["teacher"].update(factory="no_such_pkg.models:build")), "cannot import module"),
    "factory not a module": (_with(lambda c: c["teacher"].update(factory="os:getcwd")), "not a torch.nn.Module"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config(tmp_path, case):
    config, expected = CASES[case]
    assert expected in _run(tmp_path, config)


def test_missing_config(tmp_path):
    assert "does not exist" in _error_line(runner.invoke(app, ["run", str(tmp_path / "none.toml")]))


def test_unreadable_config(tmp_path):
    folder = tmp_path / "a-folder.toml"
    folder.mkdir()
    assert "cannot be read" in _error_line(runner.invoke(app, ["run", str(folder)]))


def test_data_that_does_not_fit_the_teacher(tmp_path):
    rng = np.random.default_rng(0)
    source = _npz(tmp_path, rng.random((60, 3, 5, 5), dtype=np.float32), np.arange(60) % 10)
    assert "does not fit the teacher" in _run(tmp_path, _with(lambda c: c.update(data={"source": source})))


def test_labels_outside_the_class_range(tmp_path):
    rng = np.random.default_rng(0)
    source = _npz(tmp_path, rng.random((60, 1, 8, 8), dtype=np.float32), np.arange(60) % 12)
    assert "labels go up to 11" in _run(tmp_path, _with(lambda c: c.update(data={"source": source})))


@pytest.mark.parametrize("content", [b"this is not onnx", b"\x08\x07\x12\x04trunc"])
def test_a_file_that_is_not_onnx(tmp_path, content):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(content)
    for command in (["lint", str(bad)], ["export", str(bad), "--format", "ort", "--out", str(tmp_path / "o")]):
        assert "not a valid ONNX file" in _error_line(runner.invoke(app, command))


def test_an_output_directory_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = tmp_path / "run.toml"
    path.write_bytes(tomli_w.dumps(tiny_run_config()).encode())
    line = _error_line(runner.invoke(app, ["run", str(path), "--out", str(blocker / "run")]))
    assert "cannot write to the run directory" in line and blocker.read_text() == "x"


def test_a_full_disk_is_one_line_and_keeps_finished_work(tmp_path, tiny_config, monkeypatch):
    import errno
    import os

    import edgedistill.fileio as fileio

    real_replace = os.replace

    def replace(src, dst):
        if "students" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    out = tmp_path / "out"
    path = tmp_path / "run.toml"
    path.write_bytes(tomli_w.dumps(tiny_config).encode())
    line = _error_line(runner.invoke(app, ["run", str(path), "--out", str(out)]))
    assert "disk is full" in line
    assert (out / "teacher" / "teacher.pt").is_file() and (out / "teacher" / "teacher.onnx").is_file()
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert {"teacher", "teacher-outputs", "baseline"} <= set(stages)
    assert not list(out.rglob("*.tmp"))
