"""Segmentation (dense classification): class logits at every position, (N, C, H, W) for images or
(N, C, L) for signals; scored by mean intersection over union of the classes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.tasks.base import Reference, per_sample
from edgedistill.tasks.classification import one_answer, softened_kl

MIN_MARGIN = 0.02


def mean_iou(pred: np.ndarray, truth: np.ndarray, classes: int) -> float:
    """Mean over the classes present in either map of |pred ∩ truth| / |pred ∪ truth|."""
    p, t = pred.reshape(-1), truth.reshape(-1)
    inter = np.bincount(t[p == t], minlength=classes).astype(np.float64)
    union = np.bincount(p, minlength=classes) + np.bincount(t, minlength=classes) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 1.0


@dataclass(frozen=True)
class Segmentation:
    """Per-position class logits: per-position KD at temperature, cross-entropy on label maps."""

    name: str = "segmentation"
    quality: str = "mean IoU"
    label_dtype: torch.dtype = torch.int64
    # Per-pixel KD at the classifier's 4 lost 29 points of mIoU to training from scratch in
    # benchmark figure 13, where 1 gained; 1 is also the pixel-wise KD of Liu et al. (2019).
    temperature: float = 1.0

    def score(self, out: np.ndarray, ref: Reference) -> float:
        """mIoU against the label maps; against the teacher's per-position classes without them."""
        truth = ref.labels if ref.labels is not None else ref.teacher.argmax(axis=1)
        return mean_iou(out.argmax(axis=1), truth, out.shape[1])

    def metrics(self, out: np.ndarray, ref: Reference) -> dict[str, float]:
        """mIoU and pixel accuracy on the labels (without them, mIoU against the teacher's classes);
        per-position agreement with the teacher."""
        pred = out.argmax(axis=1)
        if ref.labels is not None:
            metrics = {"mIoU": mean_iou(pred, ref.labels, out.shape[1]), "pixel accuracy": float((pred == ref.labels).mean())}
        else:
            metrics = {"teacher mIoU": self.score(out, ref)}
        if ref.teacher is not None:
            metrics["agreement"] = float((pred == ref.teacher.argmax(axis=1)).mean())
        return metrics

    def weakness(self, metrics: dict[str, float], ref: Reference) -> str | None:
        """With labels: pixel accuracy within MIN_MARGIN of the most common class's share of
        positions. Without: the teacher answers one class everywhere."""
        if ref.labels is not None and "pixel accuracy" in metrics:
            share = float(np.bincount(ref.labels.reshape(-1)).max() / ref.labels.size)
            if metrics["pixel accuracy"] > share + MIN_MARGIN:
                return None
            return (
                f"the teacher labels {metrics['pixel accuracy']:.1%} of validation positions right, no better than "
                f"answering the most common class everywhere ({share:.1%})"
            )
        return one_answer(ref.teacher, "at every position of")

    def distill(self, out: torch.Tensor, teacher: torch.Tensor, temperature: float | None) -> torch.Tensor:
        """Per-sample KD at temperature, averaged over positions."""
        return softened_kl(out, teacher, temperature or self.temperature)

    def supervised(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy on the label map, averaged over positions."""
        return per_sample(F.cross_entropy(out, labels, reduction="none"))

    def check(self, out_shape: tuple[int, ...], labels: np.ndarray | None) -> str | None:
        """Class logits at each position ((C, H, W) or (C, L), C >= 2), and (where given) integer
        label maps of the positions' shape."""
        if len(out_shape) not in (2, 3) or out_shape[0] < 2:
            return f"segmentation takes (classes, height, width) or (classes, length) logits per sample, and the teacher gives {out_shape}"
        if labels is None:
            return None
        if labels.shape[1:] != out_shape[1:] or labels.dtype.kind not in "iu":
            return (
                f"segmentation labels are integer class maps of shape {out_shape[1:]} per sample (the teacher's "
                f"positions), and these are {labels.dtype} {labels.shape[1:]}"
            )
        if labels.min() < 0 or int(labels.max()) >= out_shape[0]:
            return f"segmentation labels must lie in 0..{out_shape[0] - 1} (the teacher's classes), and these reach {int(labels.max())}"
        return None


SEGMENTATION = Segmentation()
