import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgedistill.errors import UserError
from edgedistill.ortsession import open_session, run_batched


def _half_model(path):
    """y = x + x with a float16 input, to check inputs are cast to the declared dtype."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_run_batched_casts_and_concatenates(tmp_path):
    session = open_session(_half_model(tmp_path / "half.onnx"), threads=1)
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    y = run_batched(session, x, batch_size=4)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, 2 * x)


def test_open_session_rejects_text_file(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("not a model")
    with pytest.raises(UserError, match="model.onnx is not a valid ONNX file"):
        open_session(bad)


def test_open_session_rejects_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_session(tmp_path / "missing.onnx")


def test_run_batched_takes_named_inputs(tmp_path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b], [y])
    path = tmp_path / "add.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    a_x, b_x = np.arange(10.0).reshape(5, 2), np.ones((5, 2))
    out = run_batched(open_session(path), {"a": a_x, "b": b_x}, batch_size=2)
    np.testing.assert_allclose(out, a_x + 1)
    with pytest.raises(UserError, match="needs input"):
        run_batched(open_session(path), {"a": a_x})
