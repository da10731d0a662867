"""Resume is decided by content: a fresh clone (same bytes, new mtimes, another folder) resumes
every stage; data replaced under the same size and mtime, or a damaged artifact, is redone."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgedistill import pipeline
from edgedistill.config import parse_config
from edgedistill.export.formats import FORMATS

from conftest import SaidProgress, tiny_run_config
from test_run import _counting

COUNTED = ("fit", "teacher_outputs", "export_onnx", "quantize", "search", "deploy")


def _config(data) -> dict:
    cfg = tiny_run_config()
    cfg["tiers"] = cfg["tiers"][:1]
    cfg["data"] = {"source": str(data)}
    return cfg


def _clone(src, dst) -> None:
    """Copy a folder as a fresh checkout or a CI cache restore does: same bytes, new times."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for path in dst.rglob("*"):
        os.utime(path, ns=(10**18, 10**18))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-tier run on digits written to a .npz, in a project folder of its own."""
    project = tmp_path_factory.mktemp("project")
    x, y = load_digits(return_X_y=True)
    np.savez(project / "digits.npz", x=(x / 16.0).reshape(-1, 1, 8, 8).astype(np.float32), y=y)
    pipeline.run(parse_config(_config(project / "digits.npz"), "test"), project / "run")
    return project


def test_a_fresh_clone_in_another_folder_resumes_every_stage(finished, tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    _clone(finished, clone)
    counters = {name: _counting(monkeypatch, name) for name in COUNTED}
    result = pipeline.run(parse_config(_config(clone / "digits.npz"), "test"), clone / "run")
    assert {name: len(c) for name, c in counters.items()} == dict.fromkeys(COUNTED, 0)
    assert str(finished) not in (clone / "run" / "manifest.json").read_text()
    for art in result.report.students[0].artifacts:
        assert (clone / "run" / art.path).stat().st_size == art.bytes


def test_data_replaced_under_the_same_size_and_mtime_is_new_data(finished, tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    _clone(finished, clone)
    data = clone / "digits.npz"
    with np.load(data) as saved:
        x, y = saved["x"], saved["y"]
    stat = data.stat()
    np.savez(data, x=x[::-1].copy(), y=y[::-1].copy())  # the same samples in another order: another split
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert data.stat().st_size == stat.st_size
    calls = _counting(monkeypatch, "fit")
    pipeline.run(parse_config(_config(data), "test"), clone / "run")
    assert len(calls) == 2  # the teacher and the student, both on the new data


def test_a_truncated_int8_file_redoes_its_stage_and_those_after_it_only(finished, tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    _clone(finished, clone)
    int8 = clone / "run" / "students" / "half" / "model.int8.onnx"
    int8.write_bytes(int8.read_bytes()[:100])
    counters = {name: _counting(monkeypatch, name) for name in COUNTED}
    said = SaidProgress()
    result = pipeline.run(parse_config(_config(clone / "digits.npz"), "test"), clone / "run", progress=said)
    assert {name: len(c) for name, c in counters.items()} == {**dict.fromkeys(COUNTED, 0), "quantize": 1}
    assert "quantize:half: students/half/model.int8.onnx changed since it was written; redoing it" in said.lines
    report = json.loads((clone / "run" / "report.json").read_text())
    (entry,) = [a for a in report["students"][0]["artifacts"] if a["precision"] == "int8" and a["format"] == "onnx"]
    assert entry["bytes"] == int8.stat().st_size > 100
    assert result.report.students[0].within_budget


def test_a_relative_run_directory_holds_only_its_files_with_the_umask_modes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_run_config()
    cfg["tiers"] = cfg["tiers"][:1]
    pipeline.run(parse_config(cfg, "test"), Path("runs") / "tiny")
    root = tmp_path / "runs" / "tiny"
    assert not (root / "runs").exists()  # scratch folders lie in the run directory, not below a copy of its path
    assert [p for p in root.rglob("*.tmp")] == []
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.relative_to(root).as_posix(): oct(p.stat().st_mode & 0o777) for p in root.rglob("*") if p.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
    assert {"report.json", "config.json", "manifest.json", "students/half/student.pt"} <= set(modes)


@pytest.mark.parametrize("change", ["revision", "converter"])
def test_a_format_made_otherwise_now_remakes_the_target_files_only(finished, tmp_path, monkeypatch, change):
    clone = tmp_path / "clone"
    _clone(finished, clone)
    onnx = FORMATS["onnx"]  # the format host-cpu, the default target, wants
    if change == "revision":
        monkeypatch.setitem(FORMATS, "onnx", dataclasses.replace(onnx, revision=onnx.revision + 1))
    else:  # another converter installed: another distribution, or another version of it
        monkeypatch.setitem(FORMATS, "onnx", dataclasses.replace(onnx, converters=(*onnx.converters, "numpy")))
    counters = {name: _counting(monkeypatch, name) for name in COUNTED}
    pipeline.run(parse_config(_config(clone / "digits.npz"), "test"), clone / "run")
    assert {name: len(c) for name, c in counters.items()} == {**dict.fromkeys(COUNTED, 0), "deploy": 1}
