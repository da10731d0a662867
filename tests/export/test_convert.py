
import numpy as np
import pytest
import torch

from edgedistill.errors import UserError
from edgedistill.export.convert import ExportRequest, export_model


@pytest.fixture(scope="module")
def data(tmp_path_factory, digits_xy):
    x, y = digits_xy
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, x=x[:400], y=y[:400])
    return path


def test_ort_from_an_onnx_checks_parity_and_lints(mlp_onnx, tmp_path):
    out = export_model(ExportRequest(mlp_onnx, "ort", "fp32", tmp_path))
    assert out.path.suffix == ".ort" and out.path.is_file() and out.parity.passed
    assert "random" in out.inputs
    assert [r.runtime for r in out.lint] == ["ort-mobile"] and out.lint[0].ok


def test_fp16_onnx_with_real_inputs(mlp_onnx, data, tmp_path):
    out = export_model(ExportRequest(mlp_onnx, "onnx", "fp16", tmp_path, data))
    assert out.path.name == "model.fp16.onnx" and out.parity.passed
    assert str(data) in out.inputs


def test_int8_needs_calibration_data(mlp_onnx, tmp_path):
    with pytest.raises(UserError, match="--data"):
        export_model(ExportRequest(mlp_onnx, "onnx", "int8", tmp_path))


def test_int8_onnx_and_ort_from_data(mlp_onnx, data, tmp_path):
    onnx_out = export_model(ExportRequest(mlp_onnx, "onnx", "int8", tmp_path / "a", data))
    assert onnx_out.path.name == "model.int8.onnx"
    ort_out = export_model(ExportRequest(mlp_onnx, "ort", "int8", tmp_path / "b", data))
    assert ort_out.path.name == "model.int8.ort" and ort_out.parity.passed


def test_tensorrt_int8_writes_a_trtexec_script_from_a_symmetric_model(mlp_onnx, data, tmp_path):
    out = export_model(ExportRequest(mlp_onnx, "tensorrt", "int8", tmp_path, data))
    assert out.build is not None and out.lint[0].ok
    if not out.build.built:
        assert out.path.name.endswith(".trtexec.sh") and "trtexec" in out.path.read_text()
    assert "int8-symmetric" in str(out.build.onnx)


def test_a_run_student_folder_is_a_model(tmp_path, mlp_onnx):
    folder = tmp_path / "students" / "small"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(mlp_onnx.read_bytes())
    out = export_model(ExportRequest(folder, "onnx", "fp16", tmp_path / "out"))
    assert out.path.is_file()


def test_a_pt2_needs_data_and_then_exports(tmp_path, data):
    from conftest import tiny_cnn

    program = torch.export.export(tiny_cnn(), (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    pt2 = tmp_path / "m.pt2"
    torch.export.save(program, pt2)
    with pytest.raises(UserError, match="--data"):
        export_model(ExportRequest(pt2, "onnx", "fp32", tmp_path / "a"))
    out = export_model(ExportRequest(pt2, "onnx", "fp32", tmp_path / "b", data))
    assert out.path.name == "model.onnx" and out.path.is_file()


def test_not_a_model(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(UserError, match="not a .onnx"):
        export_model(ExportRequest(bad, "onnx", "fp16", tmp_path))
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(b"\x08\x01garbage")
    with pytest.raises(UserError, match="not a valid ONNX"):
        export_model(ExportRequest(truncated, "onnx", "fp16", tmp_path))


def test_an_int8_model_gives_ort_and_tensorrt_as_it_is(mlp_onnx, digits_xy, tmp_path):
    from edgedistill.compress.quantize import Int8StaticSymmetric, quantize

    x, _ = digits_xy
    int8 = tmp_path / "mlp.sym.onnx"
    quantize(mlp_onnx, int8, [Int8StaticSymmetric()], x[:128], lambda _o: 1.0, x[:32], max_drop=1.0, timing_runs=1)
    ort_out = export_model(ExportRequest(int8, "ort", "int8", tmp_path / "ort"))
    assert ort_out.path.name == "model.int8.ort" and ort_out.parity.passed and ort_out.lint[0].runtime == "ort-mobile"
    trt_out = export_model(ExportRequest(int8, "tensorrt", "int8", tmp_path / "trt"))
    assert trt_out.build.onnx == int8 and trt_out.lint[0].ok  # not re-quantized
    assert not (tmp_path / "trt" / "model.int8-symmetric.onnx").exists()
    with pytest.raises(UserError, match="is an int8 model: ort fp16 needs the fp32 model"):
        export_model(ExportRequest(int8, "ort", "fp16", tmp_path / "fp16"))
    with pytest.raises(UserError, match="tensorrt has no precision 'fp32'"):
        ExportRequest(int8, "tensorrt", "fp32", tmp_path / "x")


@pytest.fixture
def fixed_batch_onnx(mlp_onnx, tmp_path):
    """The MLP with its batch axis fixed at 1, as a graph exported for batch 1 declares it."""
    import onnx

    proto = onnx.load(str(mlp_onnx))
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "fixed.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("fmt, precision", [("ort", "fp32"), ("onnx", "fp16"), ("ort", "int8"), ("onnx", "int8")])
def test_a_fixed_batch_of_1_exports_from_a_checked_dynamic_copy(fixed_batch_onnx, data, tmp_path, fmt, precision):
    before = fixed_batch_onnx.read_bytes()
    out = export_model(ExportRequest(fixed_batch_onnx, fmt, precision, tmp_path / "out", data))
    assert out.path.is_file() and out.path.parent == tmp_path / "out"
    assert out.parity.passed or not out.parity.checked
    assert out.notes == (
        (
            "fixed.onnx has a fixed batch: made from fixed.dynamic-batch.onnx, its graph with a dynamic batch axis "
            "(checked to give the same outputs)"
        ),
    )
    assert fixed_batch_onnx.read_bytes() == before


def test_a_dynamic_batch_file_is_used_as_it_is(mlp_onnx, tmp_path):
    out = export_model(ExportRequest(mlp_onnx, "ort", "fp32", tmp_path))
    assert out.notes == () and not list(tmp_path.glob("*dynamic-batch*"))


def test_an_out_that_is_a_file(mlp_onnx, tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("mine")
    with pytest.raises(UserError, match="is a file: export writes its files into a folder"):
        export_model(ExportRequest(mlp_onnx, "ort", "fp32", blocker))
    with pytest.raises(UserError, match="cannot create the folder"):
        export_model(ExportRequest(mlp_onnx, "ort", "fp32", blocker / "inside"))
    assert blocker.read_text() == "mine"
