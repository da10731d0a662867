"""TensorRT compatibility lint: will TensorRT's ONNX parser take this file?

Checked against onnx-tensorrt's operator support matrix, encoded as data in
`edgedistill/export/data/tensorrt_onnx_ops.json` from https://github.com/onnx/onnx-tensorrt,
`docs/operators.md` on branch 10.1-GA (tag release/10.1-GA, commit
96e781103cfc4adf4a6bb557e94bac8e693f6f4c), i.e. TensorRT 10.1. Per node it reports:

- an op TensorRT marks unsupported, or one the matrix does not list;
- a node outside the ONNX domain, unless it is one of TensorRT's own TRT_* ops (the parser
  dispatches on the op name alone, so anything else would need a TensorRT plugin of that name);
- a tensor dtype outside the op's "Supported Types" (DOUBLE counts as FP32: the doc says TensorRT
  casts it down; INT64 is a supported type in TensorRT 10);
- the restrictions the doc lists that can be checked on the file alone (pooling rank, dilations,
  zero points of QuantizeLinear/DequantizeLinear, Resize modes, constant `axes` inputs, ...);

and, for the model, an ONNX opset outside the range the doc gives (9 to 20). Restrictions that need
TensorRT itself (If branch ranks, Loop shapes, Resize's iota `axes`) are not checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgedistill.errors import UserError
from edgedistill.export.lint.base import (
    ONNX_DOMAIN,
    Finding,
    LintJob,
    LintResult,
    NodeRef,
    data_file,
    iter_graphs,
    iter_nodes,
    opset_imports,
    register_linter,
    tensor_types,
)

RUNTIME = "tensorrt"
MATRIX_FILE = "tensorrt_onnx_ops.json"

# ONNX element types by the names the matrix uses. TensorRT's one FP8 type is E4M3FN, so the
# other float8 variants keep their ONNX names and are never in a supported list.
_TYPE_NAMES = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.FLOAT8E4M3FN: "FP8",
}


@dataclass(frozen=True)
class _Graph:
    """What the checks need to know about the model's tensors."""

    types: dict[str, onnx.TypeProto.Tensor]
    constants: frozenset[str]  # initializers and outputs of Constant nodes
    values: dict[str, onnx.TensorProto]  # the constants whose values are known


Check = Callable[[dict, NodeRef, _Graph], str | None]
_CHECKS: dict[str, Check] = {}


def _check(kind: str) -> Callable[[Check], Check]:
    """Register the function for the matrix's restriction checks of `kind`; it returns what
    breaks the restriction, or None."""

    def decorate(fn: Check) -> Check:
        _CHECKS[kind] = fn
        return fn

    return decorate


@cache
def matrix() -> dict:
    """The encoded support matrix (see the module docstring for its source)."""
    return json.loads(data_file(MATRIX_FILE).read_text(encoding="utf-8"))


def reference() -> str:
    """Names exactly what the TensorRT lint checks against."""
    src = matrix()["source"]
    return (
        f"onnx-tensorrt {src['file']} for TensorRT {src['tensorrt_version']} "
        f"(branch {src['branch']}, commit {src['commit']})"
    )


@register_linter(RUNTIME)
def lint_tensorrt(job: LintJob) -> LintResult:
    """Check a shape-inferred model against TensorRT's ONNX operator support matrix."""
    if job.ops_config is not None:
        raise UserError(
            "ops_config applies to ort-mobile only: TensorRT is checked against its operator "
            "matrix, so drop ops_config"
        )
    constants, values = _constants(job.model)
    graph = _Graph(types=tensor_types(job.model), constants=constants, values=values)
    findings = _opset_findings(job.model)
    for ref in iter_nodes(job.model):
        findings.extend(_node_findings(ref, graph))
    return LintResult(RUNTIME, job.path, reference(), tuple(findings))


def _constants(model: onnx.ModelProto) -> tuple[frozenset[str], dict[str, onnx.TensorProto]]:
    """Names of build-time constants and the values known for them, subgraphs included."""
    names: set[str] = set()
    values: dict[str, onnx.TensorProto] = {}
    for graph in iter_graphs(model):
        for init in graph.initializer:
            names.add(init.name)
            values[init.name] = init
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", ONNX_DOMAIN):
                names.update(node.output)
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    values[node.output[0]] = value
    return frozenset(names), values


def _opset_findings(model: onnx.ModelProto) -> list[Finding]:
    low, high = matrix()["opset_range"]
    opset = opset_imports(model.opset_import).get(ONNX_DOMAIN)
    if opset is None or low <= opset <= high:
        return []
    version = matrix()["source"]["tensorrt_version"]
    reason = (
        f"the model imports ONNX opset {opset}; TensorRT {version} parses opsets {low} to {high}: "
        f"re-export with an opset in that range"
    )
    return [Finding(node="", op="", domain=ONNX_DOMAIN, reason=reason)]


def _node_findings(ref: NodeRef, graph: _Graph) -> list[Finding]:
    op = ref.node.op_type
    if op in matrix()["tensorrt_ops"]:
        return []  # TensorRT's own ops: imported whatever their domain
    if ref.domain != ONNX_DOMAIN:
        reason = (
            f"op of domain {ref.domain!r}: TensorRT parses ONNX-domain ops only, so this needs a "
            f"TensorRT plugin named {op!r}"
        )
        return [_finding(ref, reason)]
    entry = matrix()["operators"].get(op)
    if entry is None:
        reason = f"not in TensorRT's ONNX operator matrix: this needs a TensorRT plugin named {op!r}"
        return [_finding(ref, reason)]
    if not entry["supported"]:
        return [_finding(ref, "marked unsupported in TensorRT's ONNX operator matrix: replace the op")]
    findings = [_finding(ref, reason) for reason in _dtype_reasons(ref, entry, graph)]
    for check in entry.get("checks", []):
        detail = _CHECKS[check["kind"]](check, ref, graph)
        if detail is not None:
            findings.append(_finding(ref, f"{check['text']} ({detail})"))
    return findings


