"""What every task entry provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


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
        """The report's metric columns for these outputs."""
        ...

    def weakness(self, metrics: dict[str, float], ref: Reference) -> str | None:
        """Why a teacher with these validation `metrics` teaches nothing, in words (its score is no
        better than chance, or than a constant predictor's, for this task); None when it does."""
        ...
