"""PyTorch student -> LiteRT: a `.tflite` flatbuffer, run here by LiteRT's interpreter to check it.

LiteRT (formerly TensorFlow Lite) is what most Android apps ship, and LiteRT for Microcontrollers
runs the same flatbuffer on Cortex-M boards. The file is made from the student itself through
`litert-torch` (torch.export, then LiteRT's converter), not from its ONNX:
- fp32 as exported;
- fp16: the fp32 file with its weights cast to fp16 by `ai-edge-quantizer` (half the bytes; a
  CPU dequantizes them at load and computes in fp32, a GPU delegate in fp16);
- int8: full-integer, by PT2E with litert-torch's quantizer: symmetric per-channel int8 weights,
  int8 activations calibrated on the calibration split, int8 input and output (the form
  LiteRT Micro and NPUs take; `load_tflite` quantizes the input and dequantizes the output).
`ai-edge-litert`'s interpreter runs every file here with XNNPACK, as phones run it.

LiteRT is an optional extra (`pip install -e '.[litert]'`); it is imported lazily.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
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

PRECISIONS = ("fp32", "fp16", "int8")
try:
    RUNTIME = f"LiteRT {metadata.version('ai-edge-litert')} (XNNPACK)"
except metadata.PackageNotFoundError:  # the extra is not installed: nothing is made or run with it
    RUNTIME = "LiteRT (XNNPACK)"
# fp16 weights move each output by about 2^-11 of the weights' scale per layer; the same relative
# tolerance as the fp16 ONNX's check (export.fp16), against the student's largest output.
FP16_TOLERANCE = 1e-2


@functools.cache
def available() -> str | None:
    """None when litert-torch and LiteRT's interpreter import here; else why not, and the fix."""
    try:
        # litert-torch loads jax and torchao, which log to stderr as they start.
        with quiet(), quiet("torchao"), quiet("absl"), stderr_silenced():
            import ai_edge_litert.interpreter  # noqa: F401
            import ai_edge_quantizer  # noqa: F401
            import litert_torch  # noqa: F401
    except ImportError as exc:
        return f"LiteRT is not installed ({exc.name or exc}): pip install -e '.[litert]'"
    return None


def export_tflite(model: nn.Module, precision: str, dst: Path, calib_x: np.ndarray, check_x: np.ndarray) -> Converted:
    """`model` (one float input, batch first) as a batch-1 `.tflite` at `dst`, int8 calibrated on
    `calib_x`, and checked on `check_x` as LiteRT's interpreter runs it."""
    if precision not in PRECISIONS:
        raise UserError(f"LiteRT files are made at {', '.join(PRECISIONS)}, not {precision!r}: pick one of those")
    student = copy.deepcopy(model).cpu().eval()
    sample = as_tensor(check_x[:1])
    # The converter prints its progress and MLIR statistics to stderr, from Python and C++.
    with quiet(), quiet("torchao"), quiet("absl"), stderr_silenced(), torch.no_grad():
        try:
            reference, flat = _converted(student, precision, sample, calib_x)
        except Exception as exc:  # torch.export or LiteRT's converter refuses this model: the run goes on without it
            raise Unmade(f"LiteRT could not convert the student at {precision} ({first_line(exc)})") from exc
    with atomic_path(dst) as tmp:
        tmp.write_bytes(flat)
    got = run_tflite(dst, check_x[:MAX_SAMPLES])
    want = eager_rows(reference, check_x[:MAX_SAMPLES])
    tolerance = {
        "fp32": FP32_TOLERANCE,
        "fp16": FP16_TOLERANCE * float(np.abs(want).max(initial=0.0)) + FP32_TOLERANCE,
        "int8": int8_tolerance(want),
    }[precision]
    return Converted(dst, precision, Parity(max_abs_err(got, want), tolerance))


def _converted(student: nn.Module, precision: str, sample: torch.Tensor, calib_x: np.ndarray) -> tuple[nn.Module, bytes]:
    """The module the file is checked against and the file's bytes at `precision`."""
    import litert_torch

    if precision == "int8":
        reference, config = _quantized(student, sample, calib_x)
        return reference, litert_torch.convert(reference, (sample,), quant_config=config).model_content()
    flat = litert_torch.convert(student, (sample,)).model_content()
    return student, _fp16_weights(flat) if precision == "fp16" else flat


