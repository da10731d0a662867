"""PyTorch student -> ExecuTorch: a `.pte` program delegated to XNNPACK, run here to check it.

ExecuTorch is PyTorch's own on-device runtime; on Android and iOS CPUs its XNNPACK delegate runs
the program, and the same delegate runs it on this x86 CPU through `executorch.runtime`, so the
file is scored and timed here by the runtime a phone uses. The program is made from the student
itself (`torch.export`), not from its ONNX: fp32 as exported; int8 through PyTorch 2 export
quantization (PT2E) with XNNPACK's quantizer, symmetric int8 per-channel weights and int8
activations calibrated on the calibration split, the scheme XNNPACK's int8 kernels take.

ExecuTorch is an optional extra (`pip install -e '.[executorch]'`); it is imported lazily.
"""

from __future__ import annotations

import copy
import functools
from importlib import metadata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedistill.errors import Unmade, UserError
from edgedistill.export.eager import (
    FP32_TOLERANCE, Converted, MAX_SAMPLES, as_tensor, eager_rows, first_line, int8_tolerance, rows, stderr_silenced,
)
from edgedistill.export.parity import Parity, max_abs_err
from edgedistill.fileio import atomic_path, quiet

PRECISIONS = ("fp32", "int8")
try:
    RUNTIME = f"ExecuTorch {metadata.version('executorch')} (XNNPACK)"
except metadata.PackageNotFoundError:  # the extra is not installed: nothing is made or run with it
    RUNTIME = "ExecuTorch (XNNPACK)"
# fp32 parity measured 1.5e-8 on digits CNNs, within eager.FP32_TOLERANCE; int8 is held to
# eager.int8_tolerance against PT2E's reference module.


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


def export_pte(model: nn.Module, precision: str, dst: Path, calib_x: np.ndarray, check_x: np.ndarray) -> Converted:
    """`model` (one float input, batch first) as an XNNPACK-delegated program for batch 1 at
    `dst`, int8 calibrated on `calib_x`, and checked on `check_x` as this runtime runs it."""
    if precision not in PRECISIONS:
        raise UserError(f"ExecuTorch programs are made at {', '.join(PRECISIONS)}, not {precision!r}: pick one of those")
    student = copy.deepcopy(model).cpu().eval()
    sample = as_tensor(check_x[:1])
    # torch.export, torchao and XNNPACK's CPU probe log to stderr as they load and lower.
    with quiet(), quiet("torchao"), stderr_silenced(), torch.no_grad():
        try:
            reference = student if precision == "fp32" else _quantized(student, sample, calib_x)
            program = _lowered(reference, sample)
        except Exception as exc:  # torch.export or the lowering refuses this model: the run goes on without it
            raise Unmade(f"ExecuTorch could not convert the student at {precision} ({first_line(exc)})") from exc
    with atomic_path(dst) as tmp:
        tmp.write_bytes(program)
    got = run_pte(dst, check_x[:MAX_SAMPLES])
    want = eager_rows(reference, check_x[:MAX_SAMPLES])
    err = max_abs_err(got, want)
    tolerance = FP32_TOLERANCE if precision == "fp32" else int8_tolerance(want)
    return Converted(dst, precision, Parity(err, tolerance))


def _quantized(model: nn.Module, sample: torch.Tensor, calib_x: np.ndarray) -> nn.Module:
    """PT2E int8 for XNNPACK: observers inserted by its quantizer, calibrated, then converted to
    the reference int8 module (quantize/dequantize around float ops) that lowering fuses."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (sample,)).module(), quantizer)
    eager_rows(prepared, calib_x[:MAX_SAMPLES])
    return convert_pt2e(prepared)


def _lowered(model: nn.Module, sample: torch.Tensor) -> bytes:
    """The program's bytes: exported for `sample`'s shape, every op XNNPACK takes delegated to it."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported = torch.export.export(model, (sample,))
    return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def load_pte(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A call of the program's forward on one batch-1 input, as `executorch.runtime` runs it here."""
    method = _method(path)
    return lambda x: method.execute([as_tensor(x)])[0].numpy()


def timed_pte(path: Path, x: np.ndarray) -> Callable[[], object]:
    """The call a latency times: the program's forward on the batch-1 `x`, made a tensor once."""
    method, given = _method(path), [as_tensor(x)]
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


def input_shape(path: Path) -> tuple[int, ...]:
    """The shape of the program's one input (its batch is fixed at 1)."""
    meta = _runtime().load_program(str(path)).metadata("forward")
    return tuple(meta.input_tensor_meta(0).sizes())


def run_pte(path: Path, x: np.ndarray) -> np.ndarray:
    """The program's outputs on every sample of `x`, one at a time."""
    return rows(load_pte(path), x)


@functools.cache
def _runtime():  # noqa: ANN202  executorch's Runtime, typed only where it is installed
    """ExecuTorch's runtime, started once; its CPU probe's messages on stderr are not ours to show."""
    from executorch.runtime import Runtime

    with stderr_silenced():
        return Runtime.get()

