"""PyTorch student -> ExecuTorch: a `.pte` program delegated to XNNPACK, run here to check it.

ExecuTorch is PyTorch's own on-device runtime; on Android and iOS CPUs its XNNPACK delegate runs
the program, and the same delegate runs it on this x86 CPU through `executorch.runtime`, so the
file is scored and timed here by the runtime a phone uses. The program is made from the student
itself (`torch.export`), not from its ONNX: fp32 as exported; int8 through PyTorch 2 export
quantization (PT2E) with XNNPACK's quantizer, symmetric int8 per-channel weights and int8
activations calibrated on the calibration split, the scheme XNNPACK's int8 kernels take; or,
where the run's int8 ONNX is dynamic (a transformer's), XNNPACK's dynamic scheme: the same
weights, activations quantized per call. A student of named feeds (token ids) is converted
taking those its forward names, at their fixed length.

ExecuTorch is an optional extra (`pip install -e '.[executorch]'`); it is imported lazily.
"""

from __future__ import annotations

import copy
import functools
from importlib import metadata
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedistill.errors import Unmade, UserError
from edgedistill.export.eager import (
    FP32_TOLERANCE, Converted, Inputs, MAX_SAMPLES, as_tensor, dynamic_tolerance, eager_rows, feed_inputs,
    first_line, forward_names, int8_tolerance, model_inputs, rows, samples, stderr_silenced, typed_input,
)
from edgedistill.export.parity import Parity, max_abs_err
from edgedistill.fileio import atomic_path, quiet
from edgedistill.ortsession import Feed

PRECISIONS = ("fp32", "int8")
try:
    RUNTIME = f"ExecuTorch {metadata.version('executorch')} (XNNPACK)"
except metadata.PackageNotFoundError:  # the extra is not installed: nothing is made or run with it
    RUNTIME = "ExecuTorch (XNNPACK)"
# fp32 parity measured 1.5e-8 on digits CNNs, within eager.FP32_TOLERANCE; int8 is held to
# eager.int8_tolerance against PT2E's reference module.
# A program made from named feeds keeps their names, in its inputs' order, as a constant method
# (a program's own metadata has none), so it is run later on the same named feeds.
INPUT_NAMES = "input_names"
# ExecuTorch's ScalarType codes (c10's) of the input dtypes a student takes, as numpy's.
_SCALAR_DTYPES = {3: np.int32, 4: np.int64, 6: np.float32}


@functools.cache
def available() -> str | None:
    """None when ExecuTorch imports here; else why not, and the fix."""
    try:
        # Importing it loads torchao, which logs to stderr of CUDA kernels this CPU build lacks.
        with quiet(), quiet("torchao"), stderr_silenced():
            import executorch.exir  # noqa: F401
            import executorch.runtime  # noqa: F401
    except ImportError as exc:
        return f"ExecuTorch is not installed ({exc.name or exc}): pip install -e '.[executorch]'"
    return None


def export_pte(
    model: nn.Module, precision: str, dst: Path, calib_x: Feed, check_x: Feed, dynamic_error: float | None = None
) -> Converted:
    """`model` (batch first: one input array, or the named feeds its forward names, at the
    shapes `check_x` has) as an XNNPACK-delegated program for batch 1 at `dst`, checked on
    `check_x` as this runtime runs it. int8 is static, its activations calibrated on `calib_x`
    (of `check_x`'s shapes) and checked against PT2E's reference; or, given the run's int8
    ONNX's `dynamic_error` from the student, dynamic, checked as `eager.dynamic_tolerance` says."""
    if precision not in PRECISIONS:
        raise UserError(f"ExecuTorch programs are made at {', '.join(PRECISIONS)}, not {precision!r}: pick one of those")
    student = copy.deepcopy(model).cpu().eval()
    check = samples(model_inputs(student, check_x), 0, MAX_SAMPLES)
    sample = tuple(as_tensor(a[:1]) for a in check)
    names = forward_names(student) if isinstance(check_x, Mapping) else ()
    # torch.export, torchao and XNNPACK's CPU probe log to stderr as they load and lower.
    with quiet(), quiet("torchao"), stderr_silenced(), torch.no_grad():
        try:
            dynamic = dynamic_error is not None
            calib = model_inputs(student, calib_x)
            lowered = student if precision == "fp32" else _quantized(student, sample, calib, dynamic)
            reference = student if dynamic else lowered
            program = _lowered(lowered, sample, names)
        except Exception as exc:  # torch.export or the lowering refuses this model: the run goes on without it
            raise Unmade(f"ExecuTorch could not convert the student at {precision} ({first_line(exc)})") from exc
    with atomic_path(dst) as tmp:
        tmp.write_bytes(program)
    got = rows(load_pte(dst), check)
    want = eager_rows(reference, check)
    err = max_abs_err(got, want)
    if precision == "fp32":
        tolerance = FP32_TOLERANCE
    else:
        tolerance = int8_tolerance(want) if dynamic_error is None else dynamic_tolerance(want, dynamic_error)
    return Converted(dst, precision, Parity(err, tolerance))


