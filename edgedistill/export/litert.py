"""PyTorch student -> LiteRT: a `.tflite` flatbuffer, run here by LiteRT's interpreter to check it.

LiteRT (formerly TensorFlow Lite) is what most Android apps ship, and LiteRT for Microcontrollers
runs the same flatbuffer on Cortex-M boards. The file is made from the student itself through
`litert-torch` (torch.export, then LiteRT's converter), not from its ONNX:
- fp32 as exported;
- fp16: the fp32 file with its weights cast to fp16 by `ai-edge-quantizer` (half the bytes; a
  CPU dequantizes them at load and computes in fp32, a GPU delegate in fp16);
- int8: full-integer, by PT2E with litert-torch's quantizer: symmetric per-channel int8 weights,
  int8 activations calibrated on the calibration split, int8 input and output (the form
  LiteRT Micro and NPUs take; `load_tflite` quantizes the input and dequantizes the output);
  or dynamic-range: the fp32 file's weights made int8 by ai-edge-quantizer, activations
  quantized per call (a transformer's, where the run's int8 ONNX is dynamic too).
`ai-edge-litert`'s interpreter runs every file here with XNNPACK, as phones run it.

LiteRT is an optional extra (`pip install -e '.[litert]'`); it is imported lazily.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
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


def export_tflite(
    model: nn.Module, precision: str, dst: Path, calib_x: Feed, check_x: Feed, dynamic_error: float | None = None
) -> Converted:
    """`model` (batch first: one input array, or the named feeds its forward names, at the
    shapes `check_x` has) as a batch-1 `.tflite` at `dst`, checked on `check_x` as LiteRT's
    interpreter runs it. int8 is full-integer, its activations calibrated on `calib_x` (of
    `check_x`'s shapes) and checked against PT2E's reference; or, given the run's int8 ONNX's
    `dynamic_error` from the student, dynamic-range (int8 weights, float input and output,
    activations quantized at run time), checked as `eager.dynamic_tolerance` says."""
    if precision not in PRECISIONS:
        raise UserError(f"LiteRT files are made at {', '.join(PRECISIONS)}, not {precision!r}: pick one of those")
    student = copy.deepcopy(model).cpu().eval()
    check = samples(model_inputs(student, check_x), 0, MAX_SAMPLES)
    sample = _Sample(tuple(as_tensor(a[:1]) for a in check), forward_names(student) if isinstance(check_x, Mapping) else ())
    # The converter prints its progress and MLIR statistics to stderr, from Python and C++.
    with quiet(), quiet("torchao"), quiet("absl"), stderr_silenced(), torch.no_grad():
        try:
            reference, flat = _converted(student, precision, sample, model_inputs(student, calib_x), dynamic_error is not None)
        except Exception as exc:  # torch.export or LiteRT's converter refuses this model: the run goes on without it
            raise Unmade(f"LiteRT could not convert the student at {precision} ({first_line(exc)})") from exc
    with atomic_path(dst) as tmp:
        tmp.write_bytes(flat)
    got = rows(load_tflite(dst), check)
    want = eager_rows(reference, check)
    tolerance = {
        "fp32": FP32_TOLERANCE,
        "fp16": FP16_TOLERANCE * float(np.abs(want).max(initial=0.0)) + FP32_TOLERANCE,
        "int8": int8_tolerance(want) if dynamic_error is None else dynamic_tolerance(want, dynamic_error),
    }[precision]
    return Converted(dst, precision, Parity(max_abs_err(got, want), tolerance))


@dataclass(frozen=True)
class _Sample:
    """The batch-1 tensors a file is converted for, and the feeds' names where they are named:
    given by name, the converter names the file's signature inputs so (else `args_0`, ...), which
    is how `run_tflite` later finds each feed's input."""

    tensors: tuple[torch.Tensor, ...]
    names: tuple[str, ...]

    def convert(self, module: nn.Module, quant_config: object = None) -> bytes:
        """`module` through litert-torch's converter at these tensors' (fixed) shapes."""
        import litert_torch

        if self.names:
            named = dict(zip(self.names, self.tensors))
            return litert_torch.convert(module, (), sample_kwargs=named, quant_config=quant_config).model_content()
        return litert_torch.convert(module, self.tensors, quant_config=quant_config).model_content()


def _converted(
    student: nn.Module, precision: str, sample: _Sample, calib: Inputs, dynamic: bool
) -> tuple[nn.Module, bytes]:
    """The module the file is checked against and the file's bytes at `precision`."""
    if precision == "int8" and not dynamic:
        reference, config = _quantized(student, sample.tensors, calib)
        return reference, sample.convert(reference, config)
    flat = sample.convert(student)
    if precision == "int8":
        return student, _dynamic_range(flat)
    return student, _fp16_weights(flat) if precision == "fp16" else flat


def _quantized(model: nn.Module, sample: tuple[torch.Tensor, ...], calib: Inputs):  # noqa: ANN202  litert-torch's types
    """PT2E full-integer int8 with litert-torch's quantizer (symmetric per-channel weights,
    histogram-calibrated int8 activations), converted to the reference module the converter
    lowers, and the quantization config that tells the converter so."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, sample).module(), quantizer)
    eager_rows(prepared, samples(calib, 0, MAX_SAMPLES))
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


def _dynamic_range(flat: bytes) -> bytes:
    """The fp32 file made dynamic-range by ai-edge-quantizer's `dynamic_wi8_afp32` recipe: int8
    weights per channel, activations quantized per call inside each kernel. Not PT2E's dynamic
    mode: its converter stores the embedding table with a zero point LiteRT's lookup refuses."""
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(flat, recipe.dynamic_wi8_afp32())
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


def load_tflite(path: Path, names: tuple[str, ...] = ()) -> Callable[[Inputs], np.ndarray]:
    """A call of the file on its batch-1 inputs, as LiteRT's interpreter runs it here: the
    signature inputs `names` in that order (none: the file's inputs in its own order), each cast
    as the file declares it (an int8 input quantized with its own scale, int64 token ids to the
    int32 the converter makes of them), an int8 output dequantized."""
    it = interpreter(path)
    inps, out = _inputs(it, names), it.get_output_details()[0]
    casts, from_output = [_input_cast(d) for d in inps], _output_cast(out)

    def call(xs: Inputs) -> np.ndarray:
        for detail, cast, x in zip(inps, casts, xs, strict=True):
            it.set_tensor(detail["index"], cast(x))
        it.invoke()
        return from_output(it.get_tensor(out["index"]))

    return call


def _inputs(it, names: tuple[str, ...]) -> list[dict]:  # noqa: ANN001  ai-edge-litert's Interpreter
    """The details of the signature inputs called `names`, in that order; all, in order, for none."""
    if not names:
        return list(it.get_input_details())
    # The runner is dropped at once: one held while the interpreter invokes makes it refuse.
    named = it.get_signature_runner().get_input_details()
    missing = [n for n in names if n not in named]
    if missing:
        raise UserError(f"the LiteRT file takes no input {missing[0]!r} (it takes {', '.join(named)}): make it again")
    return [named[n] for n in names]


def input_names(path: Path) -> tuple[str, ...]:
    """The signature's input names of a file made from named feeds; none for one of one array
    (its converter names that one `args_0`)."""
    sig = interpreter(path, delegates=False).get_signature_list()
    names = tuple(next(iter(sig.values()), {}).get("inputs", ()))
    return () if all(n.startswith("args_") for n in names) else names


def timed_tflite(path: Path, x: np.ndarray) -> Callable[[], np.ndarray]:
    """The call a latency times: the interpreter on the batch-1 `x`, quantized once where the
    file takes int8 (numpy's casts cost more than a tiny model's invoke; an app does them natively),
    of the dtype it declares where it takes token ids (ones for float noise)."""
    it = interpreter(path)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    given = typed_input(x, np.dtype(inp["dtype"])) if _is_plain_int(inp) else _input_cast(inp)(x)

    def call() -> np.ndarray:
        it.set_tensor(inp["index"], given)
        it.invoke()
        return it.get_tensor(out["index"])

    return call


def _is_plain_int(detail: dict) -> bool:
    """Whether an input is integers as they are (token ids), not quantized floats: it has no scale."""
    return np.issubdtype(detail["dtype"], np.integer) and not detail["quantization"][0]


def _input_cast(detail: dict) -> Callable[[np.ndarray], np.ndarray]:
    """float32 for a float input, the declared dtype for plain integers; else onto the input's
    integer grid with its scale and zero point."""
    if detail["dtype"] == np.float32 or _is_plain_int(detail):
        return lambda x: np.asarray(x, detail["dtype"])
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
    """The shape of the file's first input (its batch is fixed at 1; a transformer's sequence length too)."""
    return tuple(int(d) for d in interpreter(path, delegates=False).get_input_details()[0]["shape"])


def run_tflite(path: Path, x: Feed) -> np.ndarray:
    """The file's outputs on every sample of `x` (one array, or named feeds of which it takes
    those its signature names), one at a time."""
    names = input_names(path) if isinstance(x, Mapping) else ()
    if isinstance(x, Mapping) and not names:
        raise UserError(f"{path.name} takes one input array, not named inputs: give it the array")
    return rows(load_tflite(path, names), feed_inputs(x, names))


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
