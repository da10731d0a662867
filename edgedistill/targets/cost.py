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
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from edgedistill.errors import UserError
from edgedistill.export.onnx import load_onnx_checked
from edgedistill.fileio import quiet, working_directory

# The size given to every dynamic axis but the batch (a transformer's sequence) unless the caller
# says otherwise: a typical sentence-embedding input, well within BERT-family models' 512 positions.
DEFAULT_SEQ_LEN = 128
# Constant-only nodes whose inputs and outputs have at most this many elements are evaluated
# before shape inference: shape arithmetic is small; folding weights would only cost time.
_FOLD_MAX_ELEMENTS = 1024
_GRAPH_ATTRS = frozenset({onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS})

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


def graph_cost(path: Path, batch: int = 1, seq_len: int = DEFAULT_SEQ_LEN) -> GraphCost:
    """The cost of the ONNX file at `path` with its batch axis (every input's first dynamic axis)
    set to `batch` and every other dynamic axis (a transformer's sequence) set to `seq_len`.

    Shapes come from ONNX's shape inference; where it leaves a tensor's shape unknown (a Slice
    whose bounds are computed from an input's shape, as in exported attention), onnxruntime's
    symbolic shape inference fills it in. A shape still unknown where a rule needs it raises
    UserError.
    """
    if batch < 1:
        raise UserError(f"batch must be >= 1, got {batch}")
    if seq_len < 1:
        raise UserError(f"seq_len must be >= 1, got {seq_len}")
    model = _with_static_axes(load_onnx_checked(Path(path)), batch, seq_len)
    model = _infer_shapes(model, Path(path).name)
    return _Graph(model.graph, batch, seq_len).cost()


def _with_static_axes(model: onnx.ModelProto, batch: int, seq_len: int) -> onnx.ModelProto:
    """A copy of `model` whose inputs' dynamic axes are static: the first `batch`, the others
    `seq_len`. A named axis gets the same size everywhere it appears (outputs, value_info too)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.type.tensor_type.shape.dim for i in model.graph.input if i.name not in initializers]
    batch_names = {dims[0].dim_param for dims in inputs if dims and dims[0].dim_param}
    sizes = {d.dim_param: batch if d.dim_param in batch_names else seq_len for dims in inputs for d in dims if d.dim_param}
    for dims in inputs:
        for axis, dim in enumerate(dims):
            if not dim.HasField("dim_value"):
                # setting the value clears the name (a proto oneof)
                dim.dim_value = sizes.get(dim.dim_param, batch if axis == 0 else seq_len)
    for info in (*model.graph.output, *model.graph.value_info):
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param in sizes:
                dim.dim_value = sizes[dim.dim_param]
    return model


def _infer_shapes(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """`model` (changed in place) with the value_info of every shape inference can give; its nodes
    are left as they are, for the cost rules to judge.

    Inference runs on a view of the model whose constant-only nodes are evaluated first, so the
    shape arithmetic of an export (a Mod or Reshape of Constants bounding a Slice) arrives as a
    value. Then ONNX's inference and onnxruntime's symbolic inference alternate: ONNX's cannot
    bound a Slice by a shape computed at run time, which symbolic inference can; symbolic
    inference cannot take a Reduce's axes from an input (opset 18), which ONNX's can, and gives up
    on the whole graph at the first such node. So symbolic inference is run on just what the
    first unknown tensors are computed from, their shapes are added, and ONNX's inference goes on.
    """
    view = _onnx_infer(_fold_constants(model), name)
    tried: set[str] = set()
    while frontier := [t for t in _unknown_frontier(view.graph) if t not in tried]:
        tried.update(frontier)
        found = _symbolic_shapes(view, frontier)
        if not found:
            break  # what stays unknown is reported by the cost rule that needs it
        kept = [info for info in view.graph.value_info if info.name not in found]
        del view.graph.value_info[:]
        view.graph.value_info.extend([*kept, *found.values()])
        view = _onnx_infer(view, name)
    # The view's folded nodes are initializers there: their shapes are their dims.
    produced = {out for node in model.graph.node for out in node.output}
    folded = [
        helper.make_tensor_value_info(init.name, init.data_type, init.dims)
        for init in view.graph.initializer if init.name in produced
    ]
    del model.graph.value_info[:], model.graph.output[:]
    model.graph.value_info.extend([*view.graph.value_info, *folded])
    model.graph.output.extend(view.graph.output)
    return model


def _fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` in which each ONNX-domain node computed from small constants alone is
    replaced by its value, as an initializer (the graph's view for shape inference only)."""
    view = onnx.ModelProto()
    view.CopyFrom(model)
    opsets = {"": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)}
    values = {init.name: init for init in view.graph.initializer if math.prod(init.dims) <= _FOLD_MAX_ELEMENTS}
    kept = []
    for node in view.graph.node:
        foldable = node.domain in ("", "ai.onnx") and not any(a.type in _GRAPH_ATTRS for a in node.attribute)
        outs = _evaluate(node, values, opsets) if foldable and all(i in values for i in node.input if i) else None
        if outs is None:
            kept.append(node)
            continue
        for out, value in zip(node.output, outs):
            if out:  # "" is an optional output left out
                values[out] = numpy_helper.from_array(np.asarray(value), out)
                view.graph.initializer.append(values[out])
    del view.graph.node[:]
    view.graph.node.extend(kept)
    return view