def _quantized(model: nn.Module, sample: tuple[torch.Tensor, ...], calib: Inputs, dynamic: bool) -> nn.Module:
    """PT2E int8 for XNNPACK: observers inserted by its quantizer, calibrated (with `dynamic` only
    the weights: activations are ranged per call), then converted to the reference int8 module
    (quantize/dequantize around float ops) that lowering fuses."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    prepared = prepare_pt2e(torch.export.export(model, sample).module(), XNNPACKQuantizer().set_global(config))
    # Weights' observers see the weights as the calibration samples run, dynamic or not.
    eager_rows(prepared, samples(calib, 0, MAX_SAMPLES))
    return convert_pt2e(prepared)


def _lowered(model: nn.Module, sample: tuple[torch.Tensor, ...], names: tuple[str, ...]) -> bytes:
    """The program's bytes: exported for `sample`'s shapes (fixed: XNNPACK plans its memory for
    them), every op XNNPACK takes delegated to it (an int8 program's Linear layers; the embedding
    gather runs in ExecuTorch's portable kernels), and the feeds' `names` kept where there are any."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported = torch.export.export(model, sample)
    constants = {INPUT_NAMES: list(names)} if names else None
    lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()], constant_methods=constants)
    return lowered.to_executorch().buffer


def load_pte(path: Path) -> Callable[[Inputs], np.ndarray]:
    """A call of the program's forward on its batch-1 inputs, as `executorch.runtime` runs it here."""
    method = _method(path)
    return lambda xs: method.execute([as_tensor(a) for a in xs])[0].numpy()


def timed_pte(path: Path, x: np.ndarray) -> Callable[[], object]:
    """The call a latency times: the program's forward on the batch-1 `x`, made a tensor of the
    dtype the program declares once (an int64 input of token ids takes ones for float noise)."""
    dtype = _SCALAR_DTYPES.get(int(_meta(path).input_tensor_meta(0).dtype()), np.float32)
    method, given = _method(path), [as_tensor(typed_input(x, np.dtype(dtype)))]
    return lambda: method.execute(given)


def _method(path: Path):  # noqa: ANN202  executorch's Method, typed only where it is installed
    """The program's loaded forward method; a UserError in one line where it is no program."""
    if available() is not None:
        raise UserError(f"{path.name} is an ExecuTorch program, and {available()}")
    try:
        # XNNPACK probes the CPU as its first method loads, logging to stderr.
        with stderr_silenced():
            return _runtime().load_program(str(path)).load_method("forward")
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"{path} is not a program ExecuTorch loads ({exc}): make it again with edgedistill run") from exc


def _meta(path: Path):  # noqa: ANN202  executorch's MethodMeta, typed only where it is installed
    """What the program says of its forward: its inputs' shapes and dtypes."""
    return _runtime().load_program(str(path)).metadata("forward")


def input_shape(path: Path) -> tuple[int, ...]:
    """The shape of the program's first input (its batch is fixed at 1; a transformer's
    sequence length too)."""
    return tuple(_meta(path).input_tensor_meta(0).sizes())


def input_names(path: Path) -> tuple[str, ...]:
    """The named feeds the program takes, in order; none for a program of one input array."""
    program = _runtime().load_program(str(path))
    if INPUT_NAMES not in program.method_names:
        return ()
    return tuple(str(n) for n in program.load_method(INPUT_NAMES).execute([]))


def run_pte(path: Path, x: Feed) -> np.ndarray:
    """The program's outputs on every sample of `x` (one array, or named feeds of which it takes
    those it was made for), one at a time."""
    names = input_names(path) if isinstance(x, Mapping) else ()
    if isinstance(x, Mapping) and not names:
        raise UserError(f"{path.name} takes one input array, not named inputs: give it the array")
    return rows(load_pte(path), feed_inputs(x, names))


@functools.cache
def _runtime():  # noqa: ANN202  executorch's Runtime, typed only where it is installed
    """ExecuTorch's runtime, started once; its CPU probe's messages on stderr are not ours to show."""
    from executorch.runtime import Runtime

    with stderr_silenced():
        return Runtime.get()

