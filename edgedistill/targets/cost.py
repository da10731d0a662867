"""Per-node cost of an ONNX graph: FLOPs, bytes moved, precision, and peak activation memory.

The cost is a property of the graph alone; turning it into a latency is `estimate`'s job.

Counting rules (one multiply-add = 2 FLOPs):
- Conv: 2·N·Cout·Hout·Wout·(Cin/group)·kh·kw (any spatial rank; depthwise via `group`);
  ConvTranspose: 2·N·Cin·Hin·Win·(Cout/group)·kh·kw. Bias adds are not counted.
- Gemm / MatMul (batched too, as in attention): 2·batch·M·N·K.
- Elementwise ops: 1 per output element (BatchNormalization: 2, a scale and a shift).
- Reductions: 1 per input element; Softmax 5 per element (max, subtract, exp, sum, divide);
  LayerNormalization and the other normalisations 8 per element (mean, subtract, square, sum,
  rsqrt, multiply, scale, shift); simplified (RMS) norm 5.
- Pooling: the kernel area per output element; global pooling 1 per input element.
- Shape and data-movement ops (Reshape, Transpose, Concat, Gather, ...): 0 FLOPs, their bytes count.
- Any other op: 1 per output element, so an unknown op is never free.

Bytes read are a node's inputs (activations at their dtype, plus initializers); bytes written
are its outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import onnx
from onnx import helper, shape_inference

from edgedistill.errors import UserError
from edgedistill.export.onnx import load_onnx_checked

CONV_OPS = frozenset({"Conv", "ConvInteger", "QLinearConv", "FusedConv", "NhwcConv"})
CONV_TRANSPOSE_OPS = frozenset({"ConvTranspose"})
GEMM_OPS = frozenset(
    {"Gemm", "MatMul", "MatMulInteger", "QGemm", "QLinearMatMul", "FusedGemm", "FusedMatMul",
     "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
)
ELEMENTWISE_OPS = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Neg", "Abs", "Relu",
     "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf",
     "Gelu", "FastGelu", "Softplus", "Mish", "Clip", "Max", "Min", "Where", "Equal", "Less",
     "Greater", "Not", "And", "Or", "Cast", "QuantizeLinear", "DequantizeLinear",
     "DynamicQuantizeLinear", "BatchNormalization", "Sin", "Cos", "Floor", "Ceil", "Round"}
)
# Ops that only move or relabel data: no arithmetic.
DATA_MOVEMENT_OPS = frozenset(
    {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Transpose", "Concat",
     "Slice", "Split", "Gather", "GatherElements", "Expand", "Tile", "Pad", "Shape", "Size",
     "Constant", "ConstantOfShape", "Range", "DepthToSpace", "SpaceToDepth"}
)
# onnxruntime (and TensorRT) alias these outputs to their input buffer: no bytes move.
_VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
_REDUCE_OPS = frozenset(
    {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
     "ReduceSumSquare", "ReduceLogSumExp", "ArgMax", "ArgMin", "GlobalAveragePool", "GlobalMaxPool"}
)
_POOL_OPS = frozenset({"MaxPool", "AveragePool", "LpPool", "QLinearAveragePool"})
_PER_ELEMENT = {
    "BatchNormalization": 2,
    "Softmax": 5,
    "LogSoftmax": 5,
    "LayerNormalization": 8,
    "InstanceNormalization": 8,
    "GroupNormalization": 8,
    "SkipLayerNormalization": 8,
    "SimplifiedLayerNormalization": 5,
    "RMSNormalization": 5,
}
_INT8_OPS = frozenset(
    {"QLinearConv", "ConvInteger", "MatMulInteger", "QGemm", "QLinearMatMul", "DynamicQuantizeMatMul",
     "MatMulIntegerToFloat"}
)
# Ops onnxruntime runs in int8 when QDQ pairs surround them, so those Q/DQ nodes vanish.
_QDQ_FUSABLE = CONV_OPS | GEMM_OPS | _VIEW_OPS | frozenset(
    {"MaxPool", "AveragePool", "GlobalAveragePool", "Transpose", "Add", "Mul", "Concat", "Resize",
     "Sigmoid", "LeakyRelu", "Softmax", "Gather", "Split", "Where", "Relu", "Clip"}
)
_HALF_TYPES = frozenset({onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16})
# Activations every runtime fuses into the Conv/Gemm that feeds them.
_FUSABLE_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"})


@dataclass(frozen=True)
class NodeCost:
    """One node's work. `fused` nodes run no kernel of their own: they are folded into constants
    (all inputs constant) or fused into a neighbour (QDQ pairs around an int8 kernel, an
    activation or BatchNormalization after a Conv/Gemm), as onnxruntime and TensorRT do."""

    name: str
    op: str
    flops: int
    precision: str  # "fp32" | "fp16" | "int8": the arithmetic the node's kernel runs in
    bytes_read: int
    bytes_written: int
    fused: bool = False


@dataclass(frozen=True)
class GraphCost:
    """The cost of a whole graph at one batch size."""

    nodes: tuple[NodeCost, ...]
    peak_activation_bytes: int
    weight_bytes: int
    batch: int

    @property
    def flops(self) -> int:
        """FLOPs of every node."""
        return sum(n.flops for n in self.nodes)

    @property
    def bytes_moved(self) -> int:
        """Bytes read and written by every node that runs a kernel."""
        return sum(n.bytes_read + n.bytes_written for n in self.nodes if not n.fused)

    @property
    def kernels(self) -> int:
        """How many nodes run a kernel of their own."""
        return sum(not n.fused for n in self.nodes)


def graph_cost(path: Path, batch: int = 1) -> GraphCost:
    """The cost of the ONNX file at `path` with its symbolic batch axis set to `batch`."""
    if batch < 1:
        raise UserError(f"batch must be >= 1, got {batch}")
    model = _with_batch(load_onnx_checked(Path(path)), batch)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{Path(path).name}: shape inference failed ({first}): re-export it with fixed shapes") from exc
    return _Graph(model.graph, batch).cost()


def _with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy of `model` whose inputs' symbolic first dimension is `batch` everywhere it appears."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    symbols = {
        inp.type.tensor_type.shape.dim[0].dim_param
        for inp in model.graph.input
        if inp.type.tensor_type.shape.dim and inp.type.tensor_type.shape.dim[0].dim_param
    }
    for info in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_value = batch  # setting the value clears the symbol (a proto oneof)
    return model


class _Graph:
    """Shapes, producers and consumers of one inferred graph, and the rules that cost its nodes."""

    def __init__(self, graph: onnx.GraphProto, batch: int) -> None:
        self.graph = graph
        self.batch = batch
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.itemsize: dict[str, int] = {}
        self.elem_type: dict[str, int] = {}
        for info in (*graph.input, *graph.value_info, *graph.output):
            self._record(info.name, info.type.tensor_type)
        self.constants = {init.name for init in graph.initializer}
        self.weight_bytes = 0
        for init in graph.initializer:
            self.shapes[init.name] = tuple(init.dims)
            self.itemsize[init.name] = _itemsize(init.data_type)
            self.weight_bytes += self.bytes(init.name)
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)
            # A node whose inputs are all constant is folded to a constant before the first run.
            if all(i in self.constants for i in node.input if i):
                self.constants.update(o for o in node.output if o)
                if node.op_type == "Constant":
                    self.weight_bytes += sum(self.bytes(o) for o in node.output)
        self.outputs = {o.name for o in graph.output}

    def _record(self, name: str, tensor_type: onnx.TypeProto.Tensor) -> None:
        if not tensor_type.HasField("shape"):
            self.shapes[name] = None
        else:
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
            self.shapes[name] = dims if all(d >= 0 for d in dims) else None
        self.itemsize[name] = _itemsize(tensor_type.elem_type)
        self.elem_type[name] = tensor_type.elem_type

    def shape(self, name: str) -> tuple[int, ...]:
        shape = self.shapes.get(name)
        if shape is None:
            raise UserError(
                f"tensor {name!r} has no static shape after shape inference: export with fixed sizes "
                "for every axis but the batch"
            )
        return shape

    def elements(self, name: str) -> int:
        return math.prod(self.shape(name))

    def bytes(self, name: str) -> int:
        return self.elements(name) * self.itemsize.get(name, 4) if name else 0

    def cost(self) -> GraphCost:
        nodes = tuple(self.node_cost(n) for n in self.graph.node)
        return GraphCost(
            nodes=nodes,
            peak_activation_bytes=self.peak_activation_bytes(),
            weight_bytes=self.weight_bytes,
            batch=self.batch,
        )

    # -- per node ---------------------------------------------------------------------------

    def node_cost(self, node: onnx.NodeProto) -> NodeCost:
        op = node.op_type
        fused = self.is_fused(node)
        view = op in _VIEW_OPS
        return NodeCost(
            name=node.name or f"{op}:{node.output[0]}",
            op=op,
            flops=0 if fused and all(i in self.constants for i in node.input if i) else self.flops(node),
            precision=self.precision(node),
            bytes_read=0 if view else sum(self.read_bytes(i) for i in node.input if i),
            bytes_written=0 if view else sum(self.write_bytes(o) for o in node.output if o),
            fused=fused,
        )

    def read_bytes(self, name: str) -> int:
        """Bytes an input costs its consumer: a folded DequantizeLinear's quantized source when
        the runtime fuses it into an int8 kernel."""
        src = self.producer.get(name)
        if src is not None and src.op_type == "DequantizeLinear" and self.is_fused(src):
            return self.bytes(src.input[0])
        return self.bytes(name)

    def write_bytes(self, name: str) -> int:
        """Bytes an output costs its producer: the quantized tensor when every consumer is a
        QuantizeLinear fused into the producer's int8 kernel."""
        users = self.consumers.get(name, [])
        if users and name not in self.outputs and all(u.op_type == "QuantizeLinear" and self.is_fused(u) for u in users):
            return self.bytes(users[0].output[0])
        return self.bytes(name)

    def flops(self, node: onnx.NodeProto) -> int:
        op, out = node.op_type, node.output[0]
        if op in CONV_OPS:
            weight = self.shape(node.input[3] if op == "QLinearConv" else node.input[1])
            # weight is (Cout, Cin/group, k...): every output element is a dot product of that length.
            return 2 * self.elements(out) * math.prod(weight[1:])
        if op in CONV_TRANSPOSE_OPS:
            weight = self.shape(node.input[1])  # (Cin, Cout/group, k...)
            return 2 * self.elements(node.input[0]) * math.prod(weight[1:])
        if op in GEMM_OPS:
            return 2 * self.elements(out) * self.inner_dim(node)
        if op in _POOL_OPS:
            return self.elements(out) * math.prod(_attr(node, "kernel_shape", [1]))
        if op in _REDUCE_OPS:
            return self.elements(node.input[0])
        if op in _PER_ELEMENT:
            return _PER_ELEMENT[op] * self.elements(out)
        if op in DATA_MOVEMENT_OPS:
            return 0
        return self.elements(out)  # elementwise, and any op we have no rule for

    def inner_dim(self, node: onnx.NodeProto) -> int:
        """K of a matrix product: the length of each output element's dot product."""
        a = self.shape(node.input[0])  # A comes first in every product op, quantized or not
        if node.op_type in ("Gemm", "FusedGemm", "QGemm") and _attr(node, "transA", 0):
            return a[0]
        return a[-1]

    def precision(self, node: onnx.NodeProto) -> str:
        op = node.op_type
        if op in _INT8_OPS:
            return "int8"
        if op in CONV_OPS | GEMM_OPS and len(node.input) >= 2:
            if self._dequantized(node.input[0]) and self._dequantized(node.input[1]):
                return "int8"  # QDQ: onnxruntime fuses DQ -> op -> Q into an int8 kernel
        if any(self.elem_type.get(o) in _HALF_TYPES for o in node.output):
            return "fp16"
        return "fp32"

    def _dequantized(self, name: str) -> bool:
        src = self.producer.get(name)
        return src is not None and src.op_type == "DequantizeLinear"

    def is_fused(self, node: onnx.NodeProto) -> bool:
        """True when the runtime runs no kernel for `node` (see NodeCost)."""
        op = node.op_type
        if node.output and all(o in self.constants for o in node.output if o):
            return True  # folded to a constant
        users = [c for o in node.output for c in self.consumers.get(o, [])]
        feeds_output = any(o in self.outputs for o in node.output)
        if op == "DequantizeLinear":
            # An activation's DQ disappears into the int8 kernels it feeds.
            return bool(users) and not feeds_output and all(u.op_type in _QDQ_FUSABLE for u in users)
        if op == "QuantizeLinear":
            src = self.producer.get(node.input[0])
            return src is not None and src.op_type in _QDQ_FUSABLE and all(u.op_type == "DequantizeLinear" for u in users)
        if op == "Transpose":
            # A transpose of the last two axes feeding only products becomes their transA/transB.
            perm = list(_attr(node, "perm", []))
            swaps_last = len(perm) >= 2 and perm[:-2] == list(range(len(perm) - 2)) and perm[-2:] == [len(perm) - 1, len(perm) - 2]
            return swaps_last and bool(users) and not feeds_output and all(u.op_type == "MatMul" for u in users)
        src = self.producer.get(node.input[0]) if node.input else None
        if src is None or src.op_type not in CONV_OPS | GEMM_OPS:
            return False
        single_user = len(self.consumers.get(node.input[0], [])) == 1 and node.input[0] not in self.outputs
        if op in _FUSABLE_ACTIVATIONS:
            return single_user
        if op == "BatchNormalization":
            return single_user and src.op_type in CONV_OPS
        if op in ("Mul", "Div") and src.op_type == "MatMul":
            return single_user and any(self._scalar(i) for i in node.input[1:])  # scale folded into the product
        return False

    def _scalar(self, name: str) -> bool:
        return name in self.constants and self.shapes.get(name) is not None and self.elements(name) == 1

    # -- memory -------------------------------------------------------------------------------

    def peak_activation_bytes(self) -> int:
        """Most activation bytes alive at once, walking the nodes in their (topological) order.

        A tensor lives from its producer (graph inputs: from the start) to its last consumer
        (graph outputs: to the end); constants and initializers are weights, not activations.
        """
        nodes = list(self.graph.node)
        end = len(nodes)
        span: dict[str, list[int]] = {}
        for inp in self.graph.input:
            if inp.name not in self.constants:
                span[inp.name] = [0, 0]
        for i, node in enumerate(nodes):
            for inp in node.input:
                if inp in span:
                    span[inp][1] = i
            for out in node.output:
                if out and out not in self.constants:
                    span[out] = [i, i]
        for out in self.outputs:
            if out in span:
                span[out][1] = end
        live = [0] * (end + 1)
        for name, (first, last) in span.items():
            size = self.bytes(name)
            for step in range(first, last + 1):
                live[step] += size
        return max(live)


def _itemsize(elem_type: int) -> int:
    if elem_type == onnx.TensorProto.UNDEFINED:
        return 4
    return helper.tensor_dtype_to_np_dtype(elem_type).itemsize


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default



def as_precision(cost: GraphCost, precision: str) -> GraphCost:
    """`cost` as if its convolutions and matmuls ran at `precision`: a stand-in for a quantized or
    fp16 file that does not exist yet (the search judges fp32 candidates). Bytes are left as they
    are, so the memory term stays conservative."""
    nodes = tuple(
        replace(n, precision=precision) if n.op in CONV_OPS or n.op in GEMM_OPS else n for n in cost.nodes
    )
    return replace(cost, nodes=nodes)
