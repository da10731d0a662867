from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import outlier_norm, tiny_tokens_onnx

from edgedistill.compress.quantize import (
    QUANTIZERS,
    Int8Dynamic,
    Int8Static,
    Int8StaticSymmetric,
    QuantizeConfig,
    quantize,
)
from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx
from edgedistill.ortsession import open_session, run_batched

INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "DynamicQuantizeLinear"}


@pytest.fixture(scope="module")
def splits(digits_xy):
    """Calibration and validation inputs, and accuracy on the validation labels."""
    x, y = digits_xy
    val_y = y[1000:]
    return x[:300], x[1000:], lambda out: float((out.argmax(1) == val_y).mean())


def _op_types(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_quantize_picks_a_method_within_tolerance(mlp_onnx, splits, tmp_path):
    calib_x, val_x, accuracy = splits
    out = tmp_path / "mlp.int8.onnx"
    result = quantize(mlp_onnx, out, [Int8Static(), Int8Dynamic()], calib_x, accuracy, val_x, timing_runs=10)
    assert result.path == out and out.is_file()
    assert _op_types(out) & INT8_OPS
    fp32_bytes = mlp_onnx.stat().st_size
    assert result.bytes == out.stat().st_size < 0.6 * fp32_bytes
    assert result.fp32_score - result.score <= 0.01
    assert result.fp32_score > 0.9
    assert [t.method for t in result.trials] == ["int8-static", "int8-dynamic"]
    assert all(t.p50_ms > 0 and t.bytes > 0 for t in result.trials)
    assert result.method in {"int8-static", "int8-dynamic"}
    assert result.method in result.reason and result.kept_float == ()
    assert result.precision == "int8"
    # Temp files removed: only the output is left in its directory.
    assert [p.name for p in tmp_path.iterdir()] == ["mlp.int8.onnx"]


@pytest.mark.parametrize("config_type", sorted(QUANTIZERS, key=lambda t: t.__name__))
def test_every_registered_quantizer_makes_a_smaller_int8_model(config_type, mlp_onnx, splits, tmp_path):
    calib_x, val_x, accuracy = splits
    out = tmp_path / "q.onnx"
    result = quantize(mlp_onnx, out, [config_type()], calib_x, accuracy, val_x, max_drop=0.02, timing_runs=5)
    assert result.method == config_type.name
    assert _op_types(out) & INT8_OPS
    assert result.bytes < 0.6 * mlp_onnx.stat().st_size
    assert result.fp32_score - result.score <= 0.02


def test_fallback_keeps_most_sensitive_layers_in_float(mlp_onnx, splits, tmp_path):
    calib_x, val_x, _ = splits
    fp32_out = run_batched(open_session(mlp_onnx), val_x)

    def closeness(out):  # higher is better; 0 only for outputs equal to fp32
        return -float(np.mean(np.abs(out - fp32_out)))

    full = quantize(mlp_onnx, tmp_path / "full.onnx", [Int8Dynamic()], calib_x, closeness, val_x, timing_runs=5)
    drop = full.fp32_score - full.score
    assert drop > 1e-4  # int8 moves the outputs, so a tolerance below that forces the fallback
    result = quantize(
        mlp_onnx, tmp_path / "kept.onnx", [Int8Dynamic()], calib_x, closeness, val_x,
        max_drop=drop / 1000, timing_runs=5,
    )
    assert result.kept_float  # at least one layer kept in float
    assert set(result.kept_float) <= {"node_linear", "node_linear_1"}
    assert result.fp32_score - result.score <= drop / 1000
    assert "in float" in result.reason
    n_int8 = sum(n.op_type == "MatMulInteger" for n in onnx.load(str(result.path)).graph.node)
    assert n_int8 == 2 - len(result.kept_float)
    # Deterministic: the same inputs keep the same layers in float.
    again = quantize(
        mlp_onnx, tmp_path / "again.onnx", [Int8Dynamic()], calib_x, closeness, val_x,
        max_drop=drop / 1000, timing_runs=5,
    )
    assert again.kept_float == result.kept_float
    # Both mixed-precision searches ran on the real model, and the smallest holding file shipped.
    assert {a.order for a in result.assignments} == {"most sensitive first", "most sensitive per byte kept"}
    holding = [a for a in result.assignments if a.holds]
    assert holding and result.bytes == min(a.bytes for a in holding)


def test_default_methods_add_dynamic_for_linear_graphs(mlp_onnx, tmp_path, cnn):
    assert QuantizeConfig().methods_for(mlp_onnx) == (Int8Static(), Int8Dynamic(per_channel=True))
    assert QuantizeConfig(methods=("int8-dynamic",)).methods_for(mlp_onnx) == (Int8Dynamic(per_channel=True),)
    conv_only = tmp_path / "conv.onnx"
    export_onnx(cnn.features, np.zeros((2, 1, 8, 8), np.float32), np.zeros((2, 1, 8, 8), np.float32), conv_only)
    assert QuantizeConfig(per_channel=False).methods_for(conv_only) == (Int8Static(per_channel=False),)


def test_bad_configs_raise_user_error(mlp_onnx, splits, tmp_path):
    calib_x, val_x, accuracy = splits
    with pytest.raises(UserError, match="calibration_method"):
        Int8Static(calibration_method="minmaxx")
    with pytest.raises(UserError, match="no quantization method"):
        quantize(mlp_onnx, tmp_path / "q.onnx", [], calib_x, accuracy, val_x)
    with pytest.raises(UserError, match="empty"):
        quantize(mlp_onnx, tmp_path / "q.onnx", [Int8Static()], calib_x[:0], accuracy, val_x)


def test_symmetric_static_int8_has_zero_points_of_zero_and_int8_activations(mlp_onnx, splits, tmp_path):
    from onnx import numpy_helper

    from edgedistill.compress.quantize import Int8StaticSymmetric

    calib_x, val_x, accuracy = splits
    result = quantize(mlp_onnx, tmp_path / "sym.onnx", [Int8StaticSymmetric()], calib_x, accuracy, val_x)
    assert result.method == "int8-static-symmetric"
    graph = onnx.load(str(result.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    assert result.fp32_score - result.score <= 0.01


@pytest.mark.parametrize("method", [Int8Static(), Int8StaticSymmetric()], ids=lambda m: m.name)
def test_where_int8_of_every_op_loses_the_score_the_weight_bearing_ops_alone_are_tried(method, digits_xy, tmp_path):
    x = digits_xy[0].reshape(len(digits_xy[0]), -1)
    path = tmp_path / "outliers.onnx"
    export_onnx(outlier_norm(), x[:2], x[:2], path)
    fp32 = run_batched(open_session(path), x[1000:]).argmax(1)
    agreement = lambda out: float((out.argmax(1) == fp32).mean())  # noqa: E731
    result = quantize(path, tmp_path / "q.onnx", [method], x[:300], agreement, x[1000:], max_drop=0.02, timing_runs=2)
    assert result.fp32_score - result.trials[0].score > 0.05  # every op in int8: LayerNorm's input loses its steps
    assert result.fp32_score - result.score <= 0.02
    assert result.float_ops == ("LayerNormalization",) and result.kept_float == ()
    assert result.in_float == (1, 0) and "every LayerNormalization left in float" in result.reason
    graph = onnx.load(str(result.path)).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    norm = next(n for n in graph.node if n.op_type == "LayerNormalization")
    assert made_by[norm.input[0]] != "DequantizeLinear"  # LayerNorm reads float
    gemm_inputs = [made_by.get(i) for n in graph.node if n.op_type == "Gemm" for i in n.input[:2]]
    assert gemm_inputs and set(gemm_inputs) == {"DequantizeLinear"}  # both linear layers stay int8


def test_the_weight_bearing_ops_alone_are_not_tried_where_nothing_else_is_quantized(mlp_onnx, splits, tmp_path):
    """Dynamic int8 quantizes no op of the MLP beyond its Gemms: its fallback keeps layers in float at once."""
    calib_x, val_x, _ = splits
    fp32_out = run_batched(open_session(mlp_onnx), val_x)
    result = quantize(
        mlp_onnx, tmp_path / "q.onnx", [Int8Dynamic()], calib_x, lambda out: -float(np.abs(out - fp32_out).mean()), val_x,
        max_drop=1e-9, timing_runs=2,
    )
    assert result.float_ops == () and result.assignments


def test_quantize_takes_named_inputs(tmp_path):
    path = tiny_tokens_onnx(tmp_path / "two.onnx")
    rng = np.random.default_rng(0)
    feed = {"ids": rng.integers(0, 20, (40, 6)), "mask": np.ones((40, 6), np.int64)}
    fp32 = run_batched(open_session(path), feed)
    score = lambda out: -float(np.abs(out - fp32).mean())  # noqa: E731
    result = quantize(path, tmp_path / "two.int8.onnx", (Int8Static(), Int8Dynamic()), feed, score, feed, max_drop=1.0)
    assert {t.method for t in result.trials} == {"int8-static", "int8-dynamic"}
    assert run_batched(open_session(result.path), feed).shape == (40, 4)


def test_relative_paths_work_and_nothing_is_left_in_the_working_directory(mlp_onnx, splits, tmp_path, monkeypatch):
    import shutil

    calib_x, val_x, accuracy = splits
    monkeypatch.chdir(tmp_path)
    shutil.copy(mlp_onnx, "mlp.onnx")
    result = quantize(Path("mlp.onnx"), Path("out/mlp.int8.onnx"), [Int8Dynamic()], calib_x, accuracy, val_x, timing_runs=2)
    assert (tmp_path / "out" / "mlp.int8.onnx").is_file() and result.path == Path("out/mlp.int8.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx", "out"]
