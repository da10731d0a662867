"""Classification: class logits; scored by accuracy on labels, or by agreement with the teacher's
classes where the data has none."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedistill.tasks.base import Reference


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


CLASSIFICATION = Classification()
