"""Embedding agreement metrics, on embeddings whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from edgedistill.errors import UserError
from edgedistill.tasks.similarity import mean_cosine, neighbour_agreement


@pytest.fixture
def teacher() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(120, 16))


def test_identical_embeddings_agree_fully(teacher):
    assert mean_cosine(teacher, teacher) == pytest.approx(1.0)
    assert neighbour_agreement(teacher, teacher, k=10) == 1.0


def test_scale_does_not_matter(teacher):
    scaled = teacher * np.random.default_rng(1).uniform(0.1, 10, size=(len(teacher), 1))
    assert mean_cosine(scaled, teacher) == pytest.approx(1.0)
    assert neighbour_agreement(scaled, teacher, k=5) == 1.0


def test_rotation_keeps_neighbours_but_not_cosine(teacher):
    rotation, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(16, 16)))  # a random orthogonal matrix
    rotated = teacher @ rotation
    assert mean_cosine(rotated, teacher) < 0.5
    assert neighbour_agreement(rotated, teacher, k=10) == 1.0


def test_unrelated_embeddings_agree_by_chance(teacher):
    k, n = 10, len(teacher)
    other = np.random.default_rng(3).normal(size=(n, 8))  # another width: only the geometry counts
    assert neighbour_agreement(other, teacher, k=k) == pytest.approx(k / (n - 1), abs=0.03)
    assert abs(mean_cosine(np.random.default_rng(4).normal(size=teacher.shape), teacher)) < 0.1


def test_partial_agreement_is_the_shared_share():
    # Points on an arc: a point's 2 nearest are its neighbours along the arc.
    angles = np.linspace(0, 1, 7)
    teacher = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    swapped = teacher[[0, 1, 2, 3, 4, 6, 5]]  # rows 5 and 6 trade places
    # Only row 4 changes neighbours: {3, 5} under the teacher, {3, 6} under the student.
    assert neighbour_agreement(swapped, teacher, k=2) == pytest.approx(13 / 14)


def test_works_in_blocks_larger_than_one(teacher, monkeypatch):
    import edgedistill.tasks.similarity as metrics

    other = teacher + np.random.default_rng(5).normal(scale=0.5, size=teacher.shape)
    whole = neighbour_agreement(other, teacher, k=7)
    monkeypatch.setattr(metrics, "_BLOCK", 17)
    assert neighbour_agreement(other, teacher, k=7) == whole


def test_bad_shapes_and_k_are_user_errors(teacher):
    with pytest.raises(UserError, match="more than k texts"):
        neighbour_agreement(teacher[:10], teacher[:10], k=10)
    with pytest.raises(UserError, match="k >= 1"):
        neighbour_agreement(teacher, teacher, k=0)
    with pytest.raises(UserError, match="same N"):
        neighbour_agreement(teacher[:50], teacher, k=5)
    with pytest.raises(UserError, match="same shape"):
        mean_cosine(teacher[:, :8], teacher)
