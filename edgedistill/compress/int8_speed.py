"""Why an int8 file is not faster than its fp32 source: read from the graphs as onnxruntime
optimizes them on this machine (which Q/DQ pairs it fused into int8 kernels, which ops it left in
float between a dequantize and a quantize, how many kernels each runs), whether it quantizes at
run time, and the model's size. Each finding says what to do about it. Other runtimes
(TensorRT) fuse in their own way, so for them the finding asks for a measurement on the device."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort

from edgedistill.fileio import quiet
from edgedistill.targets.profile import Target

QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"
# Under this many multiply-accumulates a kernel's fixed cost, not its arithmetic, sets the time
# (a core does about 1e9-1e10 MAC/s, a kernel call costs microseconds).
TINY_MACS = 1_000_000
_CLIPPING = frozenset({"Relu", "Clip"})
_ONNXRUNTIMES = frozenset({"onnxruntime", "ort-mobile"})


@dataclass(frozen=True)
class Graph:
    """One model as onnxruntime runs it here: its op types after optimization, in order."""

    ops: tuple[str, ...]
    # op types left in float between an activation's DequantizeLinear and a QuantizeLinear (unfused islands)
    islands: tuple[str, ...]

    @property
    def qdq(self) -> int:
        """Quantize and dequantize nodes left after optimization: each is a kernel of its own."""
        return sum(op in (QUANTIZE, DEQUANTIZE) for op in self.ops)


def optimized(path: Path) -> Graph:
    """`path` as onnxruntime's CPU provider optimizes it here (its saved optimized graph)."""
    with tempfile.TemporaryDirectory() as tmp, quiet():
        opts = ort.SessionOptions()
        # Extended optimization is the level of the QDQ fusions; "all" adds only layout changes.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    initializers = {i.name for i in graph.initializer}
    dq_activations = {
        n.output[0] for n in graph.node if n.op_type == DEQUANTIZE and n.input[0] not in initializers
    }
    quantized = {n.input[0] for n in graph.node if n.op_type == QUANTIZE}
    islands = tuple(
        n.op_type for n in graph.node
        if n.op_type not in (QUANTIZE, DEQUANTIZE) and any(i in dq_activations for i in n.input)
        and any(o in quantized for o in n.output)
    )
    return Graph(tuple(n.op_type for n in graph.node), islands)


def activation_type(path: Path) -> str | None:
    """"uint8" or "int8": the type of the activations the quantizer wrote (the zero point of
    the first QuantizeLinear), or None in a graph without one (dynamic int8)."""
    model = onnx.load(str(path), load_external_data=False)
    types = {i.name: i.data_type for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == QUANTIZE and len(node.input) > 2 and node.input[2] in types:
            return "int8" if types[node.input[2]] == onnx.TensorProto.INT8 else "uint8"
    return None


def explain(int8: Path, fp32: Path, target: Target, macs: int) -> tuple[str, ...]:
    """Why `int8` (a QDQ graph) is not faster than `fp32` on `target`, one finding a line, each
    with its fix; empty when the graphs show no cause. onnxruntime's optimized graph stands for
    onnxruntime and ONNX Runtime Mobile only: another runtime fuses in its own way."""
    if target.runtime not in _ONNXRUNTIMES:
        return (
            f"{target.runtime} builds its own int8 kernels on the device, which this machine cannot show: the "
            f"comparison is the cost model's; measure both files on {target.name} (--address {target.name}=...) to decide",
        )
    q, f = optimized(int8), optimized(fp32)
    findings = []
    if q.islands:
        kinds = ", ".join(f"{n} {op}" for op, n in Counter(q.islands).most_common())
        findings.append(
            f"onnxruntime left {len(q.islands)} op(s) in float between a dequantize and a quantize ({kinds}): "
            "each pays the conversions and keeps float arithmetic; "
            f"{_island_fix(q.islands, activation_type(int8))}"
        )
    dynamic = sum(op.startswith("DynamicQuantize") for op in q.ops)
    if dynamic:
        findings.append(
            f"it is dynamic int8: {dynamic} kernel(s) find each input's range and quantize it on every call "
            "(DynamicQuantize*), work fp32 never does; "
            "try int8-static (quantize.methods = [\"int8-static\"]), whose ranges are calibrated once"
        )
    extra = len(q.ops) - len(f.ops)
    if macs < TINY_MACS and extra > 0:
        findings.append(
            f"the model is tiny ({macs:,} MACs) and its int8 graph runs {len(q.ops)} kernels against fp32's {len(f.ops)} "
            f"({q.qdq} of them quantize or dequantize): per-kernel overhead, not arithmetic, sets its time; "
            "ship fp32 here, or give the tier a larger budget where int8 pays"
        )
    if int8.stat().st_size > fp32.stat().st_size:
        findings.append(
            f"the int8 file ({int8.stat().st_size:,} B) is larger than fp32's ({fp32.stat().st_size:,} B): "
            "its scales, zero points and Q/DQ nodes outweigh the weight bytes saved on so small a model; "
            "per-tensor scales (quantize.per_channel = false) make fewer of them"
        )
    return tuple(findings)


def _island_fix(islands: tuple[str, ...], activations: str | None) -> str:
    if activations == "int8" and set(islands) <= _CLIPPING:
        # Measured on onnxruntime 1.32 here: with uint8 activations a Relu after a Conv or Gemm
        # folds into the quantized range (zero point at the range's bottom); symmetric int8 keeps it.
        return ("with symmetric int8 activations a Relu cannot fold into the quantized range as it does with uint8: "
                "quantize with int8-static where the runtime takes uint8 activations")
    return "keep these ops in float (left out of quantization) or use a runtime with int8 kernels for them"
