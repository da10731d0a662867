"""How well one set of embeddings stands in for another (a student's sentence embeddings for the
teacher's): the embedding task's measures."""

from __future__ import annotations

import numpy as np

from edgedistill.errors import UserError

_EPS = 1e-12
_BLOCK = 1024  # rows of the similarity matrix held at once: memory stays O(block * N)


def mean_cosine(student: np.ndarray, teacher: np.ndarray) -> float:
    """Mean over rows of the cosine between a student embedding and the teacher's for the same text."""
    s, t = _unit_rows(student, teacher)
    return float(np.mean(np.sum(s * t, axis=1)))


def cosine_to_mean(embeddings: np.ndarray) -> float:
    """Mean cosine of each row to the rows' mean direction: 1.0 when every row points the same way."""
    unit = _unit(embeddings)
    return float(np.mean(unit @ _unit(unit.mean(axis=0, keepdims=True))[0]))


def neighbour_agreement(student: np.ndarray, teacher: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest other rows (by cosine) under the teacher that the
    student also ranks among its k nearest: 1.0 when the student keeps every neighbourhood.

    Only the geometry within each model counts, so student and teacher may differ in width.
    """
    if student.ndim != 2 or teacher.ndim != 2 or len(student) != len(teacher):
        raise UserError(
            f"neighbour agreement needs two (N, D) arrays with the same N, got shapes {student.shape} and {teacher.shape}"
        )
    n = len(teacher)
    if not 1 <= k < n:
        raise UserError(f"neighbour agreement with k={k} needs more than k texts and k >= 1, got {n}: use more texts or a smaller k")
    s, t = _unit(student), _unit(teacher)
    hits = 0
    for start in range(0, n, _BLOCK):
        rows = np.arange(start, min(start + _BLOCK, n))
        student_k = _nearest(s, rows, k)
        teacher_k = _nearest(t, rows, k)
        # Membership table of the teacher's neighbours, read at the student's.
        is_teacher_k = np.zeros((len(rows), n), dtype=bool)
        np.put_along_axis(is_teacher_k, teacher_k, True, axis=1)
        hits += int(np.take_along_axis(is_teacher_k, student_k, axis=1).sum())
    return hits / (n * k)


def _nearest(unit: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Indices (len(rows), k) of the k most cosine-similar other rows of each of `rows`."""
    sims = unit[rows] @ unit.T
    sims[np.arange(len(rows)), rows] = -np.inf  # a row is not its own neighbour
    return np.argpartition(-sims, k - 1, axis=1)[:, :k]


def _unit_rows(student: np.ndarray, teacher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays with unit rows, after checking they pair up row for row."""
    if student.ndim != 2 or student.shape != teacher.shape:
        raise UserError(
            f"mean cosine needs two (N, D) arrays of the same shape, got {student.shape} and {teacher.shape}: "
            "compare embeddings of the same texts and width"
        )
    if len(student) == 0:
        raise UserError("mean cosine needs at least one embedding: the text split is empty")
    return _unit(student), _unit(teacher)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in float64 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)