def _finding(ref: NodeRef, reason: str) -> Finding:
    return Finding(node=ref.name, op=ref.node.op_type, domain=ref.domain, reason=reason)


def _dtype_reasons(ref: NodeRef, entry: dict, graph: _Graph) -> list[str]:
    """One reason per checked tensor whose dtype the op does not support (unknown dtypes pass)."""
    allowed = entry.get("dtypes")
    if not allowed:
        return []
    reasons = []
    for spec in entry.get("dtype_of", ["input:0"]):
        side, index = spec.split(":")
        names = ref.node.input if side == "input" else ref.node.output
        name = names[int(index)] if int(index) < len(names) else ""
        tensor = graph.types.get(name) if name else None
        if tensor is None:
            continue
        dtype = _TYPE_NAMES.get(tensor.elem_type) or TensorProto.DataType.Name(tensor.elem_type)
        if matrix()["cast_down"].get(dtype, dtype) not in allowed:
            reasons.append(
                f"{side} {name!r} is {dtype}; TensorRT supports {ref.node.op_type} for {', '.join(allowed)}"
            )
    return reasons


def _input(ref: NodeRef, index: int) -> str | None:
    """The name of an input that is present (optional inputs may be missing or "")."""
    inputs = ref.node.input
    return inputs[index] if index < len(inputs) and inputs[index] else None


def _attr(ref: NodeRef, name: str) -> object:
    """An attribute's value, or its default from the op's ONNX schema at the node's opset."""
    for attr in ref.node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    try:
        schema = onnx.defs.get_schema(ref.node.op_type, ref.opset, "")
    except onnx.defs.SchemaError:
        return None
    default = schema.attributes[name].default_value if name in schema.attributes else None
    if default is None or not default.type:
        return None
    value = onnx.helper.get_attribute_value(default)
    return value.decode() if isinstance(value, bytes) else value


def _value(graph: _Graph, name: str | None) -> np.ndarray | None:
    return numpy_helper.to_array(graph.values[name]) if name in graph.values else None


@_check("attr_in")
def _attr_in(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    value = _attr(ref, check["attr"])
    return None if value is None or value in check["allowed"] else f"{check['attr']} = {value!r}"


@_check("attr_all_ones")
def _attr_all_ones(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    value = _attr(ref, check["attr"])
    return f"{check['attr']} = {list(value)}" if value and any(v != 1 for v in value) else None


@_check("attr_absent")
def _attr_absent(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    present = [a.name for a in ref.node.attribute if a.name in check["attrs"]]
    return f"has {', '.join(present)}" if present else None


@_check("pads_symmetric")
def _pads_symmetric(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    pads = list(_attr(ref, check["attr"]) or [])
    half = len(pads) // 2
    return f"{check['attr']} = {pads}" if pads[:half] != pads[half:] else None


@_check("same_direction_activations")
def _same_direction_activations(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    if _attr(ref, "direction") != "bidirectional":
        return None
    acts = [a.decode() if isinstance(a, bytes) else a for a in _attr(ref, "activations") or []]
    half = len(acts) // 2
    return f"activations = {acts}" if acts[:half] != acts[half:] else None


@_check("single_output")
def _single_output(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    extra = [name for name in ref.node.output[1:] if name]
    return f"uses output {', '.join(repr(n) for n in extra)}" if extra else None


@_check("input_constant")
def _input_constant(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    name = _input(ref, check["input"])
    return f"input {name!r} is computed at run time" if name and name not in graph.constants else None


@_check("input_zero")
def _input_zero(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    value = _value(graph, _input(ref, check["input"]))
    # A zero point computed at run time is checked by TensorRT when it runs, not here.
    if value is None or not np.any(value != 0):
        return None
    return f"{_input(ref, check['input'])!r} holds non-zero values: quantize symmetrically"


@_check("input_false")
def _input_false(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    name = _input(ref, check["input"])
    if name is None:
        return None  # absent means False
    if name not in graph.constants:
        return f"input {name!r} is computed at run time"
    value = _value(graph, name)
    return f"input {name!r} is True" if value is not None and np.any(value) else None


@_check("input_below")
def _input_below(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    value = _value(graph, _input(ref, check["input"]))
    if value is None or value.size == 0 or int(value.max()) < check["limit"]:
        return None
    return f"{_input(ref, check['input'])!r} = {int(value.max())}"


@_check("input_rank")
def _input_rank(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    tensor = graph.types.get(_input(ref, check["input"]) or "")
    if tensor is None or not tensor.HasField("shape"):
        return None
    rank = len(tensor.shape.dim)
    return None if rank in check["ranks"] else f"input rank {rank}"


@_check("input_static_shape")
def _input_static_shape(check: dict, ref: NodeRef, graph: _Graph) -> str | None:
    tensor = graph.types.get(_input(ref, check["input"]) or "")
    if tensor is None or not tensor.HasField("shape"):
        return None
    dynamic = [d.dim_param or "?" for d in tensor.shape.dim if not d.HasField("dim_value")]
    return f"input has dynamic dimensions {dynamic}" if dynamic else None
