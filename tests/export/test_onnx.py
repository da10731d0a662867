import copy

import onnx
import pytest
import torch
from conftest import tiny_cnn

from edgedistill.errors import UserError
from edgedistill.export.onnx import OnnxArtifact, OnnxExport, export_onnx, load_onnx_checked
from edgedistill.export.parity import Parity
from edgedistill.ortsession import open_session


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits_xy):
    """A TinyCNN in train mode, its state before export, and the artifact."""
    x, _ = digits_xy
    model = tiny_cnn().train()
    before = copy.deepcopy(model.state_dict())
    out = tmp_path_factory.mktemp("export") / "cnn.onnx"
    artifact = export_onnx(model, x[:1], x[:64], out)
    return model, before, artifact


def test_export_writes_one_checked_file_that_passes_parity(exported):
    _, _, artifact = exported
    assert artifact.path.is_file()
    assert artifact.bytes == artifact.path.stat().st_size
    assert artifact.opset == 18 and artifact.simplified
    assert artifact.parity.max_abs_err <= 1e-4
    assert artifact.parity.passed
    # Only the artifact: no temp file and no external-data file beside it.
    assert [p.name for p in artifact.path.parent.iterdir()] == ["cnn.onnx"]
    proto = load_onnx_checked(artifact.path)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)


def test_export_has_named_dynamic_batch(exported, digits_xy):
    _, _, artifact = exported
    x, _ = digits_xy
    proto = onnx.load(str(artifact.path))
    assert proto.graph.input[0].name == "input" and proto.graph.output[0].name == "output"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = open_session(artifact.path)
    for batch in (1, 5):
        (y,) = session.run(None, {"input": x[:batch]})
        assert y.shape == (batch, 10)


def test_export_does_not_mutate_the_model(exported):
    model, before, _ = exported
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    # BatchNorm running stats would move if the export had run the model in train mode.
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_static_batch_export_and_zero_tolerance(tmp_path, digits_xy):
    x, _ = digits_xy
    cfg = OnnxExport(dynamic_batch=False, simplify=False, parity_tolerance=0.0, input_name="pixels")
    artifact = export_onnx(tiny_cnn(), x[:4], x[:8], tmp_path / "static.onnx", cfg)
    proto = onnx.load(str(artifact.path))
    assert proto.graph.input[0].name == "pixels"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert not artifact.simplified
    assert artifact.parity.max_abs_err <= 1e-4
    assert artifact.parity.passed == (artifact.parity.max_abs_err == 0.0)


def test_passed_compares_error_with_tolerance(tmp_path):
    fields = dict(path=tmp_path / "m.onnx", bytes=1, opset=18, simplified=True)
    assert OnnxArtifact(parity=Parity(1e-4, 1e-4), **fields).parity.passed
    assert not OnnxArtifact(parity=Parity(2e-4, 1e-4), **fields).parity.passed
    assert not OnnxArtifact(parity=Parity(float("inf"), 1e-4), **fields).parity.passed


def test_load_onnx_checked_rejects_truncated_file(exported, tmp_path):
    _, _, artifact = exported
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(artifact.path.read_bytes()[: artifact.bytes // 2])
    with pytest.raises(UserError, match="truncated.onnx is not a valid ONNX file"):
        load_onnx_checked(truncated)


def test_load_onnx_checked_rejects_text_and_missing_files(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("hello, this is not protobuf\n")
    with pytest.raises(UserError, match="not a valid ONNX file"):
        load_onnx_checked(text)
    with pytest.raises(UserError, match="does not exist"):
        load_onnx_checked(tmp_path / "missing.onnx")


class _NaNHead(torch.nn.Module):
    """A model whose every output is NaN: torch and onnxruntime 'agree' on NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


def test_nan_outputs_fail_parity_instead_of_passing_with_no_error(tmp_path, digits_xy):
    x, _ = digits_xy
    artifact = export_onnx(_NaNHead(), x[:2], x[:16], tmp_path / "nan.onnx")
    assert artifact.parity.max_abs_err == float("inf")
    assert artifact.parity.checked and not artifact.parity.passed
