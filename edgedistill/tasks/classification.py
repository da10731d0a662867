"""Classification: class logits; scored by accuracy on labels, or by agreement with the teacher's
classes where the data has none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        if ref.teacher is None or len(ref.teacher) < 2:
            return None
        answers = np.unique(ref.teacher.argmax(axis=1))
        if len(answers) > 1:
            return None
        return f"the teacher answers class {int(answers[0])} for every one of the {len(ref.teacher)} validation samples"


CLASSIFICATION = Classification()
