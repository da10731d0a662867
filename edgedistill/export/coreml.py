"""PyTorch student -> Core ML: an mlprogram `.mlpackage` for iOS 17+, checked by its structure.

Core ML predicts only on macOS (its runtime is Apple's framework), so off a Mac nothing here runs
the package: `check_package` reads what the saved file itself says (its spec, the MIL program's
ops and the dtypes of its stored weights, its size) and names any op the iOS 17 opset, as
coremltools registers it, does not hold.

fp16: weights and activations in fp16 (`compute_precision` fp16), the precision the Neural Engine
runs. int8 is W8A8 where the student converts so: PyTorch 2 export quantization (PT2E) with
ExecuTorch's `CoreMLQuantizer` (symmetric int8 weights per output channel, uint8 activations
calibrated on the calibration inputs), converted to a program whose weights are stored int8
(`constexpr_affine_dequantize`) and whose activations pass through `quantize`/`dequantize` ops,
so the Neural Engine can run its int8 arithmetic. Where ExecuTorch (the quantizer's extra) is
not installed, or PT2E or coremltools refuses the quantized student, int8 is the fp16 program
with its weights stored int8 by `linear_quantize_weights` (W8A16: activations stay fp16), and
the artifact's notes say why. Which scheme a package holds is read from its own ops
(`CoreMLCheck.int8_scheme`).

coremltools is an optional extra (`pip install -e '.[coreml]'`), and ExecuTorch another
(`pip install -e '.[executorch]'`); both are imported lazily.
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
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgedistill.errors import Unmade, UserError
from edgedistill.export.eager import (
    MAX_SAMPLES, Inputs, as_tensor, eager_rows, first_line, forward_names, model_inputs, samples,
    stderr_silenced,
)
from edgedistill.export.executorch import available as executorch_available
from edgedistill.fileio import file_bytes, publish_folder, quiet
from edgedistill.ortsession import Feed

PRECISIONS = ("fp16", "int8")
INPUT_NAME = "x"
# The ops `check_package` holds the program to: iOS 17 is the deployment target the export sets.
OPSET = "iOS17"
NOT_RUN = "not run here: Core ML predicts on macOS only"
# The int8 schemes a package holds (`CoreMLCheck.int8_scheme`): int8 weights with int8
# activations, or int8 weights dequantized to fp16 with fp16 activations.
W8A8, W8A16 = "W8A8", "W8A16"
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

    @property
    def int8_scheme(self) -> str | None:
        """W8A8 where the program quantizes activations (a `quantize` op), W8A16 where only its
        weights are stored int8, None for a float program: read from the package, not from how
        it was asked to be made."""
        if "quantize" in self.ops:
            return W8A8
        return W8A16 if "int8" in self.weight_dtypes else None


@dataclass(frozen=True)
class CoreMLArtifact:
    """An `.mlpackage`, its precision, what its structure check found and, for int8, how it was
    quantized (`int8`: the scheme and its calibration, or why it is weights only)."""

    path: Path
    precision: str
    check: CoreMLCheck
    int8: str | None = None

    @property
    def notes(self) -> tuple[str, ...]:
        """What a report prints beside the package: that it is not run here, and how int8 was made."""
        return (self.check.note,) if self.int8 is None else (self.check.note, self.int8)


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


def export_coreml(
    model: nn.Module, sample: Feed, precision: str, dst: Path, calib_x: Feed | None = None
) -> CoreMLArtifact:
    """`model` (batch first: one input array, or the named feeds its forward names) as an iOS 17
    mlprogram for `sample`'s shapes (batch 1; a transformer's sequence length fixed) at `dst` (a
    `.mlpackage` folder, replaced if present). int8 needs `calib_x` (inputs of the same kind and
    shapes as `sample`, bar the batch): W8A8 calibrated on them where the student converts so, else int8 weights only,
    the artifact's `int8` note saying which and why. A conversion that fails raises `Unmade` and
    leaves `dst` as it was, with nothing half-written beside it."""
    if precision not in PRECISIONS:
        raise UserError(f"Core ML packages are made at {', '.join(PRECISIONS)}, not {precision!r}: pick one of those")
    if dst.suffix != ".mlpackage":
        raise UserError(f"a Core ML package is a folder ending .mlpackage, not {dst.name!r}: rename it")
    if precision == "int8" and calib_x is None:
        raise UserError("an int8 Core ML package calibrates its activations: pass calibration inputs (calib_x)")
    arrays = model_inputs(model, sample)
    if any(a.ndim < 1 or a.shape[0] != 1 for a in arrays):
        raise UserError(f"the Core ML sample must be inputs of batch 1, not shapes {[a.shape for a in arrays]}: pass x[:1]")
    why = available()
    if why is not None:
        raise UserError(why)
    student = copy.deepcopy(model).cpu().eval()  # the caller's model keeps its device and mode
    names = forward_names(student) if isinstance(sample, Mapping) else (INPUT_NAME,)
    xs = tuple(as_tensor(a) for a in arrays)
    # coremltools also draws a progress bar of each pass pipeline on stderr, over the run's own.
    with quiet(_COREMLTOOLS_LOG), contextlib.redirect_stderr(io.StringIO()):
        if precision == "fp16":
            mlmodel, int8 = _convert(student, xs, names), None
        else:
            calib = samples(model_inputs(student, calib_x), 0, MAX_SAMPLES)
            mlmodel, int8 = _int8(student, xs, names, calib)
        _save_replacing(mlmodel, dst)
    return CoreMLArtifact(path=dst, precision=precision, check=check_package(dst), int8=int8)


def _int8(student: nn.Module, xs: tuple[torch.Tensor, ...], names: tuple[str, ...], calib: Inputs) -> tuple[Any, str]:
    """The int8 program and its note: W8A8 where the quantized student converts, else the fp16
    program with int8 weights (W8A16) and why W8A8 was not made."""
    why = executorch_available() or (None if len(calib[0]) else "no calibration inputs to calibrate activations on")
    if why is None:
        try:
            mlmodel = _w8a8(student, xs, names, calib)
        except Exception as exc:  # noqa: BLE001 - PT2E or coremltools refuses the quantized student: weights only
            why = f"{type(exc).__name__}: {first_line(exc)}"
        else:
            if "quantize" in _program_ops(mlmodel.get_spec()):
                return mlmodel, f"{W8A8}: int8 weights and activations, activations calibrated on {len(calib[0])} samples"
            why = "the quantizer quantized none of this student's activations"
    return _int8_weights(_convert(student, xs, names)), f"int8 weights only ({W8A16}): {why}"


def _w8a8(student: nn.Module, xs: tuple[torch.Tensor, ...], names: tuple[str, ...], calib: Inputs) -> Any:
    """The student quantized by PT2E with Core ML's quantizer (observers inserted, calibrated on
    `calib` at batch 1, converted to quantize/dequantize around float ops), as an mlprogram;
    coremltools turns those ops into int8 weights and activation quantize/dequantize ops."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    # torch.export and torchao log as they trace; deep copies of the pattern graphs warn of a
    # pytree deprecation: neither is ours to fix.
    with quiet(), quiet("torchao"), stderr_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with _patterns_cached():
            prepared = prepare_pt2e(torch.export.export(student, xs).module(), _coreml_quantizer())
        eager_rows(prepared, calib)
        converted = convert_pt2e(prepared)
        with torch.no_grad():
            graph = torch.export.export(converted, xs).run_decompositions({})
    return _ct_convert(graph, xs, names)


