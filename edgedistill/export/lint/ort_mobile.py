"""ONNX Runtime Mobile lint: does a reduced ONNX Runtime build have a kernel for every node?

A reduced (mobile) build of ONNX Runtime keeps only the operators named in its required-operators
config: lines `domain;opset[,opset...];Op1,Op2,...`, optionally `!globally_allowed_types;T1,T2`.
The config is read with ONNX Runtime's own parser (onnxruntime.tools.reduced_build_config_parser).

Semantics are those of ONNX Runtime's own checker for its pre-built mobile package
(onnxruntime/tools/mobile_helpers/check_model_can_use_ort_mobile_pkg.py, shipped up to 1.18):
operators are listed per opset, and a node is covered only when its op is listed for its domain
*at the opset the model imports that domain at*. So a config listing Conv for ai.onnx 12-15 does
not cover Conv in an opset-18 model. ai.onnx Constant nodes are exempt (ONNX Runtime turns them into
initializers when it loads the model). When the config reduces types globally, graph inputs and
node outputs must be of those types or int32/int64/bool, which the build keeps for shapes and
indices; per-operator type lists in a config are not checked.

Without a config, the model is checked against the full build: the CPU kernels registered in the
installed ONNX Runtime (`get_all_opkernel_def`), which the full ONNX Runtime Mobile package of the
same version (onnxruntime-android, onnxruntime-objc) also carries. A node passes when a kernel of
its domain and op covers the opset the model imports. (The pre-built *reduced* mobile package, with
its fixed operator list, was deprecated in 1.18 and removed in 1.19: a reduced build is now always
the user's own, and its config is what to pass.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto
from onnxruntime.tools.ort_format_model import GloballyAllowedTypesOpTypeImplFilter
from onnxruntime.tools.reduced_build_config_parser import parse_config

from edgedistill.errors import UserError
from edgedistill.export.lint.base import (
    ONNX_DOMAIN,
    Finding,
    LintJob,
    LintResult,
    NodeRef,
    iter_nodes,
    register_linter,
    tensor_types,
)

RUNTIME = "ort-mobile"
# The C++ type names a config's `!globally_allowed_types` uses, as ONNX element types.
_CPP_TYPES = {
    "float": TensorProto.FLOAT,
    "double": TensorProto.DOUBLE,
    "MLFloat16": TensorProto.FLOAT16,
    "BFloat16": TensorProto.BFLOAT16,
    "int8_t": TensorProto.INT8,
    "uint8_t": TensorProto.UINT8,
    "int16_t": TensorProto.INT16,
    "uint16_t": TensorProto.UINT16,
    "int32_t": TensorProto.INT32,
    "uint32_t": TensorProto.UINT32,
    "int64_t": TensorProto.INT64,
    "uint64_t": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
    "std::string": TensorProto.STRING,
}
# Kept by every reduced build for shapes, indices and masks, so never reported (as ORT's checker).
_ALWAYS_KEPT = frozenset({TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL})


@dataclass(frozen=True)
class OpsConfig:
    """A parsed required-operators config.

    `required`: domain -> opset -> op names; None when the config says every op is required.
    `allowed_types`: ONNX element types allowed globally; None when types are not reduced globally.
    """

    required: dict[str, dict[int, frozenset[str]]] | None
    allowed_types: frozenset[int] | None


def read_ops_config(path: Path) -> OpsConfig:
    """Parse a required-operators config with ONNX Runtime's own parser; bad files raise UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"ops config {path} does not exist: pass the required_operators.config your ONNX Runtime "
            "build was made with"
        )
    try:
        required, type_filter = parse_config(str(path), enable_type_reduction=True)
    except (ValueError, RuntimeError) as exc:  # the parser's errors for malformed lines
        raise UserError(
            f"{path.name} is not a required-operators config ({exc}): write lines as "
            "'domain;opset[,opset];Op1,Op2'"
        ) from exc
    allowed = None
    if isinstance(type_filter, GloballyAllowedTypesOpTypeImplFilter):
        unknown = sorted(set(type_filter.global_type_list()) - set(_CPP_TYPES))
        if unknown:
            raise UserError(
                f"{path.name} allows unknown types {', '.join(unknown)}: use C++ names such as "
                "float, int8_t, uint8_t"
            )
        allowed = frozenset(_CPP_TYPES[t] for t in type_filter.global_type_list())
    if required is not None:
        required = {d: {o: frozenset(ops) for o, ops in by.items()} for d, by in required.items()}
    return OpsConfig(required=required, allowed_types=allowed)


