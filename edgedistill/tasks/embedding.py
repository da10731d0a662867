"""Embedding: a pooled vector per sample (a sentence encoder); scored by its cosine to the
teacher's, and reported with the agreement of nearest neighbours, which is what retrieval uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedistill.tasks.similarity import cosine_to_mean, mean_cosine, neighbour_agreement
from edgedistill.tasks.base import Reference

NEIGHBOURS = 10
# The mean cosine of a teacher's embeddings to their mean direction above which they are one vector
# with float noise on it: a constant predictor. A random tiny BERT's reach about 0.986; a trained
# encoder's are far lower.
CONSTANT_COSINE = 0.9999


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

    def weakness(self, metrics: dict[str, float], ref: Reference) -> str | None:
        """The teacher's validation embeddings are (nearly) all the same vector. Its own score is
        always 1 (it is the reference), so only the spread of its embeddings tells."""
        if ref.teacher is None or len(ref.teacher) < 2:
            return None
        cosine = cosine_to_mean(ref.teacher)
        if cosine < CONSTANT_COSINE:
            return None
        return (
            f"the teacher embeds every validation text as nearly the same vector (mean cosine {cosine:.5f} to "
            "their mean direction), no better than a constant"
        )


EMBEDDING = Embedding()