def _coreml_quantizer() -> Any:
    """ExecuTorch's CoreMLQuantizer: symmetric, int8 weights per output channel, uint8 activations."""
    import coremltools.optimize.torch.quantization as ctq
    from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

    config = ctq.ModuleLinearQuantizerConfig(
        quantization_scheme="symmetric", activation_dtype=torch.quint8, weight_dtype=torch.qint8, weight_per_channel=True
    )
    return CoreMLQuantizer(ctq.LinearQuantizerConfig(global_config=config))


# The quantizer builds each of its ~400 pattern graphs with a strict torch.export on every
# prepare (about 100 s on two cores), though a pattern's graph depends only on its code, the
# functions it closes over and its example inputs' shapes: kept here, a process pays that once.
_PATTERNS: dict[tuple[Any, ...], Any] = {}


@contextlib.contextmanager
def _patterns_cached() -> Iterator[None]:
    """The quantizer's pattern graphs built once per process: each call gets a copy (its matcher
    rewrites the graph it is given). Where ExecuTorch no longer has the hook, patterns are built as it does."""
    import executorch.backends.apple.coreml.quantizer._coreml_quantizer_utils as utils

    build = getattr(utils, "_get_aten_graph_module", None)
    if build is None:
        yield
        return
    utils._get_aten_graph_module = _cached_pattern(build)
    try:
        yield
    finally:
        utils._get_aten_graph_module = build


