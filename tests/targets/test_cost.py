"""graph_cost against graphs counted by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_cnn
from onnx import TensorProto, helper, numpy_helper

from edgedistill.compress.quantize import Int8Static, quantize
from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx
from edgedistill.targets.cost import graph_cost


def _save(tmp_path: Path, nodes, inputs, outputs, inits=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    return path


def _weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def _input(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_conv_flops_and_bytes(tmp_path: Path) -> None:
    # N=2 (symbolic batch), Cin=3, 8x8 -> Cout=4, 3x3, pad 1: 8x8 out.
    path = _save(
        tmp_path,
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        [_input("x", ["N", 3, 8, 8])],
        [_input("y", ["N", 4, 8, 8])],
        [_weight("w", (4, 3, 3, 3))],
    )
    cost = graph_cost(path, batch=2)
    (node,) = cost.nodes
    assert node.flops == 2 * 2 * 4 * 8 * 8 * 3 * 3 * 3
    assert node.precision == "fp32"
    assert node.bytes_read == (2 * 3 * 8 * 8 + 4 * 3 * 3 * 3) * 4
    assert node.bytes_written == 2 * 4 * 8 * 8 * 4
    assert cost.weight_bytes == 4 * 3 * 3 * 3 * 4
    assert cost.batch == 2


def test_depthwise_conv_counts_one_input_channel_per_output(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [helper.make_node("Conv", ["x", "w"], ["y"], group=16, strides=[2, 2], pads=[1, 1, 1, 1])],
        [_input("x", [1, 16, 8, 8])],
        [_input("y", [1, 16, 4, 4])],
        [_weight("w", (16, 1, 3, 3))],
    )
    assert graph_cost(path).nodes[0].flops == 2 * 16 * 4 * 4 * 1 * 3 * 3


def test_matmul_and_gemm(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Gemm", ["h", "w2"], ["y"], transB=1),
        ],
        [_input("x", [5, 7])],
        [_input("y", [5, 3])],
        [_weight("w", (7, 11)), _weight("w2", (3, 11))],
    )
    matmul, gemm = graph_cost(path).nodes
    assert matmul.flops == 2 * 5 * 11 * 7
    assert gemm.flops == 2 * 5 * 3 * 11


def test_tiny_attention(tmp_path: Path) -> None:
    # Q, K, V: (B=1, heads=2, seq=4, d=8). scores = Q·Kᵀ (2·2·4·4·8), softmax (5 per score),
    # out = P·V (2·2·4·8·4); the transpose moves bytes but does no arithmetic.
    shape = [1, 2, 4, 8]
    path = _save(
        tmp_path,
        [
            helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["q", "kt"], ["s"]),
            helper.make_node("Softmax", ["s"], ["p"], axis=-1),
            helper.make_node("MatMul", ["p", "v"], ["o"]),
        ],
        [_input("q", shape), _input("k", shape), _input("v", shape)],
        [_input("o", shape)],
    )
    transpose, scores, softmax, out = graph_cost(path).nodes
    assert (transpose.flops, transpose.bytes_read, transpose.bytes_written) == (0, 64 * 4, 64 * 4)
    assert transpose.fused  # onnxruntime folds it into the product's transB
    assert scores.flops == 2 * 2 * 4 * 4 * 8
    assert softmax.flops == 5 * 2 * 4 * 4
    assert out.flops == 2 * 2 * 4 * 8 * 4


def test_peak_activation_memory_of_a_branch(tmp_path: Path) -> None:
    # x(400 B) -> a = Relu(x) (400) -> b = Sigmoid(a) (400), c = Tanh(a) (400) -> y = Add(b, c).
    # step 0 Relu: x, a = 800; step 1 Sigmoid: a, b = 800 (x died after step 0);
    # step 2 Tanh: a, b, c = 1200; step 3 Add: b, c, y = 1200; after the graph: y = 400.
    path = _save(
        tmp_path,
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("Sigmoid", ["a"], ["b"]),
            helper.make_node("Tanh", ["a"], ["c"]),
            helper.make_node("Add", ["b", "c"], ["y"]),
        ],
        [_input("x", [1, 100])],
        [_input("y", [1, 100])],
    )
    cost = graph_cost(path)
    assert cost.peak_activation_bytes == 1200
    assert cost.weight_bytes == 0
    assert [n.flops for n in cost.nodes] == [100, 100, 100, 100]


def test_peak_of_a_chain_scales_with_batch(tmp_path: Path) -> None:
    # x (N·64·4 B) -> Reshape -> y: both alive during the Reshape: 2 · N · 256 bytes.
    shape = numpy_helper.from_array(np.array([-1, 8, 8], np.int64), "shape")
    path = _save(
        tmp_path,
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [_input("x", ["N", 64])],
        [_input("y", ["N", 8, 8])],
        [shape],
    )
    assert graph_cost(path, batch=1).peak_activation_bytes == 512
    assert graph_cost(path, batch=4).peak_activation_bytes == 2048


def test_bad_batch_is_a_user_error(tmp_path: Path) -> None:
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [_input("x", [1, 4])], [_input("y", [1, 4])])
    with pytest.raises(UserError):
        graph_cost(path, batch=0)
    with pytest.raises(UserError):
        graph_cost(tmp_path / "missing.onnx")


def test_qdq_int8_marks_conv_and_gemm_int8(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((16, 1, 8, 8)).astype(np.float32)
    fp32 = export_onnx(tiny_cnn(), x[:2], x[:4], tmp_path / "cnn.onnx").path
    int8 = quantize(fp32, tmp_path / "cnn8.onnx", [Int8Static()], x, lambda _: 0.0, x[:4], timing_runs=1).path
    fp32_nodes = graph_cost(fp32).nodes
    int8_nodes = graph_cost(int8).nodes
    compute = [n for n in int8_nodes if n.op in ("Conv", "Gemm", "MatMul")]
    assert compute and all(n.precision == "int8" for n in compute)
    assert all(n.precision == "fp32" for n in fp32_nodes)
    # Same arithmetic either way; the Q/DQ pairs between kernels fuse away, leaving the input's Q
    # and the output's DQ as the only extra kernels.
    assert sum(n.flops for n in fp32_nodes if n.op in ("Conv", "Gemm")) == sum(n.flops for n in compute)
    running = [n.op for n in int8_nodes if not n.fused]
    assert running.count("QuantizeLinear") == 1 and running.count("DequantizeLinear") == 1