def _evaluate(node: onnx.NodeProto, values: dict[str, onnx.TensorProto], opsets: dict[str, int]) -> list | None:
    """The node's outputs computed by ONNX's reference runtime, or None when it cannot or they
    are too large to be shape arithmetic."""
    from onnx.reference import ReferenceEvaluator

    feeds = {i: numpy_helper.to_array(values[i]) for i in node.input if i}
    try:
        outs = ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
    except Exception:  # noqa: BLE001 - any op it lacks or rejects: the node is then left to inference
        return None
    return outs if all(np.asarray(o).size <= _FOLD_MAX_ELEMENTS for o in outs) else None


def _onnx_infer(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{name}: shape inference failed ({first}): re-export it with fixed shapes") from exc


def _unknown_frontier(graph: onnx.GraphProto) -> list[str]:
    """Node outputs without a static shape whose node's inputs all have one: where inference
    stopped."""
    static = {init.name for init in graph.initializer}
    static.update(
        info.name for info in (*graph.input, *graph.value_info, *graph.output) if _static_dims(info) is not None
    )
    return [
        out for node in graph.node
        if all(i in static for i in node.input if i)
        for out in node.output if out and out not in static
    ]


def _static_dims(info: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    tensor = info.type.tensor_type
    if not tensor.HasField("shape") or not all(d.HasField("dim_value") for d in tensor.shape.dim):
        return None
    return tuple(d.dim_value for d in tensor.shape.dim)


def _symbolic_shapes(model: onnx.ModelProto, tensors: list[str]) -> dict[str, onnx.ValueInfoProto]:
    """Static shapes of `tensors` from onnxruntime's symbolic shape inference, run on the part
    of the graph they are computed from; those it cannot give are left out."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    needed, todo = set(), list(tensors)
    while todo:
        node = producer.get(todo.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            todo.extend(i for i in node.input if i)
    nodes = [node for node in graph.node if id(node) in needed]
    used = {i for node in nodes for i in node.input}
    types = {info.name: info.type.tensor_type.elem_type for info in (*graph.value_info, *graph.output)}
    part = helper.make_graph(
        nodes, graph.name, [i for i in graph.input if i.name in used],
        [helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.UNDEFINED), None) for t in tensors],
        [init for init in graph.initializer if init.name in used],
    )
    sub = helper.make_model(part, opset_imports=model.opset_import, ir_version=model.ir_version, functions=model.functions)
    # When it gives up it writes its partial model into the working directory: run it from a
    # folder that is then removed.
    with tempfile.TemporaryDirectory(prefix="edgedistill-shapes-") as tmp, quiet(), working_directory(Path(tmp)):
        try:
            inferred = SymbolicShapeInference.infer_shapes(sub)
        except Exception:  # noqa: BLE001 - it raises bare Exception (or TypeError) where it gives up
            return {}
    return {info.name: info for info in inferred.graph.output if _static_dims(info) is not None} if inferred else {}


class _Graph:
    """Shapes, producers and consumers of one inferred graph, and the rules that cost its nodes."""

    def __init__(self, graph: onnx.GraphProto, batch: int, seq_len: int) -> None:
        self.graph = graph
        self.batch = batch
        self.seq_len = seq_len
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
                f"tensor {name!r} has no static shape after shape inference with the batch at {self.batch} "
                f"and the other dynamic axes at {self.seq_len}: pass a seq_len the model takes (within "
                "its maximum positions), or export it with fixed sizes for every axis but the batch"
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
