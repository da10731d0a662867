"""What the formats converted from the student in PyTorch (ExecuTorch, Core ML) share."""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """A float32 copy of `x` with the usual strides: a numpy view keeps a 0 stride on an added
    axis (`x[:, None]`, as every digits array has), which ExecuTorch refuses."""
    flat = np.array(x, dtype=np.float32).reshape(-1)
    return torch.from_numpy(flat).reshape(x.shape)


def first_line(exc: BaseException) -> str:
    """A converter's error in one line (at most 200 characters), or its type where it says nothing."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
