import numpy as np
import pytest
import tomli_w
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.data.arrays import load_arrays

runner = CliRunner()


def _config(tmp_path, teacher: object = "conftest:TinyCNN") -> str:
    path = tmp_path / "run.toml"
    config = {
        "name": "tiny", "teacher": teacher, "tiers": [{"name": "half", "budget": {"params": "50%"}}],
        "teacher_training": {"epochs": 2, "alpha": 0.0, "threads": 1},
    }
    path.write_bytes(tomli_w.dumps(config).encode())
    return str(path)


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_condense_writes_a_data_source_and_scores_it(tmp_path):
    out = tmp_path / "c.npz"
    args = ["condense", _config(tmp_path), "--per-class", "2", "--iterations", "3", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    x, y, _ = load_arrays(str(out))
    assert x.shape == (20, 1, 8, 8) and np.bincount(y).tolist() == [2] * 10
    assert f"wrote {out}: 20 samples" in result.output and f"{out.stat().st_size:,} bytes" in result.output
    for arm in ("the condensed set (20)", "a random real subset (20)", "the whole training split"):
        assert arm in result.output
    # An earlier condensed set is replaced.
    again = runner.invoke(app, [*args[:-2], "--out", str(out), "--no-score", "--per-class", "1"])
    assert again.exit_code == 0, again.output
    assert len(load_arrays(str(out))[0]) == 10 and "random real subset" not in again.output


def test_an_onnx_teacher_is_refused_with_the_fix(tmp_path):
    line = _one_line_error(runner.invoke(app, ["condense", _config(tmp_path, "vendor.onnx"), "--out", str(tmp_path / "c.npz")]))
    assert "condense needs a PyTorch teacher factory" in line and "teacher.factory" in line
    assert not (tmp_path / "c.npz").exists()


def test_data_without_class_labels_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "run.toml"
    config = {"teacher": "conftest:TinyCNN", "data": {"source": "digits", "labels": False}, "tiers": [{"name": "a", "budget": {"params": "50%"}}]}
    path.write_bytes(tomli_w.dumps(config).encode())
    line = _one_line_error(runner.invoke(app, ["condense", str(path), "--out", str(tmp_path / "c.npz")]))
    assert "condense makes a few samples per class, and digits has no class labels" in line


@pytest.mark.parametrize("out, message", [
    (".", "is a folder"),
    ("missing/c.npz", "is not an existing folder"),
    ("c.txt", "does not end in .npz"),
    ("data.npz", "is not a condensed set"),
])
def test_a_bad_out_is_one_line_and_touches_nothing(tmp_path, out, message):
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 3), np.float32), y=np.array([0, 1]))
    before = (tmp_path / "data.npz").read_bytes()
    result = runner.invoke(app, ["condense", _config(tmp_path), "--out", str(tmp_path / out)])
    assert message in _one_line_error(result)
    assert (tmp_path / "data.npz").read_bytes() == before


@pytest.mark.parametrize("flag, message", [("--per-class", "--per-class: Input should be greater than or equal to 1"),
                                           ("--iterations", "--iterations: Input should be greater than or equal to 1")])
def test_a_bad_number_is_one_line(tmp_path, flag, message):
    result = runner.invoke(app, ["condense", _config(tmp_path), "--out", str(tmp_path / "c.npz"), flag, "0"])
    assert message in _one_line_error(result)


def test_more_per_class_than_the_data_holds_is_one_line(tmp_path):
    result = runner.invoke(app, ["condense", _config(tmp_path), "--out", str(tmp_path / "c.npz"), "--per-class", "1000"])
    assert "fewer than the 1000 per class" in _one_line_error(result)


def test_help_names_every_option_and_the_defaults_it_uses():
    from edgedistill.compress.condense import CondenseConfig

    result = runner.invoke(app, ["condense", "--help"])
    assert result.exit_code == 0
    for flag in ("CONFIG", "--out", "--per-class", "--iterations", "--score", "--no-score", "--debug"):
        assert flag in result.output
    defaults = CondenseConfig()
    assert f"(default {defaults.iterations})" in result.output and f"[default: {defaults.per_class}]" in result.output
