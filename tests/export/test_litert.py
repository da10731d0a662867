"""LiteRT files: made from the student, checked and timed by LiteRT's interpreter here, linted for
LiteRT and LiteRT Micro, with the activation arena a microcontroller's SRAM is judged on."""

import numpy as np
import pytest
import torch
from conftest import Branchy, student_folder, student_sources, tiny_cnn
from torch import nn
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.compress.distill import accuracy
from edgedistill.errors import UserError
from edgedistill.export import litert as lt
from edgedistill.export.deploy import deploy
from edgedistill.export.lint.litert import LITERT, LITERT_MICRO, lint_tflite
from edgedistill.targets.runners.local import LocalRunner

pytestmark = pytest.mark.skipif(lt.available() is not None, reason=str(lt.available()))


@pytest.fixture(scope="module")
def files(trained_mlp, digits_xy, tmp_path_factory):
    """The trained TinyMLP at every precision, int8 calibrated on the first 300 digits."""
    x, _ = digits_xy
    folder = tmp_path_factory.mktemp("tflite")
    return {p: lt.export_tflite(trained_mlp, p, folder / f"model.{p}.tflite", x[:300], x[1000:1200]) for p in lt.PRECISIONS}


def test_every_precision_keeps_the_students_answers(files, trained_mlp, digits_xy):
    x, y = digits_xy
    with torch.no_grad():
        eager = accuracy(trained_mlp(torch.from_numpy(x[1200:])).numpy(), y[1200:])
    for precision, art in files.items():
        assert art.parity.checked and art.parity.passed, (precision, art.parity)
        got = accuracy(lt.run_tflite(art.path, x[1200:]), y[1200:])
        assert abs(got - eager) <= {"fp32": 1e-9, "fp16": 0.005, "int8": 0.02}[precision], (precision, got, eager)
    assert files["fp32"].parity.max_abs_err < 1e-4
    size = {p: a.path.stat().st_size for p, a in files.items()}
    # fp16 halves the weights' bytes, int8 quarters them, and the files show it.
    assert size["int8"] < size["fp16"] < 0.7 * size["fp32"], size


def test_int8_takes_and_gives_int8_and_the_call_converts_on_the_files_own_scales(files, digits_xy):
    x, _ = digits_xy
    it = lt.interpreter(files["int8"].path)
    assert it.get_input_details()[0]["dtype"] == np.int8 and it.get_output_details()[0]["dtype"] == np.int8
    out = lt.load_tflite(files["int8"].path)((x[:1],))
    assert out.dtype == np.float32 and out.shape == (1, 10)


def test_the_local_runner_times_a_file_with_litert(files):
    m = LocalRunner(warmup=2, runs=5).measure(files["int8"].path)
    assert m.runtime.startswith("LiteRT") and "XNNPACK" in m.runtime
    assert m.p50_ms > 0 and m.batch == 1 and m.runs >= 5


def test_a_file_that_is_not_litert_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(UserError, match="is not a file LiteRT loads"):
        lt.load_tflite(bad)


def test_the_arena_is_the_activations_alive_at_once(digits_xy, tmp_path):
    """TinyCNN at 8x8: its largest moment holds conv1's 8x8x8 output and conv2's 16x8x8 one; at
    int8 each byte holds a value where fp32 takes four."""
    x, _ = digits_xy
    fp32 = lt.export_tflite(tiny_cnn(), "fp32", tmp_path / "cnn.fp32.tflite", x[:64], x[:32]).path
    int8 = lt.export_tflite(tiny_cnn(), "int8", tmp_path / "cnn.int8.tflite", x[:64], x[:32]).path
    both = (8 * 64 + 16 * 64)
    assert lt.arena_bytes(fp32) == 4 * both
    assert lt.arena_bytes(int8) == both


def test_the_greedy_plan_reuses_memory_of_tensors_whose_lives_do_not_meet():
    apart = {0: (100, 0, 1), 1: (100, 2, 3)}
    assert lt._greedy_arena(apart) == 100
    together = {0: (100, 0, 2), 1: (60, 1, 3), 2: (40, 3, 4)}
    # 0 and 1 overlap (160); 2 meets 1 but not 0, so it takes 0's place once 0 is dead.
    assert lt._greedy_arena(together) == 160


def test_lint_is_clean_for_plain_layers_and_names_the_op_micro_lacks(files, digits_xy, tmp_path):
    for runtime in (LITERT, LITERT_MICRO):
        assert lint_tflite(files["int8"].path, runtime).ok
    x, _ = digits_xy
    gelu = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.GELU(), nn.Linear(16, 10)).eval()
    path = lt.export_tflite(gelu, "fp32", tmp_path / "gelu.tflite", x[:32], x[:32]).path
    assert lint_tflite(path, LITERT).ok
    (finding,) = lint_tflite(path, LITERT_MICRO).findings
    assert finding.op == "GELU" and finding.node.startswith("#") and "replace the layer" in finding.reason
    assert "tflite-micro" in lint_tflite(path, LITERT_MICRO).reference
    # The same through `edgedistill lint`: the finding on one line, exit 1.
    out = CliRunner().invoke(app, ["lint", str(path), "--runtime", LITERT_MICRO])
    assert out.exit_code == 1 and "(tflite::GELU): LiteRT Micro has no GELU kernel" in " ".join(out.output.split())


def test_deploy_makes_a_linted_file_with_its_arena_and_skips_what_it_cannot_make(trained_mlp, mlp_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    want = {("tflite", "int8"): ("stm32h743",)}
    (made,) = deploy(student_sources(trained_mlp, x, tmp_path / "ok", onnx=mlp_onnx), want).made
    assert made.path.suffix == ".tflite" and made.parity.passed and made.arena_bytes > 0
    assert {r.runtime for r in made.lint} == {LITERT, LITERT_MICRO}
    refused = deploy(student_sources(Branchy(), x, tmp_path), want)
    assert refused.made == () and "LiteRT could not convert the student at int8" in refused.skipped[0].reason
    no_student = deploy(student_sources(None, x, tmp_path), want).skipped[0]
    assert "made from the student in PyTorch, not from an ONNX file" in no_student.reason
    named = deploy(student_sources(trained_mlp, x, tmp_path, {"input_ids": x[:16]}), want).skipped[0]
    assert "forward takes (x)" in named.reason and "lack x" in named.reason
    assert not list(tmp_path.glob("*.tflite"))  # nothing half-written


def test_without_litert_the_file_is_skipped_with_the_install_line(trained_mlp, digits_xy, tmp_path, monkeypatch):
    x, _ = digits_xy
    monkeypatch.setattr(lt, "available", lambda: "LiteRT is not installed (litert_torch): pip install -e '.[litert]'")
    (skipped,) = deploy(student_sources(trained_mlp, x, tmp_path), {("tflite", "int8"): ("pixel-8",)}).skipped
    assert "pip install -e '.[litert]'" in skipped.reason


@pytest.mark.slow  # the student-folder path is the ExecuTorch test's too; this adds LiteRT's fp16 (6 s)
def test_export_makes_a_file_from_a_students_folder(trained_mlp, mlp_onnx, digits_xy, tmp_path):
    from edgedistill.export.convert import ExportRequest, export_model

    x, y = digits_xy
    folder = tmp_path / "student"
    student_folder(folder, trained_mlp, mlp_onnx)
    data = tmp_path / "data.npz"
    np.savez(data, x=x[:200], y=y[:200])
    done = export_model(ExportRequest(folder, "tflite", "fp16", tmp_path / "out", data))
    assert done.path.suffix == ".tflite" and done.parity.passed
