"""NaN and Inf, stopped where they enter a run: in the data, in a teacher's outputs and in training.
Each check fails in one line before anything is built on the bad numbers (a cached teacher, an
exported student whose parity check compares NaN with NaN)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edgedistill.errors import EdgeDistillError


def nonfinite(a: np.ndarray) -> int:
    """How many values of `a` are NaN or +-Inf (none in an integer array)."""
    a = np.asarray(a)
    if a.dtype.kind not in "fc":
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def weights_finite(model: nn.Module) -> bool:
    """True when every floating-point parameter and buffer of `model` is finite."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


class Diverged(EdgeDistillError):
    """Training whose loss, validation outputs or weights stopped being finite (exit status 1).

    `section` is the config section whose learning rate to lower: "distill" for students,
    "teacher_training" for a teacher trained from labels.
    """

    def __init__(self, epoch: int, what: str, lr: float, section: str = "distill") -> None:
        self.epoch, self.what, self.lr, self.section = epoch, what, lr, section
        super().__init__(
            f"training diverged in epoch {epoch}: {what} became NaN or Inf: lower {section}.lr "
            f"(now {lr:g}), e.g. to {lr / 10:g}"
        )

    def of(self, section: str) -> Diverged:
        """The same failure, naming the config section whose training it was."""
        return Diverged(self.epoch, self.what, self.lr, section)


def check_epoch(epoch: int, train_loss: float, val_out: np.ndarray, model: nn.Module, lr: float) -> None:
    """Raise Diverged when an epoch ended with a non-finite training loss, validation outputs or weights.

    Checked once per epoch, not per batch, so every rank of a distributed run stops at the same
    epoch: a NaN loss on one rank's shard makes the averaged gradients, and so every rank's weights, NaN.
    """
    if not math.isfinite(train_loss):
        raise Diverged(epoch, "the training loss", lr)
    if not weights_finite(model):
        raise Diverged(epoch, "the weights", lr)
    if nonfinite(val_out):
        raise Diverged(epoch, "the outputs on the validation split", lr)
