"""What every task entry provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Reference:
    """What a model's outputs on the validation split are judged against: the teacher's own
    outputs there (None where only its training outputs are known) and, where the data has them,
    the labels."""

    teacher: np.ndarray | None
    labels: np.ndarray | None = None


class Task(Protocol):
    """One kind of teacher output."""

    name: str
    # What the score measures, as the report's title says it.
    quality: str

    def score(self, out: np.ndarray, ref: Reference) -> float:
        """One number, higher is better: early stopping and the int8 tolerance judge by it."""
        ...

    def metrics(self, out: np.ndarray, ref: Reference) -> dict[str, float]:
        """The report's metric columns for these outputs, the headline first."""
        ...

    def weakness(self, metrics: dict[str, float], ref: Reference) -> str | None:
        """Why a teacher with these validation `metrics` teaches nothing, in words (its score is no
        better than chance, or than a constant predictor's, for this task); None when it does."""
        ...


class ArrayTask(Task, Protocol):
    """A task whose students train in the array entry's loop (`compress.distill`): it gives the
    two halves of the loss, per sample, and says which outputs and labels it takes."""

    # The torch dtype labels train as (int64 class indices, float32 targets).
    label_dtype: torch.dtype
    # The KD temperature where distill.temperature is unset (unused by tasks without one).
    temperature: float

    def distill(self, out: torch.Tensor, teacher: torch.Tensor, temperature: float | None) -> torch.Tensor:
        """Per-sample loss of matching the teacher's outputs (KD at `temperature`, or the task's
        own where None, for tasks that soften), shape (N,)."""
        ...

    def supervised(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample loss against the labels, shape (N,)."""
        ...

    def check(self, out_shape: tuple[int, ...], labels: np.ndarray | None) -> str | None:
        """Why outputs of `out_shape` per sample (and these labels) are not this task's, in words
        with the fix; None when they are."""
        ...


def per_sample(loss: torch.Tensor) -> torch.Tensor:
    """The mean of an element-wise loss over every axis but the batch's."""
    return loss.reshape(len(loss), -1).mean(dim=1)
