"""Classification: class logits; scored by accuracy on labels, or by agreement with the teacher's
classes where the data has none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.tasks.base import Reference

# A teacher must beat always answering the most common class by this many standard errors of an
# accuracy at that share on the validation size (2: about a 2% chance that a constant predictor
# scores as high), and by at least MIN_MARGIN, so a large split does not count a hair as a lesson.
STANDARD_ERRORS = 2.0
MIN_MARGIN = 0.02


@dataclass(frozen=True)
class Classification:
    """Logits of one class per sample."""

    name: str = "classification"
    quality: str = "accuracy"
    label_dtype: torch.dtype = torch.int64
    # Hinton et al.'s range; benchmark figure 1 measures distillation at it.
    temperature: float = 4.0

    def distill(self, out: torch.Tensor, teacher: torch.Tensor, temperature: float | None) -> torch.Tensor:
        """Hinton KD: per-sample KL divergence of the softened class distributions."""
        return softened_kl(out, teacher, temperature or self.temperature)

    def supervised(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample cross-entropy on the class labels."""
        return F.cross_entropy(out, labels, reduction="none")

    def check(self, out_shape: tuple[int, ...], labels: np.ndarray | None) -> str | None:
        """A vector of two or more logits per sample, and (where given) one class index per sample
        within them."""
        if len(out_shape) != 1 or out_shape[0] < 2:
            return f"classification takes a vector of two or more class logits per sample, and the teacher gives {out_shape}"
        if labels is None:
            return None
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            return f"classification takes one integer class index per sample as labels, and these are {labels.dtype} of shape {labels.shape[1:]}"
        if int(labels.max()) >= out_shape[0]:
            return f"labels go up to {int(labels.max())} but the teacher has {out_shape[0]} outputs: labels must lie in 0..{out_shape[0] - 1}"
        return None

    def score(self, out: np.ndarray, ref: Reference) -> float:
        """Accuracy on the labels; agreement with the teacher's arg-max without them."""
        target = ref.labels if ref.labels is not None else ref.teacher.argmax(axis=1)
        return float((out.argmax(axis=1) == target).mean())

    def metrics(self, out: np.ndarray, ref: Reference) -> dict[str, float]:
        """Accuracy (where there are labels) and agreement with the teacher's classes (where its
        outputs on the validation split are known)."""
        out_class = out.argmax(axis=1)
        metrics = {} if ref.labels is None else {"accuracy": float((out_class == ref.labels).mean())}
        if ref.teacher is not None:
            metrics["agreement"] = float((out_class == ref.teacher.argmax(axis=1)).mean())
        return metrics

    def weakness(self, metrics: dict[str, float], ref: Reference) -> str | None:
        """With labels: accuracy within the margin of the most common class's share. Without:
        the teacher answers one class for every validation sample."""
        if ref.labels is not None and "accuracy" in metrics and len(ref.labels):
            share = float(np.unique(ref.labels, return_counts=True)[1].max() / len(ref.labels))
            margin = max(MIN_MARGIN, STANDARD_ERRORS * float(np.sqrt(share * (1 - share) / len(ref.labels))))
            if metrics["accuracy"] > share + margin:
                return None
            return (
                f"the teacher scores {metrics['accuracy']:.1%} on validation, no better than always answering "
                f"the most common class ({share:.1%})"
            )
        return one_answer(ref.teacher, "for every one of")


def one_answer(teacher: np.ndarray | None, where: str) -> str | None:
    """That the teacher's validation logits (class axis 1) name one class everywhere, in words
    (`where`: "for every one of", "at every position of"); None when they name several."""
    if teacher is None or len(teacher) < 2:
        return None
    answers = np.unique(teacher.argmax(axis=1))
    if len(answers) > 1:
        return None
    return f"the teacher answers class {int(answers[0])} {where} the {len(teacher)} validation samples"


def softened_kl(out: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Per-sample KL divergence between the teacher's and the student's softmax (over axis 1) at
    temperature t, averaged over any further (position) axes. Hinton et al.: the T^2 factor keeps
    the soft-target gradients on the scale of the hard ones."""
    kl = F.kl_div(F.log_softmax(out / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="none", log_target=True)
    return kl.sum(dim=1).reshape(len(out), -1).mean(dim=1) * (t * t)


CLASSIFICATION = Classification()
