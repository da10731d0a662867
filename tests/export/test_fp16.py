import numpy as np
import onnx
import pytest

from edgedistill.compress.quantize import Int8Dynamic, quantize
from edgedistill.errors import UserError
from edgedistill.export.fp16 import DEFAULT_TOLERANCE, Fp16Artifact, to_fp16
from edgedistill.export.parity import Parity
from edgedistill.ortsession import open_session, run_batched


def _elem_types(values):
    return {v.type.tensor_type.elem_type for v in values}


@pytest.mark.parametrize("model", ["mlp_onnx", "cnn_onnx"])
def test_fp16_halves_the_file_and_keeps_float32_io(model, request, digits_xy, tmp_path):
    src = request.getfixturevalue(model)
    x, _ = digits_xy
    artifact = to_fp16(src, tmp_path / "m.fp16.onnx", x[:500])
    assert artifact.bytes == artifact.path.stat().st_size
    assert 0.4 < artifact.bytes / src.stat().st_size < 0.6
    proto = onnx.load(str(artifact.path))
    assert _elem_types(proto.graph.input) == _elem_types(proto.graph.output) == {onnx.TensorProto.FLOAT}
    assert onnx.TensorProto.FLOAT16 in {init.data_type for init in proto.graph.initializer}
    assert artifact.keep_io_types
    # Within tolerance, relative to the scale of the logits; and the error is a real fp16 error.
    assert 0 < artifact.parity.max_abs_err <= DEFAULT_TOLERANCE * artifact.output_scale
    assert artifact.parity.tolerance == pytest.approx(DEFAULT_TOLERANCE * artifact.output_scale)
    assert artifact.parity.passed
    assert [p.name for p in tmp_path.iterdir()] == ["m.fp16.onnx"]


def test_fp16_accuracy_on_digits_within_one_point(mlp_onnx, digits_xy, tmp_path):
    x, y = digits_xy
    artifact = to_fp16(mlp_onnx, tmp_path / "mlp.fp16.onnx", x[:200])
    fp32 = run_batched(open_session(mlp_onnx), x).argmax(1)
    fp16 = run_batched(open_session(artifact.path), x).argmax(1)
    fp32_acc, fp16_acc = float((fp32 == y).mean()), float((fp16 == y).mean())
    assert fp32_acc > 0.9
    assert abs(fp32_acc - fp16_acc) <= 0.01


def test_fp16_io_when_asked(mlp_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    artifact = to_fp16(mlp_onnx, tmp_path / "io16.onnx", x[:200], keep_io_types=False)
    proto = onnx.load(str(artifact.path))
    assert _elem_types(proto.graph.input) == _elem_types(proto.graph.output) == {onnx.TensorProto.FLOAT16}
    assert not artifact.keep_io_types and artifact.parity.passed
    session = open_session(artifact.path)
    (out,) = session.run(None, {"input": x[:3].astype(np.float16)})
    assert out.dtype == np.float16 and out.shape == (3, 10)


def test_int8_input_is_refused(mlp_onnx, digits_xy, tmp_path):
    x, y = digits_xy
    accuracy = lambda out: float((out.argmax(1) == y[1000:]).mean())  # noqa: E731
    int8 = quantize(mlp_onnx, tmp_path / "mlp.int8.onnx", [Int8Dynamic()], x[:100], accuracy, x[1000:], timing_runs=2)
    with pytest.raises(UserError, match="mlp.int8.onnx is an int8 model .*convert the fp32 ONNX"):
        to_fp16(int8.path, tmp_path / "out.onnx", x[:10])
    assert not (tmp_path / "out.onnx").exists()


def test_bad_arguments_raise_user_error(mlp_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    with pytest.raises(UserError, match="empty"):
        to_fp16(mlp_onnx, tmp_path / "o.onnx", x[:0])
    with pytest.raises(UserError, match="tolerance"):
        to_fp16(mlp_onnx, tmp_path / "o.onnx", x[:8], tolerance=-1.0)
    with pytest.raises(UserError, match="does not exist"):
        to_fp16(tmp_path / "missing.onnx", tmp_path / "o.onnx", x[:8])


def test_passed_compares_error_with_tolerance(tmp_path):
    fields = dict(path=tmp_path / "m.onnx", bytes=1, keep_io_types=True, output_scale=10.0)
    assert Fp16Artifact(parity=Parity(0.1, 0.1), **fields).parity.passed
    assert not Fp16Artifact(parity=Parity(0.2, 0.1), **fields).parity.passed
    assert not Fp16Artifact(parity=Parity(float("inf"), 0.1), **fields).parity.passed
