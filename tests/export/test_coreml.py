"""Core ML export and its format: packages are built, checked by structure and linted (Core ML predicts on macOS only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("coremltools", reason="coremltools is not installed: pip install -e '.[coreml]'")

from conftest import TinyCNN, student_folder, tiny_cnn  # noqa: E402
from edgedistill.compress.quantize import Int8Static, QuantizeConfig, quantize  # noqa: E402
from edgedistill.errors import Unmade, UserError  # noqa: E402
from edgedistill.export import coreml  # noqa: E402
from edgedistill.export.coreml import available, check_package, export_coreml  # noqa: E402
from edgedistill.export.deploy import Sources, deploy, wanted  # noqa: E402
from edgedistill.export.executorch import available as executorch_available  # noqa: E402
from edgedistill.export.lint import lint  # noqa: E402
from edgedistill.fileio import DIR_MODE, FILE_MODE, file_bytes  # noqa: E402
from edgedistill.targets.profile import load_target  # noqa: E402

SAMPLE = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
CALIB = np.random.default_rng(1).random((24, 1, 8, 8), dtype=np.float32)
# W8A8 takes ExecuTorch's CoreMLQuantizer; without it int8 is weights only, tested on its own.
needs_executorch = pytest.mark.skipif(executorch_available() is not None, reason=str(executorch_available()))


@pytest.fixture(scope="module")
def wide_cnn() -> nn.Module:
    """A TinyCNN of ~29k weights: enough that int8 storage visibly beats fp16."""
    torch.manual_seed(0)
    return TinyCNN(width=32).eval()


@pytest.fixture(scope="module")
def packages(tmp_path_factory, wide_cnn):
    """The wide CNN exported at fp16 and int8, once for the module. fp16 takes about a second;
    the first W8A8 package of a process about 100 s more (CoreMLQuantizer builds its pattern
    graphs, kept for the process's later packages)."""
    folder = tmp_path_factory.mktemp("coreml")
    return {p: export_coreml(wide_cnn, SAMPLE, p, folder / f"cnn-{p}.mlpackage", CALIB) for p in ("fp16", "int8")}


def _refuse_w8a8(monkeypatch):
    """W8A8 attempted (as where ExecuTorch is installed) and refused."""

    def refused(*_args):
        raise RuntimeError("no quantizer for this one")

    monkeypatch.setattr(coreml, "executorch_available", lambda: None)
    monkeypatch.setattr(coreml, "_w8a8", refused)


def test_available_here():
    assert available() is None


def test_fp16_package_holds_conv_and_linear_in_fp16(packages):
    art = packages["fp16"]
    assert art.path.is_dir() and art.precision == "fp16"
    check = art.check
    assert check.ops["conv"] == 2 and check.ops["linear"] == 1 and check.ops["relu"] == 2
    assert check.weight_dtypes == ("fp16",)
    assert check.unsupported == ()
    assert check.spec_version >= 8  # iOS 17's spec version
    assert check.note.startswith("not run here")


def _weight_bytes(art) -> int:
    return (art.path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").stat().st_size


def test_int8_package_has_int8_weights_and_is_smaller(packages):
    fp16, int8 = packages["fp16"].check, packages["int8"].check
    assert "int8" in int8.weight_dtypes
    # Every conv/linear weight went int8: one dequantize per weight tensor, the same compute ops.
    assert int8.ops["constexpr_affine_dequantize"] == 3
    assert {op: int8.ops[op] for op in ("conv", "linear")} == {op: fp16.ops[op] for op in ("conv", "linear")}
    assert int8.unsupported == ()
    # Half the weight bytes (a W8A8 spec's quantize ops take some of that back: see the W8A16 test for the whole).
    assert _weight_bytes(packages["int8"]) < 0.55 * _weight_bytes(packages["fp16"])
    assert fp16.int8_scheme is None and packages["fp16"].notes == (coreml.NOT_RUN,)


@needs_executorch
def test_int8_package_is_w8a8_with_quantized_activations(packages):
    art = packages["int8"]
    check = art.check
    # The input and every conv/relu, pool and linear output pass through a quantize/dequantize pair.
    assert check.ops["quantize"] == check.ops["dequantize"] >= 4
    assert check.int8_scheme == "W8A8" and check.unsupported == ()
    assert art.notes == (coreml.NOT_RUN, f"W8A8: int8 weights and activations, activations calibrated on {len(CALIB)} samples")
    assert check_package(art.path).int8_scheme == "W8A8"  # read from the saved package's own ops
    assert lint(art.path, "coreml").ok


def test_without_w8a8_int8_is_weights_only_and_says_why(packages, wide_cnn, tmp_path, monkeypatch):
    dst = tmp_path / "m.mlpackage"
    _refuse_w8a8(monkeypatch)
    art = export_coreml(wide_cnn, SAMPLE, "int8", dst, CALIB)
    assert art.check.int8_scheme == "W8A16" and "quantize" not in art.check.ops
    assert art.check.ops["constexpr_affine_dequantize"] == 3 and "int8" in art.check.weight_dtypes
    assert art.notes == (coreml.NOT_RUN, "int8 weights only (W8A16): RuntimeError: no quantizer for this one")
    assert check_package(dst).int8_scheme == "W8A16"
    assert art.check.bytes < 0.7 * packages["fp16"].check.bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]  # no staging folder left beside it


def test_without_executorch_int8_is_weights_only(tmp_path, monkeypatch):
    missing = "ExecuTorch is not installed (executorch): pip install -e '.[executorch]'"
    monkeypatch.setattr(coreml, "executorch_available", lambda: missing)
    art = export_coreml(tiny_cnn(), SAMPLE, "int8", tmp_path / "m.mlpackage", CALIB)
    assert art.check.int8_scheme == "W8A16" and art.notes[1] == f"int8 weights only (W8A16): {missing}"


def test_int8_without_calibration_inputs_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="calibrates its activations"):
        export_coreml(tiny_cnn(), SAMPLE, "int8", tmp_path / "m.mlpackage")
    assert list(tmp_path.iterdir()) == []


