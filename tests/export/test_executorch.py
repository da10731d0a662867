"""ExecuTorch programs: made from the student, run and timed by ExecuTorch's runtime here."""

import numpy as np
import pytest
import torch
from conftest import Branchy, student_folder, student_sources

from edgedistill.compress.distill import accuracy
from edgedistill.errors import UserError
from edgedistill.export import executorch as et
from edgedistill.export.deploy import deploy
from edgedistill.targets.runners.local import LocalRunner

pytestmark = pytest.mark.skipif(et.available() is not None, reason=str(et.available()))


@pytest.fixture(scope="module")
def programs(trained_mlp, digits_xy, tmp_path_factory):
    """The trained TinyMLP as fp32 and int8 programs, int8 calibrated on the first 300 digits."""
    x, _ = digits_xy
    folder = tmp_path_factory.mktemp("pte")
    return {p: et.export_pte(trained_mlp, p, folder / f"model.{p}.pte", x[:300], x[1000:1200]) for p in et.PRECISIONS}


def test_fp32_and_int8_programs_keep_the_students_answers(programs, trained_mlp, digits_xy):
    x, y = digits_xy
    with torch.no_grad():
        eager = accuracy(trained_mlp(torch.from_numpy(x[1200:])).numpy(), y[1200:])
    for precision, art in programs.items():
        assert art.parity.checked and art.parity.passed, (precision, art.parity)
        got = accuracy(et.run_pte(art.path, x[1200:]), y[1200:])
        assert abs(got - eager) <= (1e-9 if precision == "fp32" else 0.02), (precision, got, eager)
    assert programs["fp32"].parity.max_abs_err < 1e-4
    # int8 weights: a quarter of the fp32 weight bytes, and the file shows it.
    assert programs["int8"].path.stat().st_size < 0.6 * programs["fp32"].path.stat().st_size


def test_the_local_runner_times_a_program_with_executorch(programs):
    m = LocalRunner(warmup=2, runs=5).measure(programs["int8"].path)
    assert m.runtime.startswith("ExecuTorch") and "XNNPACK" in m.runtime
    assert m.p50_ms > 0 and m.batch == 1 and m.runs >= 5


def test_a_file_that_is_no_program_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"not a program")
    with pytest.raises(UserError, match="is not a program ExecuTorch loads"):
        et.load_pte(bad)


def test_deploy_skips_a_program_it_cannot_make_and_says_why(trained_mlp, digits_xy, tmp_path):
    x, _ = digits_xy
    want = {("pte", "fp32"): ("pixel-8",)}
    refused = deploy(student_sources(Branchy(), x, tmp_path), want)
    assert refused.made == () and "ExecuTorch could not convert the student at fp32" in refused.skipped[0].reason
    no_student = deploy(student_sources(None, x, tmp_path), want).skipped[0]
    assert "made from the student in PyTorch, not from an ONNX file" in no_student.reason and no_student.targets == ("pixel-8",)
    named = deploy(student_sources(trained_mlp, x, tmp_path, {"input_ids": x[:16]}), want).skipped[0]
    assert "forward takes (x)" in named.reason and "lack x" in named.reason
    assert not list(tmp_path.glob("*.pte"))  # nothing half-written


def test_without_executorch_the_program_is_skipped_with_the_install_line(trained_mlp, digits_xy, tmp_path, monkeypatch):
    x, _ = digits_xy
    monkeypatch.setattr(et, "available", lambda: "ExecuTorch is not installed (executorch): pip install -e '.[executorch]'")
    (skipped,) = deploy(student_sources(trained_mlp, x, tmp_path), {("pte", "int8"): ("pixel-8",)}).skipped
    assert "pip install -e '.[executorch]'" in skipped.reason


def test_export_makes_a_program_from_a_students_folder_and_refuses_an_onnx_file(trained_mlp, mlp_onnx, digits_xy, tmp_path):
    from edgedistill.export.convert import ExportRequest, export_model

    x, y = digits_xy
    folder = tmp_path / "student"
    student_folder(folder, trained_mlp, mlp_onnx)
    data = tmp_path / "data.npz"
    np.savez(data, x=x[:200], y=y[:200])
    done = export_model(ExportRequest(folder, "pte", "fp32", tmp_path / "out", data))
    assert done.path.suffix == ".pte" and done.parity.passed
    with pytest.raises(UserError, match="pte fp32 was not made: .*give a run's student folder or a .pt2"):
        export_model(ExportRequest(mlp_onnx, "pte", "fp32", tmp_path / "out2", data))
