"""The parity check every exported file carries: how far it strays from its source, and how far it may."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Parity:
    """A file's parity check against its source: `max_abs_err` is the largest absolute difference
    of their outputs on the check inputs and `tolerance` the largest allowed, both absolute.

    `max_abs_err` None: not checked here (a TensorRT engine's script, which onnxruntime cannot
    run; an int8 file, whose check is its score), which passes. A NaN error is kept as Inf: it
    fails, and stays a failure through JSON, where NaN would be written as null, read as unchecked.
    """

    max_abs_err: float | None
    tolerance: float | None

    def __post_init__(self) -> None:
        # `passed` compares the two, so an error without its bound is a caller's mistake, caught here.
        if self.max_abs_err is not None and self.tolerance is None:
            raise ValueError(f"a parity error ({self.max_abs_err}) needs the tolerance it was checked against")
        if self.max_abs_err is not None and math.isnan(self.max_abs_err):
            object.__setattr__(self, "max_abs_err", math.inf)

    @classmethod
    def unchecked(cls) -> Parity:
        """No parity check was made here."""
        return cls(None, None)

    @property
    def checked(self) -> bool:
        """True when the file was compared with its source here."""
        return self.max_abs_err is not None

    @property
    def passed(self) -> bool:
        """True when not checked, or when the error is within the tolerance."""
        return self.max_abs_err is None or self.max_abs_err <= self.tolerance


def max_abs_err(got: np.ndarray, want: np.ndarray) -> float:
    """Largest |got - want| of two outputs, in float64; Inf when their shapes differ or either holds
    a NaN or an Inf anywhere, so that two all-NaN outputs never agree."""
    if got.shape != want.shape or not (np.isfinite(got).all() and np.isfinite(want).all()):
        return math.inf
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
