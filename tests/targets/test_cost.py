"""graph_cost against graphs counted by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_cnn
from onnx import TensorProto, helper, numpy_helper

from edgedistill.compress.quantize import Int8Dynamic, Int8Static, quantize
from edgedistill.data.text import builtin_sentences, tokenize
from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx
from edgedistill.hf.export import export_hf
from edgedistill.hf.model import load_hf
from edgedistill.targets.cost import GEMM_OPS, graph_cost
from edgedistill.targets.estimate import predict
from edgedistill.targets.profile import load_target

# The tiny BERT of conftest: 4 layers, hidden 32, 4 heads, feed-forward 64, 64 positions.
LAYERS, HIDDEN, HEADS, FFN = 4, 32, 4, 64
SEQ_LEN = 48


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
    with pytest.raises(UserError, match="seq_len"):
        graph_cost(path, seq_len=0)


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


def _int64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _constant(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=_int64(f"{name}_value", values))


def test_every_dynamic_axis_but_the_batch_takes_seq_len(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [helper.make_node("Relu", ["x"], ["y"])],
        [_input("x", ["batch", "seq", 8])],
        [_input("y", ["batch", "seq", 8])],
    )
    assert graph_cost(path, seq_len=5).nodes[0].flops == 1 * 5 * 8
    assert graph_cost(path, batch=2, seq_len=3).nodes[0].flops == 2 * 3 * 8


def test_a_slice_bounded_by_an_input_shape_is_sized(tmp_path: Path) -> None:
    # A BERT's position embeddings: table[:, :seq] with seq read from the input's shape, which
    # ONNX's shape inference cannot bound and onnxruntime's symbolic inference can.
    path = _save(
        tmp_path,
        [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
            helper.make_node("Unsqueeze", ["seq", "zero"], ["end"]),
            helper.make_node("Slice", ["table", "zero", "end", "one"], ["rows"]),
            helper.make_node("Add", ["x", "rows"], ["y"]),
        ],
        [_input("x", ["batch", "seq"])],
        [_input("y", ["batch", "seq"])],
        [_weight("table", (1, 64)), _int64("zero", [0]), _int64("one", [1])],
    )
    add = graph_cost(path, seq_len=10).nodes[-1]
    assert add.flops == 10 and add.bytes_written == 10 * 4


def test_a_slice_bounded_by_constant_arithmetic_is_sized(tmp_path: Path) -> None:
    # What torch's TorchScript exporter writes for a chunk of the fused q/k/v projection: the
    # bound is a Mod of Constants, an op neither inference evaluates; it is folded first.
    path = _save(
        tmp_path,
        [
            _constant("two", [2]),
            _constant("three", [3]),
            helper.make_node("Mod", ["two", "three"], ["end"]),
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Slice", ["shape", "zero", "end"], ["size"]),
            helper.make_node("Reshape", ["x", "size"], ["y"]),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        [_input("x", ["batch", "seq"])],
        [_input("z", ["batch", "seq"])],
        [_int64("zero", [0])],
    )
    assert graph_cost(path, seq_len=7).nodes[-1].flops == 7


@pytest.fixture(scope="module")
def bert_onnx(bert_folder, tmp_path_factory) -> dict[str, Path]:
    """The tiny BERT exported with dynamic batch and sequence axes, fp32 and dynamic int8."""
    model, tokenizer = load_hf(bert_folder)
    sample = tokenize(tokenizer, builtin_sentences()[:24], SEQ_LEN)
    out = tmp_path_factory.mktemp("bert-cost")
    art = export_hf(model, tokenizer, out / "onnx", sample)
    feed = sample.feed(art.inputs)
    int8 = quantize(art.path, out / "model.int8.onnx", [Int8Dynamic()], feed, lambda _: 1.0, feed, max_drop=1.0, timing_runs=1)
    return {"fp32": art.path, "int8": int8.path}


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_a_transformer_with_dynamic_axes_is_costed_and_predicted(bert_onnx: dict[str, Path], kind: str) -> None:
    cost = graph_cost(bert_onnx[kind], seq_len=SEQ_LEN)
    graph = onnx.load(str(bert_onnx[kind])).graph
    weights = {init.name for init in graph.initializer}
    inputs = {node.name: node.input for node in graph.node}
    products = [n for n in cost.nodes if n.op in GEMM_OPS]
    weighted = [n for n in products if weights.intersection(inputs[n.name])]
    # Per layer: q, k, v and the output projection (S·H·H each), the two feed-forward products
    # (S·H·F each); then scores and their use over the heads (2 · heads · S·S·H/heads).
    assert sum(n.flops for n in weighted) == LAYERS * 2 * SEQ_LEN * HIDDEN * (4 * HIDDEN + 2 * FFN)
    assert sum(n.flops for n in products if n not in weighted) == LAYERS * 2 * 2 * SEQ_LEN * SEQ_LEN * HIDDEN
    assert {n.precision for n in weighted} == {"fp32" if kind == "fp32" else "int8"}
    p50 = predict(cost, load_target("raspberry-pi-5")).p50_ms
    assert p50 > 0 and math.isfinite(p50)
    longer = graph_cost(bert_onnx[kind], seq_len=SEQ_LEN + 16)
    assert longer.flops > cost.flops and longer.peak_activation_bytes > cost.peak_activation_bytes


def test_a_seq_len_past_the_models_positions_says_so(bert_onnx: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="seq_len"):
        graph_cost(bert_onnx["fp32"], seq_len=128)  # the tiny BERT has 64 positions
