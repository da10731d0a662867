"""Will this `.tflite` run on LiteRT, or on LiteRT for Microcontrollers? Read from the file itself.

Both linters are registered for `.tflite` files: like Core ML's, they check the converted file,
not the ONNX graph before conversion, since the operators LiteRT's converter wrote are the ones a
device resolves. On a phone every builtin operator has a kernel, so the finding there is a
custom (or TensorFlow "Flex") operator, which needs a runtime built with it. LiteRT Micro links
only the kernels its op resolver is given: the reference is the builtin operators
`MicroMutableOpResolver` can register (tflite-micro, shipped in `export/data/tflite_micro_ops.json`).
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from pathlib import Path

from edgedistill.export import litert
from edgedistill.export.lint.base import Finding, LintJob, LintResult, register_linter

LITERT = "litert"
LITERT_MICRO = "litert-micro"
SUFFIX = ".tflite"
_DOMAIN = "tflite"


@register_linter(LITERT, SUFFIX)
def lint_litert(job: LintJob) -> LintResult:
    """The operators of the file at `job.path` that are not LiteRT builtins."""
    return lint_tflite(job.path, LITERT)


@register_linter(LITERT_MICRO, SUFFIX)
def lint_litert_micro(job: LintJob) -> LintResult:
    """The operators of the file at `job.path` that LiteRT Micro's op resolver has no kernel for."""
    return lint_tflite(job.path, LITERT_MICRO)


@functools.cache
def micro_ops() -> dict:
    """The shipped list of LiteRT Micro's builtin and custom operators, with its source."""
    return json.loads((files("edgedistill.export") / "data" / "tflite_micro_ops.json").read_text())


def lint_tflite(path: Path, runtime: str) -> LintResult:
    """The findings for `runtime` ("litert" or "litert-micro") on the `.tflite` at `path`: one per
    operator the runtime has no kernel for, naming the operator and the fix."""
    ops = litert.graph_ops(path)
    builtin = set(_builtin_names())
    if runtime == LITERT:
        reference = f"LiteRT {litert.RUNTIME.split()[1]} builtin operators"
        findings = [_custom(op) for op in ops if op.name not in builtin]
    else:
        table = micro_ops()
        reference = f"tflite-micro MicroMutableOpResolver at {table['commit'][:12]} ({table['date']})"
        known = set(table["builtin"]) | set(table["custom"])
        findings = [_micro(op) if op.name in builtin else _custom(op) for op in ops if op.name not in known]
    return LintResult(runtime, path, reference, tuple(findings))


def node_name(op: litert.GraphOp) -> str:
    """`op` as a reader finds it: its position and the PyTorch module its output came from."""
    module = op.output.split(";")[0].rsplit("/", 1)[-1]
    return f"#{op.index} {module}" if module else f"#{op.index}"


def _custom(op: litert.GraphOp) -> Finding:
    return Finding(
        node_name(op), op.name, _DOMAIN,
        f"{op.name} is not a LiteRT builtin operator: the device's runtime must be built with this custom "
        "kernel, or the layer written with builtin ops (convolutions, matmuls, elementwise)",
    )


def _micro(op: litert.GraphOp) -> Finding:
    return Finding(
        node_name(op), op.name, _DOMAIN,
        f"LiteRT Micro has no {op.name} kernel: replace the layer that makes it with one Micro runs "
        "(CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, MEAN, ...), or register a custom kernel in the firmware",
    )


@functools.cache
def _builtin_names() -> tuple[str, ...]:
    """Every builtin operator name of the LiteRT schema the installed interpreter reads."""
    from ai_edge_litert import schema_py_generated as schema

    return tuple(n for n in vars(schema.BuiltinOperator) if n.isupper())