def _quantized(model: nn.Module, sample: torch.Tensor, calib_x: np.ndarray):  # noqa: ANN202  litert-torch's types
    """PT2E full-integer int8 with litert-torch's quantizer (symmetric per-channel weights,
    histogram-calibrated int8 activations), converted to the reference module the converter
    lowers, and the quantization config that tells the converter so."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (sample,)).module(), quantizer)
    eager_rows(prepared, calib_x[:MAX_SAMPLES])
    # Unfolded: the converter folds the weights' quantize ops itself.
    return convert_pt2e(prepared, fold_quantize=False), QuantConfig(pt2e_quantizer=quantizer)


def _fp16_weights(flat: bytes) -> bytes:
    """The fp32 file with the weights of every op that has them cast to fp16 (ai-edge-quantizer's
    float casting, weight-only: activations stay fp32)."""
    from ai_edge_quantizer import quantizer, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    recipes = recipe_manager.RecipeManager()
    recipes.add_weight_only_config(
        regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING
    )
    q = quantizer.Quantizer(flat, recipes.get_quantization_recipe())
    return bytes(q.quantize(enable_progress_report=False).quantized_model)


def interpreter(path: Path, delegates: bool = True):  # noqa: ANN201  ai-edge-litert's Interpreter
    """LiteRT's interpreter on `path`, tensors allocated: with XNNPACK as phones run it, or, for
    reading the graph, with the builtin kernels only (XNNPACK folds ops into one delegate node)."""
    if available() is not None:
        raise UserError(f"{path.name} is a LiteRT file, and {available()}")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with stderr_silenced():  # XNNPACK says on stderr that it was created
            it = Interpreter(model_path=str(path), experimental_op_resolver_type=kind)
            it.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"{path} is not a file LiteRT loads ({first_line(exc)}): make it again with edgedistill run") from exc
    return it


def load_tflite(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A call of the file on one batch-1 float input, as LiteRT's interpreter runs it here: an
    int8 input is quantized with the file's own scale, an int8 output dequantized."""
    it = interpreter(path)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    to_input, from_output = _input_cast(inp), _output_cast(out)

    def call(x: np.ndarray) -> np.ndarray:
        it.set_tensor(inp["index"], to_input(x))
        it.invoke()
        return from_output(it.get_tensor(out["index"]))

    return call


def timed_tflite(path: Path, x: np.ndarray) -> Callable[[], np.ndarray]:
    """The call a latency times: the interpreter on the batch-1 `x`, quantized once where the
    file takes int8 (numpy's casts cost more than a tiny model's invoke; an app does them natively)."""
    it = interpreter(path)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    given = _input_cast(inp)(x)

    def call() -> np.ndarray:
        it.set_tensor(inp["index"], given)
        it.invoke()
        return it.get_tensor(out["index"])

    return call


def _input_cast(detail: dict) -> Callable[[np.ndarray], np.ndarray]:
    """float32 for a float input; else onto the input's integer grid with its scale and zero point."""
    if detail["dtype"] == np.float32:
        return lambda x: np.asarray(x, np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return lambda x: np.clip(np.rint(np.asarray(x, np.float32) / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _output_cast(detail: dict) -> Callable[[np.ndarray], np.ndarray]:
    """An output in float32: as it is for a float output, dequantized with its scale when int8."""
    if detail["dtype"] == np.float32:
        return lambda y: y
    scale, zero = detail["quantization"]
    return lambda y: ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def input_shape(path: Path) -> tuple[int, ...]:
    """The shape of the file's one input (its batch is fixed at 1)."""
    return tuple(int(d) for d in interpreter(path, delegates=False).get_input_details()[0]["shape"])


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    """The file's outputs on every sample of `x`, one at a time."""
    return rows(load_tflite(path), x)


@dataclass(frozen=True)
class GraphOp:
    """One operator of a `.tflite` graph as the builtin interpreter reads it: its position, its
    builtin (or custom) name, and the name of its first output tensor (the PyTorch module it came from)."""

    index: int
    name: str
    output: str


def graph_ops(path: Path) -> tuple[GraphOp, ...]:
    """The file's operators in execution order, as LiteRT's builtin kernels (no delegate) see them."""
    it = interpreter(path, delegates=False)
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    return tuple(
        GraphOp(op["index"], op["op_name"], names.get(int(op["outputs"][0]), "") if len(op["outputs"]) else "")
        for op in it._get_ops_details()  # the interpreter's only reading of the graph's operators
    )


def arena_bytes(path: Path) -> int:
    """The activation arena the file needs at batch 1, planned as LiteRT Micro's greedy memory
    planner plans it: every tensor an operator writes (and the graph's inputs) lives from its
    first write to its last read, and the largest are placed first, each at the lowest offset
    free of the tensors whose lives overlap its own. Weights stay in flash and are not counted;
    Micro's per-operator scratch buffers and persistent kernel data come on top."""
    it = interpreter(path, delegates=False)
    ops = it._get_ops_details()
    sizes = {t["index"]: int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize for t in it.get_tensor_details()}
    life: dict[int, list[int]] = {int(d["index"]): [0, 0] for d in it.get_input_details()}
    for step, op in enumerate(ops):
        for t in op["outputs"]:
            life.setdefault(int(t), [step, step])
        for t in op["inputs"]:
            if int(t) in life:
                life[int(t)][1] = step
    for d in it.get_output_details():
        life.setdefault(int(d["index"]), [len(ops), len(ops)])[1] = len(ops)
    return _greedy_arena({t: (sizes[t], *span) for t, span in life.items()})


def _greedy_arena(tensors: dict[int, tuple[int, int, int]]) -> int:
    """The arena's size when each tensor (bytes, first step, last step), largest first, takes the
    lowest offset that no placed tensor alive at the same time occupies."""
    placed: list[tuple[int, int, int, int]] = []  # offset, bytes, first, last
    top = 0
    for size, first, last in sorted(tensors.values(), key=lambda t: -t[0]):
        clashes = sorted((o, o + s) for o, s, f, l in placed if f <= last and first <= l)
        offset = 0
        for start, end in clashes:
            if offset + size <= start:
                break
            offset = max(offset, end)
        placed.append((offset, size, first, last))
        top = max(top, offset + size)
    return top
