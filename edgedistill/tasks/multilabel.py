"""Multi-label tagging: one independent yes/no logit per label (sigmoid outputs); scored by mean
average precision over the labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.tasks.base import Reference, per_sample

# A teacher must beat a constant predictor's mean average precision (each label's share of
# positives) by this much to teach anything.
MIN_MARGIN = 0.02


def average_precision(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Average precision of each label column (scores ranked high to low against 0/1 truth); NaN for
    a label without a positive sample."""
    ap = np.full(scores.shape[1], np.nan)
    for j in range(scores.shape[1]):
        positives = truth[:, j] > 0.5
        if not positives.any():
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        hits = positives[order]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        ap[j] = float(precision[hits].mean())
    return ap


def mean_ap(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean average precision over the labels that have a positive sample (0 where none has)."""
    ap = average_precision(scores, truth)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0


def f1(scores: np.ndarray, truth: np.ndarray) -> float:
    """Micro-averaged F1 of the decisions logit > 0 (probability > 0.5) against 0/1 truth."""
    pred, true = scores > 0, truth > 0.5
    tp = float((pred & true).sum())
    denominator = float(pred.sum() + true.sum())
    return 1.0 if denominator == 0 else 2 * tp / denominator


@dataclass(frozen=True)
class MultiLabel:
    """Independent label logits: binary KD at temperature to the teacher, BCE on labels."""

    name: str = "multilabel"
    quality: str = "mean average precision"
    label_dtype: torch.dtype = torch.float32
    # As classification's: each tag is a two-class distribution.
    temperature: float = 4.0

    def score(self, out: np.ndarray, ref: Reference) -> float:
        """mAP on the labels; mAP against the teacher's decisions (logit > 0) without them."""
        return mean_ap(out, self._truth(ref))

    def metrics(self, out: np.ndarray, ref: Reference) -> dict[str, float]:
        """mAP and F1 on the labels (without them, mAP against the teacher's decisions); the share of
        the teacher's yes/no decisions kept."""
        if ref.labels is not None:
            metrics = {"mAP": mean_ap(out, ref.labels), "F1": f1(out, ref.labels)}
        else:
            metrics = {"teacher mAP": self.score(out, ref)}
        if ref.teacher is not None:
            metrics["agreement"] = float(((out > 0) == (ref.teacher > 0)).mean())
        return metrics

    def weakness(self, metrics: dict[str, float], ref: Reference) -> str | None:
        """With labels: mAP within MIN_MARGIN of the labels' mean share of positives (a constant's
        mAP). Without: the teacher makes the same decisions for every sample."""
        if ref.labels is not None and "mAP" in metrics:
            truth = ref.labels > 0.5
            prevalence = float(truth[:, truth.any(axis=0)].mean()) if truth.any() else 0.0
            if metrics["mAP"] > prevalence + MIN_MARGIN:
                return None
            return (
                f"the teacher's mAP on validation is {metrics['mAP']:.3f}, no better than a constant score for every "
                f"label ({prevalence:.3f}, the share of positives)"
            )
        if ref.teacher is None or len(ref.teacher) < 2:
            return None
        decisions = ref.teacher > 0
        if (decisions != decisions[0]).any():
            return None
        return f"the teacher makes the same yes/no decisions for every one of the {len(decisions)} validation samples"

    def distill(self, out: torch.Tensor, teacher: torch.Tensor, temperature: float | None) -> torch.Tensor:
        """Per-sample binary KL divergence of each label's softened sigmoid, times T^2 (as KD)."""
        t = temperature or self.temperature
        p = torch.sigmoid(teacher / t)
        log_q, log_not_q = F.logsigmoid(out / t), F.logsigmoid(-out / t)
        log_p, log_not_p = F.logsigmoid(teacher / t), F.logsigmoid(-teacher / t)
        kl = p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)
        return per_sample(kl) * (t * t)

    def supervised(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample binary cross-entropy on the 0/1 labels."""
        return per_sample(F.binary_cross_entropy_with_logits(out, labels, reduction="none"))

    def check(self, out_shape: tuple[int, ...], labels: np.ndarray | None) -> str | None:
        """A vector of label logits, and (where given) 0/1 labels of the same width."""
        if len(out_shape) != 1:
            return f"multilabel takes a vector of label logits per sample, and the teacher gives {out_shape}"
        if labels is None:
            return None
        if labels.shape[1:] != out_shape or labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
            return f"multilabel labels are 0/1 of shape {out_shape} per sample (one per teacher output), and these are {labels.dtype} {labels.shape[1:]}"
        return None

    @staticmethod
    def _truth(ref: Reference) -> np.ndarray:
        return ref.labels if ref.labels is not None else (ref.teacher > 0).astype(np.float32)


MULTILABEL = MultiLabel()
