"""A run directory that never lies (issue 14): NaN and Inf in the data, in a teacher's outputs and in
training, a teacher no better than chance, and data that cannot teach (0-d arrays, an empty class
folder, one class) stop `edgedistill run` in one line with its exit status, no traceback, and
leave what was written before intact."""

import json

import numpy as np
import pytest
import tomli_w
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from edgedistill.cli import app

from conftest import tiny_run_config

runner = CliRunner()


class NaNTeacher(nn.Module):
    """A classifier of 1x8x8 inputs whose every output is NaN (a teacher with broken weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1)) * float("nan")


def _one_line(result, status: int) -> str:
    """The run's one error line, after checking its exit status and that no traceback was shown."""
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _invoke(tmp_path, config: dict, out_name: str = "out"):
    """`edgedistill run` on `config` into a run directory that already holds earlier work."""
    path = tmp_path / "run.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    out = tmp_path / out_name
    out.mkdir(exist_ok=True)
    (out / "kept.txt").write_text("earlier work")
    result = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert (out / "kept.txt").read_text() == "earlier work"
    return result, out


def _stages(out) -> set[str]:
    manifest = out / "manifest.json"
    return set(json.loads(manifest.read_text())["stages"]) if manifest.is_file() else set()


def _config(**changes) -> dict:
    """The tiny config, one tier, with `changes` over its top-level sections."""
    config = tiny_run_config()
    config["tiers"] = config["tiers"][:1]
    config.update(changes)
    return config


def _npz(tmp_path, x, y) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return str(path)


def _digits_npz(tmp_path, damage):
    """Digits as a .npz, with `damage` applied to a copy of x."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    damage(x)
    return _npz(tmp_path, x, d.target)


def _nan(x):
    x[3, 0, 2, 2] = np.nan
    x[7, 0, 1, 1] = np.nan


def _inf(x):
    x[5, 0, 0, 0] = np.inf


def _data_source(tmp_path, case: str) -> str:
    rng = np.random.default_rng(0)
    if case == "nan":
        return _digits_npz(tmp_path, _nan)
    if case == "inf":
        return _digits_npz(tmp_path, _inf)
    if case == "0-d x":
        return _npz(tmp_path, np.float32(1.0), np.arange(10) % 2)
    if case == "0-d y":
        return _npz(tmp_path, rng.random((10, 1, 8, 8), dtype=np.float32), np.int64(3))
    if case == "single class":
        return _npz(tmp_path, rng.random((60, 1, 8, 8), dtype=np.float32), np.zeros(60, np.int64))
    root = tmp_path / "images"
    for name in ("cat", "dog", "empty"):
        (root / name).mkdir(parents=True)
    for name in ("cat", "dog"):
        for i in range(5):
            Image.new("L", (8, 8), 40 * i).save(root / name / f"{i}.png")
    (root / "empty" / "readme.txt").write_text("no images here")
    return str(root)


DATA_CASES = {
    "nan": "x holds NaN or Inf (or numbers beyond float32's range) in 2 of its 115,008 values",
    "inf": "x holds NaN or Inf (or numbers beyond float32's range) in 1 of its 115,008 values",
    "0-d x": "x is a single value (a 0-d array)",
    "0-d y": "expected numbers with one row per sample",
    "single class": "every sample has the label 0",
    "empty class folder": "images/empty holds no images",
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data_that_cannot_teach_is_one_line_and_exit_2(tmp_path, case):
    source = _data_source(tmp_path, case)
    data = {"source": source, "channels": 1, "image_size": [8, 8]}
    result, out = _invoke(tmp_path, _config(data=data))
    line = _one_line(result, 2)
    assert DATA_CASES[case] in line
    assert source in line
    assert not (out / "teacher").exists()


def test_a_teacher_that_outputs_nan_is_named_and_nothing_is_cached(tmp_path):
    result, out = _invoke(tmp_path, _config(teacher={"factory": "test_guards:NaNTeacher"}))
    line = _one_line(result, 2)
    assert "teacher test_guards:NaNTeacher gives NaN or Inf" in line and "of its logits" in line
    assert not (out / "teacher" / "outputs.npz").exists()
    assert "teacher-outputs" not in _stages(out)


def test_a_diverged_teacher_training_is_exit_1_naming_the_epoch_and_its_lr(tmp_path):
    config = _config()
    config["teacher_training"]["lr"] = 1e6
    result, out = _invoke(tmp_path, config)
    line = _one_line(result, 1)
    assert "diverged in epoch 1" in line and "lower teacher_training.lr" in line
    assert not (out / "teacher" / "teacher.pt").exists() and "teacher" not in _stages(out)


def test_a_diverged_student_is_exit_1_and_keeps_the_teacher(tmp_path):
    config = _config()
    config["distill"]["lr"] = 1e6
    result, out = _invoke(tmp_path, config)
    line = _one_line(result, 1)
    assert "diverged in epoch 1" in line and "lower distill.lr" in line
    assert (out / "teacher" / "teacher.pt").is_file()
    assert {"teacher", "teacher-outputs", "baseline"} <= _stages(out)


def test_a_teacher_at_chance_is_refused_and_allow_weak_teacher_distils_it(tmp_path):
    # The seeded TinyCNN untrained: about one digit in ten.
    config = _config(teacher={"factory": "conftest:tiny_cnn"})
    config["distill"]["epochs"] = 1
    result, out = _invoke(tmp_path, config)
    line = _one_line(result, 2)
    assert "no better than always answering the most common class" in line
    assert "set allow_weak_teacher = true" in line
    # The baseline stays recorded: allowing the teacher resumes from it.
    assert "baseline" in _stages(out) and (out / "teacher" / "teacher.onnx").is_file()

    config["allow_weak_teacher"] = True
    result, out = _invoke(tmp_path, config)
    assert result.exit_code == 0, result.output
    assert "distilled anyway, as allow_weak_teacher = true" in " ".join(result.output.split())  # unwrapped
    report = json.loads((out / "report.json").read_text())
    (teacher_onnx,) = report["teacher"]["artifacts"]
    assert any("allow_weak_teacher = true" in note for note in teacher_onnx["notes"])
    assert report["students"][0]["artifacts"]


def test_quantizing_a_model_with_nan_outputs_is_one_line_not_an_assertion(tmp_path, digits_xy):
    from edgedistill.compress.quantize import Int8Static, quantize
    from edgedistill.errors import EdgeDistillError
    from edgedistill.export.onnx import export_onnx

    x, y = digits_xy
    fp32 = export_onnx(NaNTeacher(), x[:2], x[:16], tmp_path / "nan.onnx").path
    with pytest.raises(EdgeDistillError, match=r"nan.onnx gives 160 non-finite outputs .* cannot be quantized") as exc:
        quantize(fp32, tmp_path / "nan.int8.onnx", [Int8Static()], x[:32], lambda out: 0.0, x[:16])
    assert "\n" not in str(exc.value) and not (tmp_path / "nan.int8.onnx").exists()
