"""Regression: real-valued outputs of any shape per sample (a sensor value, a vector, a depth map
or a heatmap); scored by R², the share of the target's variance the outputs explain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgedistill.tasks.base import Reference, per_sample

# A teacher must explain at least this share of the labels' variance to teach anything: below it,
# it is barely better than always answering the labels' mean (R² 0).
MIN_R2 = 0.05
# Teacher outputs whose variance over the validation split is this small next to their mean square
# are one constant answer.
CONSTANT_VARIANCE = 1e-10


def r2(out: np.ndarray, target: np.ndarray) -> float:
    """1 - squared error / the target's variance about its per-output mean, pooled over every
    output (variance-weighted R²); 1 is perfect, 0 is the mean's, below 0 worse."""
    o, t = _rows(out), _rows(target.reshape(out.shape))
    total = float(((t - t.mean(axis=0)) ** 2).sum())
    error = float(((o - t) ** 2).sum())
    if total == 0.0:
        return 1.0 if error == 0.0 else float("-inf")
    return 1.0 - error / total


def mae(out: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error over every output of every sample."""
    return float(np.abs(_rows(out) - _rows(target.reshape(out.shape))).mean())


def _rows(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(len(a), -1)


@dataclass(frozen=True)
class Regression:
    """Real-valued outputs: MSE to the teacher (and to labels where given)."""

    name: str = "regression"
    quality: str = "R² (share of the target's variance explained)"
    label_dtype: torch.dtype = torch.float32
    # Values are not softened: no temperature applies.
    temperature: float = 1.0

    def score(self, out: np.ndarray, ref: Reference) -> float:
        """R² on the labels; R² against the teacher's outputs without them."""
        return r2(out, ref.labels if ref.labels is not None else ref.teacher)

    def metrics(self, out: np.ndarray, ref: Reference) -> dict[str, float]:
        """R² and MAE on the labels, and R² against the teacher where its outputs are known."""
        metrics = {} if ref.labels is None else {"r2": r2(out, ref.labels), "mae": mae(out, ref.labels)}
        if ref.teacher is not None:
            metrics["teacher r2"] = r2(out, ref.teacher)
        return metrics

    def weakness(self, metrics: dict[str, float], ref: Reference) -> str | None:
        """With labels: R² below MIN_R2. Without: the teacher gives one answer for every sample."""
        if ref.labels is not None and "r2" in metrics:
            if metrics["r2"] >= MIN_R2:
                return None
            return (
                f"the teacher's R² on validation is {metrics['r2']:.3f}: it explains no more of the labels than "
                "always answering their mean"
            )
        if ref.teacher is None or len(ref.teacher) < 2:
            return None
        rows = _rows(ref.teacher)
        if rows.var(axis=0).sum() > CONSTANT_VARIANCE * max(float((rows**2).mean()), 1e-30) * rows.shape[1]:
            return None
        return f"the teacher gives the same outputs for every one of the {len(rows)} validation samples"

    def distill(self, out: torch.Tensor, teacher: torch.Tensor, temperature: float | None) -> torch.Tensor:
        """Per-sample mean squared error to the teacher's outputs (no temperature: they are values)."""
        return per_sample((out - teacher) ** 2)

    def supervised(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared error to the labels."""
        return per_sample((out - labels.reshape(out.shape)) ** 2)

    def check(self, out_shape: tuple[int, ...], labels: np.ndarray | None) -> str | None:
        """Labels (where given) hold one value per output, or one per sample for a single output."""
        if labels is None:
            return None
        if labels.dtype.kind not in "iuf":
            return f"regression takes numeric labels, and these are {labels.dtype}"
        size = int(np.prod(out_shape))
        if int(np.prod(labels.shape[1:])) != size:
            return (
                f"regression labels need one value per output: the teacher gives {out_shape} per sample and the "
                f"labels are {labels.shape[1:]}"
            )
        return None


REGRESSION = Regression()