def installed_kernels() -> dict[tuple[str, str], tuple[tuple[int, int], ...]]:
    """(domain, op) -> opset ranges of the CPU kernels the installed ONNX Runtime registers."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

    kernels: dict[tuple[str, str], tuple[tuple[int, int], ...]] = {}
    for k in ort_c.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            key = (k.domain or ONNX_DOMAIN, k.op_name)
            kernels[key] = (*kernels.get(key, ()), tuple(k.version_range))
    return kernels


@register_linter(RUNTIME)
def lint_ort_mobile(job: LintJob) -> LintResult:
    """Check a shape-inferred model against a reduced build's required-operators config."""
    if job.ops_config is None:
        return _lint_full_build(job)
    config = read_ops_config(job.ops_config)
    reference = f"ORT Mobile required-operators config {job.ops_config}"
    types = tensor_types(job.model)
    findings = []
    if config.allowed_types is not None:
        initializers = {init.name for init in job.model.graph.initializer}
        for graph_input in job.model.graph.input:
            reason = _type_reason("graph input", graph_input.name, types, config.allowed_types)
            if graph_input.name not in initializers and reason:
                findings.append(Finding(node="", op="", domain="", reason=reason))
    for ref in iter_nodes(job.model):
        if ref.domain == ONNX_DOMAIN and ref.node.op_type == "Constant":
            continue  # loaded as an initializer, never run as a kernel
        reasons = [_op_reason(ref, config.required)]
        if config.allowed_types is not None:
            reasons += [_type_reason("output", o, types, config.allowed_types) for o in ref.node.output]
        findings += [
            Finding(node=ref.name, op=ref.node.op_type, domain=ref.domain, reason=r) for r in reasons if r
        ]
    return LintResult(RUNTIME, job.path, reference, tuple(findings))


def _lint_full_build(job: LintJob) -> LintResult:
    import onnxruntime

    kernels = installed_kernels()
    findings = []
    for ref in iter_nodes(job.model):
        if ref.domain == ONNX_DOMAIN and ref.node.op_type == "Constant":
            continue
        ranges = kernels.get((ref.domain, ref.node.op_type), ())
        if not any(low <= ref.opset <= high for low, high in ranges):
            where = ", ".join(f"{low}-{high}" for low, high in ranges) or "none"
            findings.append(Finding(
                node=ref.name, op=ref.node.op_type, domain=ref.domain,
                reason=f"{ref.domain} opset {ref.opset}: ONNX Runtime {onnxruntime.__version__} has no CPU kernel "
                f"for it (kernel opsets: {where}): convert the model to a covered opset or replace the op",
            ))
    reference = (
        f"CPU kernels of ONNX Runtime {onnxruntime.__version__} (the full ONNX Runtime Mobile package of "
        "that version); pass a required-operators config to check a reduced build"
    )
    return LintResult(RUNTIME, job.path, reference, tuple(findings))


def _op_reason(ref: NodeRef, required: dict[str, dict[int, frozenset[str]]] | None) -> str | None:
    """Why the node's op is not in the build at the model's opset, or None when it is."""
    op = ref.node.op_type
    by_opset = {} if required is None else required.get(ref.domain, {})
    if required is None or op in by_opset.get(ref.opset, ()):
        return None
    listed = sorted(opset for opset, ops in by_opset.items() if op in ops)
    if listed:
        where = f"the config lists {op} for {ref.domain} opsets {', '.join(map(str, listed))}"
    else:
        where = f"the config has no {ref.domain} {op}"
    return (
        f"{ref.domain} opset {ref.opset}: not in the reduced build's operators ({where}): convert the "
        "model to a listed opset or use an ONNX Runtime build whose config lists it"
    )


def _type_reason(
    what: str, name: str, types: dict[str, onnx.TypeProto.Tensor], allowed: frozenset[int]
) -> str | None:
    """Why a tensor's type is not kept by the build, or None (also when the type is unknown)."""
    tensor = types.get(name)
    if not name or tensor is None or tensor.elem_type in allowed | _ALWAYS_KEPT:
        return None
    kept = ", ".join(TensorProto.DataType.Name(t).lower() for t in sorted(allowed))
    return (
        f"{what} {name!r} is {TensorProto.DataType.Name(tensor.elem_type).lower()}; the reduced build "
        f"keeps {kept} (and int32, int64, bool for shapes and indices): convert it to a kept type"
    )