def test_interface_names_the_sample_shape(packages):
    for art in packages.values():
        assert art.check.inputs == ("x: 1x1x8x8 fp32",)
        assert len(art.check.outputs) == 1 and art.check.outputs[0].endswith(": 1x10 fp32")


def test_check_package_rereads_the_saved_package(packages):
    assert check_package(packages["int8"].path) == packages["int8"].check


def test_export_leaves_callers_model_alone_and_replaces_dst(tmp_path):
    model = tiny_cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dst = tmp_path / "m.mlpackage"
    dst.mkdir()
    (dst / "stale.txt").write_text("old")
    art = export_coreml(model, SAMPLE, "fp16", dst)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not (dst / "stale.txt").exists() and art.check.ops["conv"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]


def test_unknown_precision_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="fp16, int8"):
        export_coreml(tiny_cnn(), SAMPLE, "int4", tmp_path / "m.mlpackage")
    assert list(tmp_path.iterdir()) == []


class _Inverse(nn.Module):
    """A matrix inverse: coremltools lowers no linalg_inv on a non-constant input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(x[0, 0])


def test_unconvertible_model_leaves_nothing_behind(tmp_path):
    dst = tmp_path / "inv.mlpackage"
    eye = np.eye(8, dtype=np.float32)[None, None]  # invertible, so tracing itself succeeds
    with pytest.raises(Unmade, match="torch.export.*torch.jit.trace"):
        export_coreml(_Inverse(), eye, "fp16", dst)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_old_package_and_no_temp(tmp_path, monkeypatch):
    import coremltools as ct

    dst = tmp_path / "m.mlpackage"
    dst.mkdir()
    (dst / "keep.txt").write_text("old")

    def broken_save(self, path):
        (Path(path) / "partial").mkdir(parents=True)
        raise RuntimeError("disk went away")

    monkeypatch.setattr(ct.models.MLModel, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk went away"):
        export_coreml(tiny_cnn(), SAMPLE, "fp16", dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]
    assert (dst / "keep.txt").read_text() == "old"


def test_file_bytes_of_a_package_is_the_sum_of_its_files(packages, tmp_path):
    path = packages["int8"].path
    assert path.is_dir() and file_bytes(path) == packages["int8"].check.bytes > 0
    assert file_bytes(path) == sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    single = tmp_path / "one.bin"
    single.write_bytes(b"12345")
    assert file_bytes(single) == 5


def test_a_saved_package_is_readable_by_everyone_the_umask_allows(packages):
    # coremltools writes the model spec 0600; CI publishes run folders as another user.
    for path in (packages["fp16"].path, *packages["fp16"].path.rglob("*")):
        assert path.stat().st_mode & 0o777 == (DIR_MODE if path.is_dir() else FILE_MODE), path


def test_the_coreml_lint_of_a_converted_package_is_clean(packages):
    result = lint(packages["fp16"].path, "coreml")
    assert result.ok and result.runtime == "coreml" and "iOS17 mlprogram opset" in result.reference
    with pytest.raises(UserError, match="is linted for coreml, not tensorrt: pass --runtime coreml"):
        lint(packages["fp16"].path, "tensorrt")


def test_an_op_outside_the_opset_is_a_finding_naming_its_node_and_the_fix(packages, monkeypatch):
    """An opset without `linear` (what a package holds that iOS 17 lacks reads the same way)."""
    opset = coreml._opset_ops(coreml.OPSET)
    monkeypatch.setattr(coreml, "_opset_ops", lambda _name: opset - {"linear"})
    result = lint(packages["int8"].path, "coreml")
    (finding,) = result.findings
    assert (finding.node, finding.op, finding.domain) == ("linear_0_cast_fp16", "linear", "iOS17")
    assert "iPhone on iOS 17 cannot load it: rewrite the PyTorch layer that lowers to linear" in finding.reason
    assert not result.ok and result.to_dict()["findings"][0]["node"] == "linear_0_cast_fp16"


def _accuracy(y):
    return lambda out: float((out.argmax(1) == y[1000:1100]).mean())


def _cnn_sources(cnn_onnx, digits_xy, folder, model, int8=None):
    x, y = digits_xy
    return Sources(cnn_onnx, int8, folder, x[1000:1100], x[:100], _accuracy(y), QuantizeConfig().symmetric(), model=model)


@pytest.fixture(scope="module")
def cnn_int8_onnx(cnn_onnx, digits_xy, tmp_path_factory):
    """The TinyCNN's int8 ONNX, as the run's quantize stage makes it."""
    x, y = digits_xy
    dst = tmp_path_factory.mktemp("q") / "cnn.int8.onnx"
    return quantize(cnn_onnx, dst, [Int8Static()], x[:100], _accuracy(y), x[1000:1100], timing_runs=2).path


def _iphone_packages(src):
    done = deploy(src, wanted([load_target("iphone-15-pro")]))
    assert not done.skipped
    return {d.precision: d for d in done.made}


@needs_executorch
def test_the_iphone_target_gets_both_packages_marked_not_run_here(cnn_onnx, cnn_int8_onnx, digits_xy, tmp_path):
    made = _iphone_packages(_cnn_sources(cnn_onnx, digits_xy, tmp_path, tiny_cnn(), cnn_int8_onnx))
    assert sorted(made) == ["fp16", "int8"]
    for precision, d in made.items():
        assert (d.format, d.targets) == ("mlpackage", ("iphone-15-pro",))
        assert d.path == tmp_path / f"model.{precision}.mlpackage" and file_bytes(d.path) > 0
        assert not d.parity.checked and d.notes[0] == "not run here: Core ML predicts on macOS only"
        assert [r.runtime for r in d.lint] == ["coreml"] and d.lint[0].ok
    assert made["fp16"].source == tmp_path / "model.fp16.onnx" and made["fp16"].notes == (coreml.NOT_RUN,)
    # W8A8 computes with int8 activations: priced and scored from the run's int8 ONNX, which does too.
    assert made["int8"].source == cnn_int8_onnx
    assert made["int8"].notes[1] == "W8A8: int8 weights and activations, activations calibrated on 100 samples"
    # Only the weights shrink: so small a student's W8A8 spec, with its quantize ops, outweighs them.
    assert _weight_bytes(made["int8"]) < 0.7 * _weight_bytes(made["fp16"])  # biases stay fp16, blobs are aligned


def test_a_weights_only_package_is_priced_from_fp16_onnx(cnn_onnx, cnn_int8_onnx, digits_xy, tmp_path, monkeypatch):
    _refuse_w8a8(monkeypatch)
    made = _iphone_packages(_cnn_sources(cnn_onnx, digits_xy, tmp_path, tiny_cnn(), cnn_int8_onnx))
    assert made["int8"].source == tmp_path / "model.fp16.onnx"  # computes in fp16, as that file does
    assert made["int8"].notes == (coreml.NOT_RUN, "int8 weights only (W8A16): RuntimeError: no quantizer for this one")


def test_without_a_student_in_pytorch_or_coremltools_the_package_is_skipped(cnn_onnx, digits_xy, tmp_path, monkeypatch):
    want = {("mlpackage", "fp16"): ("iphone-15-pro",)}
    (skipped,) = deploy(_cnn_sources(cnn_onnx, digits_xy, tmp_path, None), want).skipped
    assert "made from the student in PyTorch" in skipped.reason
    monkeypatch.setattr(coreml, "available", lambda: "coremltools is not installed (coremltools): pip install -e '.[coreml]'")
    (skipped,) = deploy(_cnn_sources(cnn_onnx, digits_xy, tmp_path, tiny_cnn()), want).skipped
    assert skipped.reason.endswith("pip install -e '.[coreml]'") and "\n" not in skipped.reason
    assert not list(tmp_path.glob("*.mlpackage"))


def test_cli_export_makes_a_package_from_a_students_folder_and_says_it_is_not_run(cnn_onnx, digits_xy, tmp_path):
    from typer.testing import CliRunner

    from edgedistill.cli import app

    folder = tmp_path / "student"
    student_folder(folder, tiny_cnn(), cnn_onnx)
    result = CliRunner().invoke(app, ["export", str(folder), "--format", "mlpackage", "--precision", "fp16", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "model.fp16.mlpackage" in result.output and "mlpackage fp16" in result.output
    assert "not run here: Core ML predicts on macOS only" in result.output
    assert "coreml: model.fp16.mlpackage is clean" in result.output
    assert file_bytes(tmp_path / "out" / "model.fp16.mlpackage") > 0


@pytest.mark.slow
def test_a_run_for_the_iphone_reports_packages_predicted_and_not_run_here(tmp_path):
    """The whole run (about a minute): the report's package entries and a resume that keeps them."""
    from conftest import tiny_run_config
    from edgedistill import pipeline
    from edgedistill.config import parse_config
    from edgedistill.report.markdown import render

    config = tiny_run_config() | {"targets": ["host-cpu", "iphone-15-pro"]}
    config["tiers"] = config["tiers"][:1]
    report = pipeline.run(parse_config(config, "test"), tmp_path / "run").report
    packages = [a for a in report.students[0].artifacts if a.format == "mlpackage"]
    assert sorted(a.precision for a in packages) == ["fp16", "int8"]
    for a in packages:
        assert a.bytes > 0 and a.passed and a.parity_max_abs_err is None
        assert coreml.NOT_RUN in a.notes and a.latency["iphone-15-pro"].source == "predicted"
        assert "host-cpu" not in a.latency  # not run here, so not timed here either
        assert [r["runtime"] for r in a.lint] == ["coreml"]
    assert coreml.NOT_RUN in render(report)
    again = pipeline.run(parse_config(config, "test"), tmp_path / "run").report
    assert [a.bytes for a in again.students[0].artifacts] == [a.bytes for a in report.students[0].artifacts]
