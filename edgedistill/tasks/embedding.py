"""Embedding: a pooled vector per sample (a sentence encoder); scored by its cosine to the
teacher's, and reported with the agreement of nearest neighbours, which is what retrieval uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedistill.tasks.similarity import mean_cosine, neighbour_agreement
from edgedistill.tasks.base import Reference

NEIGHBOURS = 10


@dataclass(frozen=True)
class Embedding:
    """One embedding vector per sample."""

    name: str = "embedding"
    quality: str = "cosine to the teacher and neighbour agreement"

    def score(self, out: np.ndarray, ref: Reference) -> float:
        """Mean cosine to the teacher's embedding of each sample."""
        return mean_cosine(out, ref.teacher)

    def metrics(self, out: np.ndarray, ref: Reference) -> dict[str, float]:
        """Cosine to the teacher and the share of each sample's nearest neighbours kept."""
        return {
            "cosine": mean_cosine(out, ref.teacher),
            f"neighbours@{NEIGHBOURS}": neighbour_agreement(out, ref.teacher, k=NEIGHBOURS),
        }


EMBEDDING = Embedding()