def _cached_pattern(build: Callable[..., Any]) -> Callable[..., Any]:
    """`build` (the quantizer's pattern-graph maker) keeping each graph in `_PATTERNS`."""

    def cached(pattern: nn.Module, example_inputs: tuple[torch.Tensor, ...], is_cuda: bool = False) -> Any:
        key = _pattern_key(pattern, example_inputs, is_cuda)
        if key is None:
            return build(pattern, example_inputs, is_cuda)
        if key not in _PATTERNS:
            _PATTERNS[key] = build(pattern, example_inputs, is_cuda)
        return copy.deepcopy(_PATTERNS[key])

    return cached


def _pattern_key(pattern: nn.Module, example_inputs: tuple[torch.Tensor, ...], is_cuda: bool) -> tuple[Any, ...] | None:
    """What a pattern's graph depends on: its forward's code, what that closes over, its inputs'
    shapes and dtypes; None for a pattern that cannot be keyed so (it is built each time)."""
    forward = type(pattern).forward
    try:
        cells = tuple(c.cell_contents for c in forward.__closure__ or ())
        key = (forward.__code__, cells, tuple((tuple(x.shape), x.dtype) for x in example_inputs), is_cuda)
        hash(key)
    except (AttributeError, TypeError, ValueError):  # no tensor inputs, an empty cell, an unhashable value
        return None
    return key


def _convert(student: nn.Module, xs: tuple[torch.Tensor, ...], names: tuple[str, ...]) -> Any:
    """The student as an fp16 mlprogram. torch.export is tried first: it is the graph PyTorch
    maintains (TorchScript is deprecated) and the one the ExecuTorch export makes too, so one
    model fails or passes both the same way; `torch.jit.trace` is the fallback for a model
    torch.export or coremltools' ExportedProgram frontend refuses."""
    errors = []
    for name, graph in (("torch.export", _exported), ("torch.jit.trace", _traced)):
        try:
            return _ct_convert(graph(student, xs), xs, names)
        except Exception as exc:  # noqa: BLE001 - any converter failure means: try the next path
            errors.append(f"{name}: {type(exc).__name__}: {first_line(exc)}")
    raise Unmade("coremltools could not convert this student (" + "; ".join(errors) + ")")


def _exported(student: nn.Module, xs: tuple[torch.Tensor, ...]) -> Any:
    # coremltools takes the ATen-decomposed graph ("run_decompositions({})" = the core ATen set).
    with torch.no_grad():
        return torch.export.export(student, xs).run_decompositions({})


def _traced(student: nn.Module, xs: tuple[torch.Tensor, ...]) -> Any:
    with torch.no_grad():
        return torch.jit.trace(student, xs)


def _ct_convert(graph: Any, xs: tuple[torch.Tensor, ...], names: tuple[str, ...]) -> Any:
    import coremltools as ct

    # fp32 in the interface, as the student takes it: without a dtype an fp16 iOS 17 program
    # would make its input and output fp16 too, and callers would have to cast. Token ids are
    # int32, Core ML's integer input type (it has no int64; coremltools casts the graph's).
    inputs = [
        ct.TensorType(name=n, shape=tuple(x.shape), dtype=np.int32 if not x.is_floating_point() else np.float32)
        for n, x in zip(names, xs, strict=True)
    ]
    return ct.convert(
        graph,
        convert_to="mlprogram",
        inputs=inputs,
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
    operations = _operations(spec)
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


def _operations(spec: Any) -> Any:
    """The operations of an mlprogram spec's main function, in program order."""
    main = spec.mlProgram.functions["main"]
    return main.block_specializations[main.opset].operations


def _program_ops(spec: Any) -> frozenset[str]:
    """The op types of an mlprogram spec's main function."""
    return frozenset(op.type for op in _operations(spec))


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
