"""PyTorch student -> Core ML: an mlprogram `.mlpackage` for iOS 17+, checked by its structure.

Core ML predicts only on macOS (its runtime is Apple's framework), so off a Mac nothing here runs
the package: `check_package` reads what the saved file itself says (its spec, the MIL program's
ops and the dtypes of its stored weights, its size) and names any op the iOS 17 opset, as
coremltools registers it, does not hold.

fp16: weights and activations in fp16 (`compute_precision` fp16), the precision the Neural Engine
runs. int8: the same program with its weights stored int8 by `linear_quantize_weights`
(symmetric, per output channel) and dequantized to fp16 as it loads; activations stay fp16.

coremltools is an optional extra (`pip install -e '.[coreml]'`); it is imported lazily.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgedistill.errors import Unmade, UserError
from edgedistill.export.eager import as_tensor, first_line
from edgedistill.fileio import file_bytes, publish_folder, quiet

PRECISIONS = ("fp16", "int8")
INPUT_NAME = "x"
# The ops `check_package` holds the program to: iOS 17 is the deployment target the export sets.
OPSET = "iOS17"
NOT_RUN = "not run here: Core ML predicts on macOS only"
# MIL / feature dtype names (protobuf enum names) -> the short names this package reports.
_DTYPE_NAMES = {
    "FLOAT16": "fp16", "FLOAT32": "fp32", "FLOAT64": "fp64", "BFLOAT16": "bf16", "DOUBLE": "fp64",
}


@dataclass(frozen=True)
class CoreMLCheck:
    """What can be checked of an .mlpackage off macOS: its spec, ops, weight dtypes and size."""

    ops: dict[str, int]  # op type -> count in the mlprogram's main function
    weight_dtypes: tuple[str, ...]  # dtypes of the stored weight tensors, sorted unique
    inputs: tuple[str, ...]  # "name: 1x1x8x8 fp32"
    outputs: tuple[str, ...]
    spec_version: int
    bytes: int  # total size of the package folder's files
    unsupported: tuple[str, ...]  # ops not in the iOS 17 mlprogram opset (empty when fine)
    # (node, op) of each operation whose op is in `unsupported`, in program order: what a lint names
    unsupported_nodes: tuple[tuple[str, str], ...] = ()
    note: str = NOT_RUN


@dataclass(frozen=True)
class CoreMLArtifact:
    """An `.mlpackage`, its precision and what its structure check found."""

    path: Path
    precision: str
    check: CoreMLCheck


# coremltools logs, on import and on each convert, that this torch is newer than it was tested
# with and that its macOS-only runtime is absent: expected here, so silenced around its calls.
_COREMLTOOLS_LOG = "coremltools"


@functools.cache
def available() -> str | None:
    """None when coremltools imports here; else one line saying why and the fix."""
    try:
        with quiet(_COREMLTOOLS_LOG):
            import coremltools  # noqa: F401
            import coremltools.optimize.coreml  # noqa: F401
    except ImportError as exc:
        return f"coremltools is not installed ({exc.name or exc}): pip install -e '.[coreml]'"
    return None


def export_coreml(model: nn.Module, sample: np.ndarray, precision: str, dst: Path) -> CoreMLArtifact:
    """`model` (one float input, batch first) as an iOS 17 mlprogram for `sample`'s shape (batch 1)
    at `dst` (a `.mlpackage` folder, replaced if present). A conversion that fails raises `Unmade`
    and leaves `dst` as it was, with nothing half-written beside it."""
    if precision not in PRECISIONS:
        raise UserError(f"Core ML packages are made at {', '.join(PRECISIONS)}, not {precision!r}: pick one of those")
    if dst.suffix != ".mlpackage":
        raise UserError(f"a Core ML package is a folder ending .mlpackage, not {dst.name!r}: rename it")
    if sample.ndim < 1 or sample.shape[0] != 1:
        raise UserError(f"the Core ML sample must be one input of batch 1, not shape {sample.shape}: pass x[:1]")
    why = available()
    if why is not None:
        raise UserError(why)
    student = copy.deepcopy(model).cpu().eval()  # the caller's model keeps its device and mode
    x = as_tensor(sample)
    # coremltools also draws a progress bar of each pass pipeline on stderr, over the run's own.
    with quiet(_COREMLTOOLS_LOG), contextlib.redirect_stderr(io.StringIO()):
        mlmodel = _convert(student, x)
        if precision == "int8":
            mlmodel = _int8_weights(mlmodel)
        _save_replacing(mlmodel, dst)
    return CoreMLArtifact(path=dst, precision=precision, check=check_package(dst))


def _convert(student: nn.Module, x: torch.Tensor) -> Any:
    """The student as an fp16 mlprogram. torch.export is tried first: it is the graph PyTorch
    maintains (TorchScript is deprecated) and the one the ExecuTorch export makes too, so one
    model fails or passes both the same way; `torch.jit.trace` is the fallback for a model
    torch.export or coremltools' ExportedProgram frontend refuses."""
    errors = []
    for name, graph in (("torch.export", _exported), ("torch.jit.trace", _traced)):
        try:
            return _ct_convert(graph(student, x), tuple(x.shape))
        except Exception as exc:  # noqa: BLE001 - any converter failure means: try the next path
            errors.append(f"{name}: {type(exc).__name__}: {first_line(exc)}")
    raise Unmade("coremltools could not convert this student (" + "; ".join(errors) + ")")


def _exported(student: nn.Module, x: torch.Tensor) -> Any:
    # coremltools takes the ATen-decomposed graph ("run_decompositions({})" = the core ATen set).
    with torch.no_grad():
        return torch.export.export(student, (x,)).run_decompositions({})


