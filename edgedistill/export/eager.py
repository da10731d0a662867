"""What the formats converted from the student in PyTorch (ExecuTorch, LiteRT, Core ML) share."""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedistill.errors import UserError
from edgedistill.export.parity import Parity
from edgedistill.ortsession import Feed

# Calibration and checks run a batch-1 file sample by sample; this many are plenty for min/max
# and histogram observers and keep a run's conversion to seconds.
MAX_SAMPLES = 256
# An int8 file is checked against PT2E's reference int8 module (torch's own arithmetic for the
# same scales), as a fraction of the largest reference output: a runtime may round an accumulator
# the other way, which moves an output by one step of its int8 scale (1/127 of its range per side).
INT8_STEPS = 2 / 127
# fp32 files run the student's own fp32 ops; 1e-4 is the ONNX export's own parity tolerance.
FP32_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Converted:
    """A file converted from the student in PyTorch (a `.pte`, a `.tflite`), its precision, and
    its parity check on real inputs as its runtime runs it: float files against the student, int8
    ones against PT2E's reference int8 module."""

    path: Path
    precision: str
    parity: Parity


Inputs = tuple[np.ndarray, ...]
"""The arrays a converted file takes, in its inputs' order, batch first in each."""


def forward_names(model: nn.Module) -> tuple[str, ...]:
    """The names of the inputs `model.forward` requires, in order: the feeds it takes (a
    transformer student's `input_ids`); its defaulted and variadic parameters are not fed."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(model.forward).parameters.values()
    return tuple(p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def model_inputs(model: nn.Module, x: Feed) -> Inputs:
    """What `model` is converted for and checked on: one array as it is; from named feeds, the
    arrays its forward names, in that order (`forward_names`)."""
    return feed_inputs(x, forward_names(model)) if isinstance(x, Mapping) else (x,)


def feed_inputs(x: Feed, names: tuple[str, ...]) -> Inputs:
    """The arrays called `names` from named feeds, in that order; one array as it is."""
    if not isinstance(x, Mapping):
        return (x,)
    missing = [n for n in names if n not in x]
    if missing:
        raise UserError(f"the file takes {', '.join(missing)}, which the inputs given ({', '.join(x) or 'none'}) lack")
    return tuple(x[n] for n in names)


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """A copy of `x` with the usual strides (a numpy view keeps a 0 stride on an added axis,
    `x[:, None]` as every digits array has, which ExecuTorch refuses): floats as float32,
    integers (token ids) in their own dtype, which the student's embedding takes."""
    dtype = x.dtype if np.issubdtype(x.dtype, np.integer) else np.float32
    flat = np.array(x, dtype=dtype).reshape(-1)
    return torch.from_numpy(flat).reshape(x.shape)


def typed_input(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`x` as a file's input of `dtype` declares it, for a latency's call. Float noise given for
    an integer input (the local runner's) becomes ones, as its ONNX feeds are: a valid token id
    in any vocabulary; real ids are cast as they are."""
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(x.dtype, np.integer):
        return np.ones(x.shape, dtype)
    return np.asarray(x, dtype)


def first_line(exc: BaseException) -> str:
    """A converter's error in one line (at most 200 characters), or its type where it says nothing."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def rows(call: Callable[[Inputs], np.ndarray], xs: Inputs) -> np.ndarray:
    """`call` on each sample of the arrays `xs` at batch 1 (a converted file's shape), stacked."""
    if not len(xs[0]):
        return np.zeros((0,), np.float32)
    return np.concatenate([np.asarray(call(samples(xs, i, i + 1))) for i in range(len(xs[0]))])


def eager_rows(model: Callable[..., torch.Tensor], xs: Inputs) -> np.ndarray:
    """The PyTorch `model` (the student, or a PT2E module) on each sample of `xs` at batch 1, without grad."""
    with torch.no_grad():
        return rows(lambda one: model(*(as_tensor(a) for a in one)).detach().numpy(), xs)


def samples(xs: Inputs, start: int, stop: int) -> Inputs:
    """Samples start..stop of every array of `xs`."""
    return tuple(a[start:stop] for a in xs)


def int8_tolerance(reference: np.ndarray) -> float:
    """The parity tolerance of an int8 file against its PT2E reference outputs (`INT8_STEPS`)."""
    return INT8_STEPS * float(np.abs(reference).max(initial=0.0)) + FP32_TOLERANCE


def dynamic_tolerance(student_out: np.ndarray, int8_error: float) -> float:
    """The parity tolerance of a dynamic-range int8 file against the student in fp32. Dynamic
    int8 has no one reference: each runtime ranges activations its own way (XNNPACK and LiteRT
    per row, PT2E's reference per tensor; MiniLM's quarter student's `.pte` was 0.017 from PT2E's
    dynamic reference, where two steps were 0.0036). So the file is held to the distance the
    run's int8 ONNX, dynamic too, has from the student on the same inputs (`int8_error`), plus
    `INT8_STEPS` of the output range."""
    return int8_error + int8_tolerance(student_out)


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block: converters' and runtimes' C++ logs bypass Python's stderr."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
