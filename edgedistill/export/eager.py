"""What the formats converted from the student in PyTorch (ExecuTorch, LiteRT, Core ML) share."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgedistill.export.parity import Parity

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


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """A float32 copy of `x` with the usual strides: a numpy view keeps a 0 stride on an added
    axis (`x[:, None]`, as every digits array has), which ExecuTorch refuses."""
    flat = np.array(x, dtype=np.float32).reshape(-1)
    return torch.from_numpy(flat).reshape(x.shape)


def first_line(exc: BaseException) -> str:
    """A converter's error in one line (at most 200 characters), or its type where it says nothing."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def rows(call: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """`call` on each sample of `x` at batch 1 (a converted file's shape), stacked."""
    if not len(x):
        return np.zeros((0,), np.float32)
    return np.concatenate([np.asarray(call(x[i : i + 1])) for i in range(len(x))])


def eager_rows(model: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray) -> np.ndarray:
    """The PyTorch `model` (the student, or a PT2E module) on each sample of `x` at batch 1, without grad."""
    with torch.no_grad():
        return rows(lambda one: model(as_tensor(one)).detach().numpy(), x)


def int8_tolerance(reference: np.ndarray) -> float:
    """The parity tolerance of an int8 file against its PT2E reference outputs (`INT8_STEPS`)."""
    return INT8_STEPS * float(np.abs(reference).max(initial=0.0)) + FP32_TOLERANCE


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
