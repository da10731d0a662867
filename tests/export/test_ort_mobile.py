import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgedistill.compress.quantize import Int8Static, quantize
from edgedistill.errors import UserError
from edgedistill.export.fp16 import to_fp16
from edgedistill.export.onnx import export_onnx
from edgedistill.export.ort_mobile import DEFAULT_TOLERANCE, OrtArtifact, export_ort
from edgedistill.export.parity import Parity
from edgedistill.ortsession import open_session, run_batched


@pytest.fixture(scope="module")
def int8_mlp_onnx(tmp_path_factory, trained_mlp, digits_xy):
    x, y = digits_xy
    folder = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(trained_mlp, x[:2], x[:64], folder / "mlp.onnx").path
    accuracy = lambda out: float((out.argmax(1) == y[1000:]).mean())  # noqa: E731
    return quantize(fp32, folder / "mlp.int8.onnx", [Int8Static()], x[:300], accuracy, x[1000:], timing_runs=2).path


def _config_ops(path):
    """The op types a required-operators config lists (lines `domain;opset;Op1,Op2`)."""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {op for line in lines for op in line.split(";")[2].split(",")}


def test_fp32_cnn_round_trip(cnn_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    out = tmp_path / "cnn.ort"
    artifact = export_ort(cnn_onnx, out, x[:200])
    assert artifact.path == out and artifact.bytes == out.stat().st_size > 0
    assert artifact.parity.tolerance == DEFAULT_TOLERANCE
    assert artifact.parity.max_abs_err <= 1e-4 and artifact.parity.passed
    # onnxruntime loads it as an ORT-format model and gives the source model's answers.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"input": x[:5]})
    want = run_batched(open_session(cnn_onnx), x[:5])
    np.testing.assert_allclose(y, want, atol=1e-4)
    # Fixed style: the Conv+ReLU fusion is baked in, so the config lists the fused kernel.
    assert artifact.ops_config == tmp_path / "cnn.required_operators.config"
    assert {"FusedConv", "MaxPool", "Gemm"} <= _config_ops(artifact.ops_config)
    assert "Conv" not in _config_ops(artifact.ops_config)
    # Only the two files, and the config's header names the final file, not a temporary one.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.ort", "cnn.required_operators.config"]
    header = artifact.ops_config.read_text()
    assert "# - cnn.ort" in header and str(tmp_path) not in header


def test_int8_qdq_mlp_round_trip(int8_mlp_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    artifact = export_ort(int8_mlp_onnx, tmp_path / "mlp.int8.ort", x[1000:])
    assert artifact.parity.passed
    assert artifact.parity.max_abs_err <= 1e-4
    assert artifact.ops_config == tmp_path / "mlp.int8.required_operators.config"
    ops = _config_ops(artifact.ops_config)
    # The QDQ pairs around each Gemm were fused into int8 kernels at conversion.
    assert {"QuantizeLinear", "DequantizeLinear", "QGemm"} <= ops
    assert "Gemm" not in ops
    got = run_batched(open_session(artifact.path), x[1000:])
    assert got.shape == (len(x) - 1000, 10)


def test_rerun_overwrites_and_keeps_folder_clean(cnn_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    first = export_ort(cnn_onnx, tmp_path / "m.ort", x[:8])
    second = export_ort(cnn_onnx, tmp_path / "m.ort", x[:8])
    assert second.bytes == first.bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ort", "m.required_operators.config"]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 hosts only")
def test_fp16_model_is_refused_on_x86(cnn_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    fp16 = to_fp16(cnn_onnx, tmp_path / "cnn.fp16.onnx", x[:8]).path
    with pytest.raises(UserError, match="would run in fp32"):
        export_ort(fp16, tmp_path / "cnn.fp16.ort", x[:8])
    assert not (tmp_path / "cnn.fp16.ort").exists()


def test_relative_paths_and_clean_config_header(cnn_onnx, digits_xy, tmp_path, monkeypatch):
    x, _ = digits_xy
    monkeypatch.chdir(tmp_path)
    artifact = export_ort(cnn_onnx, Path("rel") / "cnn.ort", x[:8])
    assert artifact.path.is_file() and artifact.ops_config.is_file()
    header = [line for line in artifact.ops_config.read_text().splitlines() if line.startswith("# - ")]
    assert header == ["# - cnn.ort"]


def test_bad_arguments_raise_user_error(cnn_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    with pytest.raises(UserError, match="must end in .ort"):
        export_ort(cnn_onnx, tmp_path / "cnn.onnx", x[:8])
    with pytest.raises(UserError, match="empty"):
        export_ort(cnn_onnx, tmp_path / "cnn.ort", x[:0])
    with pytest.raises(UserError, match="does not exist"):
        export_ort(tmp_path / "missing.onnx", tmp_path / "cnn.ort", x[:8])
    renamed = tmp_path / "cnn.model"
    renamed.write_bytes(cnn_onnx.read_bytes())
    with pytest.raises(UserError, match=r"not named \*\.onnx"):
        export_ort(renamed, tmp_path / "cnn.ort", x[:8])
    assert not (tmp_path / "cnn.ort").exists()


def test_passed_compares_error_with_tolerance(tmp_path):
    fields = dict(path=tmp_path / "m.ort", bytes=1, ops_config=tmp_path / "m.config")
    assert OrtArtifact(parity=Parity(1e-4, 1e-4), **fields).parity.passed
    assert not OrtArtifact(parity=Parity(2e-4, 1e-4), **fields).parity.passed
    assert not OrtArtifact(parity=Parity(float("inf"), 1e-4), **fields).parity.passed