def _traced(student: nn.Module, x: torch.Tensor) -> Any:
    with torch.no_grad():
        return torch.jit.trace(student, (x,))


def _ct_convert(graph: Any, shape: tuple[int, ...]) -> Any:
    import coremltools as ct

    return ct.convert(
        graph,
        convert_to="mlprogram",
        # fp32 in the interface, as the student takes it: without a dtype an fp16 iOS 17 program
        # would make its input and output fp16 too, and callers would have to cast.
        inputs=[ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)],
        outputs=[ct.TensorType(dtype=np.float32)],
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16,
    )


def _int8_weights(mlmodel: Any) -> Any:
    """Weights stored int8, symmetric per output channel, dequantized to fp16 on load."""
    import coremltools.optimize.coreml as cto

    # weight_threshold 0: every conv/linear weight, not only those over coremltools' default 2048
    # elements, so an int8 package of a small student holds no fp16 weight matrices.
    op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel", weight_threshold=0)
    return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))


def _save_replacing(mlmodel: Any, dst: Path) -> None:
    """Save into a temporary sibling folder, then swap it in for `dst`: a failure leaves `dst`
    as it was and removes the temporary folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    try:
        staged = tmp / dst.name
        mlmodel.save(str(staged))
        publish_folder(staged)
        old = tmp / "old.mlpackage"
        # A folder cannot be os.replace'd onto a non-empty one: move the old one aside first.
        if dst.exists():
            os.replace(dst, old)
        os.replace(staged, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_package(path: Path) -> CoreMLCheck:
    """What the saved package at `path` says of itself: its main function's ops, the dtypes of its
    stored weights, its interface, spec version, size and the ops outside the iOS 17 opset."""
    why = available()
    if why is not None:
        raise UserError(why)
    if not path.is_dir():
        raise UserError(f"no Core ML package at {path}: export one first")
    import coremltools as ct

    with quiet(_COREMLTOOLS_LOG):
        spec = ct.utils.load_spec(str(path))
    if not spec.HasField("mlProgram"):
        raise UserError(f"{path} is not an mlprogram (a neural network package): re-export it")
    main = spec.mlProgram.functions["main"]
    operations = main.block_specializations[main.opset].operations
    ops = dict(collections.Counter(op.type for op in operations))
    known = _opset_ops(OPSET)
    outside = tuple((_node_name(op), op.type) for op in operations if op.type not in known)
    return CoreMLCheck(
        ops=ops,
        weight_dtypes=tuple(sorted({d for op in operations if (d := _weight_dtype(op)) is not None})),
        inputs=tuple(_feature(f) for f in spec.description.input),
        outputs=tuple(_feature(f) for f in spec.description.output),
        spec_version=spec.specificationVersion,
        bytes=file_bytes(path),
        unsupported=tuple(sorted({op for _, op in outside})),
        unsupported_nodes=outside,
    )


@functools.cache
def _opset_ops(opset: str) -> frozenset[str]:
    """The core op types coremltools' MIL registry holds for `opset` (importing coremltools
    registers every op definition)."""
    import coremltools as ct
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    version = getattr(ct.target, opset)
    return frozenset(op for op, versions in SSAOpRegistry.core_ops.items() if version in versions)


def _node_name(op: Any) -> str:
    """An operation's name as coremltools writes it (its `name` attribute), else its first output's."""
    name = op.attributes.get("name")
    strings = name.immediateValue.tensor.strings.values if name is not None else ()
    return strings[0] if strings else (op.outputs[0].name if op.outputs else op.type)


def _weight_dtype(op: Any) -> str | None:
    """The dtype a weight is stored in, for a const (a float tensor of rank >= 1) or a constexpr
    (its largest attribute, the packed data; the scales beside it are not weights); else None."""
    if op.type == "const":
        tensor = op.outputs[0].type.tensorType
        dtype = _mil_dtype(tensor.dataType)
        return dtype if tensor.rank >= 1 and _is_weight_dtype(dtype) else None
    if op.type.startswith("constexpr_"):
        tensors = [v.type.tensorType for v in op.attributes.values() if v.type.HasField("tensorType")]
        data = max(tensors, key=_elements, default=None)
        return None if data is None else _mil_dtype(data.dataType)
    return None


def _is_weight_dtype(dtype: str) -> bool:
    """Weights are float or packed integers of 8 bits or fewer; int32/bool/string consts are op
    parameters (pads, strides, shapes), not weights."""
    if dtype.startswith(("fp", "bf")):
        return True
    bits = dtype.removeprefix("u").removeprefix("int")
    return dtype.startswith(("int", "uint")) and bits.isdigit() and int(bits) <= 8


def _elements(tensor: Any) -> int:
    return int(np.prod([d.constant.size for d in tensor.dimensions])) if tensor.dimensions else 1


def _mil_dtype(code: int) -> str:
    from coremltools.proto import MIL_pb2

    name = MIL_pb2.DataType.Name(code)
    return _DTYPE_NAMES.get(name, name.lower())


def _feature(feature: Any) -> str:
    """"name: 1x10 fp32" for a multi-array feature; the feature's kind for anything else."""
    from coremltools.proto import FeatureTypes_pb2

    kind = feature.type.WhichOneof("Type")
    if kind != "multiArrayType":
        return f"{feature.name}: {kind}"
    array = feature.type.multiArrayType
    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
    shape = "x".join(str(d) for d in array.shape) or "?"
    return f"{feature.name}: {shape} {_DTYPE_NAMES.get(dtype, dtype.lower())}"
