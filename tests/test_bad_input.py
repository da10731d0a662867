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
    "fractions leave no training data": (
        _with(lambda c: c.update(data={"val_fraction": 0.6, "calib_fraction": 0.4})), "val_fraction (0.6) + calib_fraction (0.4)"
    ),
    "a boolean as a number": (_with(lambda c: c["distill"].update(epochs=True)), "distill.epochs: a boolean"),
    # torch's AdamW cannot hold such a rate in a float: said at load, not as an overflow mid-run.
    "an absurd learning rate": (_with(lambda c: c["distill"].update(lr=1e38)), "distill.lr: Input should be less than or equal to 1000000"),
    "a count in B": (_with(lambda c: c.update(tiers=[{"name": "t", "budget": {"params": "1B"}}])), 'a billion is "1G"'),
    # "B" is a byte: the smallest student's size is said in bytes at the deployed precision.
    "a bytes budget of 1 B": (
        _with(lambda c: c.update(tiers=[{"name": "t", "budget": {"bytes": "1B"}}])), "budget bytes <= 1 B cannot be met"
    ),
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


def test_a_teacher_factory_that_raises_is_one_line(tmp_path):
    (tmp_path / "raising_teacher.py").write_text("def build():\n    raise RuntimeError('no weights here')\n")
    line = _run(tmp_path, _with(lambda c: c["teacher"].update(factory="raising_teacher:build")))
    assert "teacher factory 'raising_teacher:build' raised RuntimeError (no weights here)" in line


@pytest.mark.parametrize("name", ["../../x", "", "..", ".hidden", "a" * 65, "a/b"])
@pytest.mark.parametrize("where", ["run", "tier"])
def test_a_bad_name_writes_nothing(tmp_path, monkeypatch, name, where):
    monkeypatch.chdir(tmp_path)
    config = tiny_run_config()
    if where == "run":
        config["name"] = name
    else:
        config["tiers"][0]["name"] = name
    (tmp_path / "run.toml").write_bytes(tomli_w.dumps(config).encode())
    line = _error_line(runner.invoke(app, ["run", "run.toml"]))
    assert ("name:" if where == "run" else "tiers.0.name:") in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]  # no runs/ folder


def test_an_out_that_is_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    path = tmp_path / "run.toml"
    path.write_bytes(tomli_w.dumps(tiny_run_config()).encode())
    line = _error_line(runner.invoke(app, ["run", str(path), "--out", str(blocker)]))
    assert "is a file" in line and blocker.read_text() == "mine"


def test_a_bad_budget_on_rerun_leaves_the_finished_run_as_it_was(tmp_path):
    """A rerun stopped by bad input changes no file of the run: config.json and report.json
    still describe the run that made them."""
    config = _with(lambda c: c.update(tiers=c["tiers"][:1]))
    path = tmp_path / "run.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(path), "--out", str(out)]).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # A latency budget on a target the run does not build for.
    config["tiers"][0]["budget"]["latency_ms"] = {"pixel-8": 5.0}
    path.write_bytes(tomli_w.dumps(config).encode())
    assert "not among the run's targets" in _error_line(runner.invoke(app, ["run", str(path), "--out", str(out)]))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # A budget no student meets stops later, inside the run: the config and report stay a pair.
    config["tiers"][0]["budget"] = {"params": 10}
    path.write_bytes(tomli_w.dumps(config).encode())
    assert "cannot be met" in _error_line(runner.invoke(app, ["run", str(path), "--out", str(out)]))
    for name in ("config.json", "report.json"):
        assert (out / name).read_bytes() == before[out / name], name


def test_a_folder_given_as_the_model_is_one_line(tmp_path):
    (tmp_path / "model.onnx").mkdir()
    for command in ("lint", "bench"):
        line = _error_line(runner.invoke(app, [command, str(tmp_path / "model.onnx")]))
        assert "is a folder: give the .onnx file in it" in line


@pytest.mark.parametrize("command", [["lint", "--runtime", "tensorrt"], ["bench", "--target", "host-cpu"]])
def test_json_out_replaces_only_its_own_kind_of_file(tmp_path, cnn_onnx, command):
    def invoke(json_out):
        return runner.invoke(app, [command[0], str(cnn_onnx), *command[1:], "--json", str(json_out)])

    folder = tmp_path / "results"
    folder.mkdir()
    assert "is a folder: give a file path" in _error_line(invoke(folder))
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert "does not hold JSON" in _error_line(invoke(notes))
    assert "is a file, not a folder" in _error_line(invoke(notes / "x.json"))
    assert notes.read_text() == "my notes" and list(folder.iterdir()) == []
    earlier = tmp_path / "earlier.json"
    earlier.write_text('{"old": true}')
    result = invoke(earlier)
    assert result.exit_code == 0, result.output
    assert "old" not in json.loads(earlier.read_text())
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_out_that_is_a_file_is_one_line(tmp_path, cnn_onnx):
    blocker = tmp_path / "export"
    blocker.write_text("mine")
    line = _error_line(runner.invoke(app, ["export", str(cnn_onnx), "--format", "ort", "--out", str(blocker)]))
    assert "is a file: export writes its files into a folder" in line and blocker.read_text() == "mine"


def test_a_graph_that_holds_its_fixed_batch_is_one_line(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    # Reshape to [1, 64]: the batch of 1 is written into the graph, so no other batch runs.
    shape = numpy_helper.from_array(np.array([1, 64], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializer=[shape],
    )
    model = tmp_path / "fixed.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(model))
    out = tmp_path / "out"
    line = _error_line(runner.invoke(app, ["export", str(model), "--format", "ort", "--out", str(out)]))
    assert "has a fixed batch of 1 that its graph relies on" in line and "re-export it with a dynamic batch axis" in line
    assert list(out.iterdir()) == []
