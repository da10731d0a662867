"""Recorded teacher outputs: an .npz of inputs (`x`) and what the teacher answered for them, as
a service returns it: `logits`, `probabilities`, or only the top k (`topk_index`, `topk_prob`).

Every form becomes logits the KD loss can take: probabilities through their logarithm (softmax
of log p at temperature T is p^(1/T) renormalised, the usual tempering), top-k by spreading the
mass the record leaves out evenly over the classes it does not name. Records are matched to the
training inputs by content, so their order and extra rows do not matter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.compress.distill import TeacherOutputs
from edgedistill.errors import UserError

# Probabilities are clipped here before the logarithm, so a zero is a very unlikely class, not -inf.
_FLOOR = 1e-8


@dataclass(frozen=True)
class Recorded:
    """A record aligned with the training split: outputs, what form they came in and how they are used."""

    outputs: TeacherOutputs
    form: str
    use: str
    matched: int
    missing: int
    unused: int


def row_keys(x: np.ndarray) -> list[bytes]:
    """A content key per input row (its float32 bytes hashed): equal inputs, equal keys."""
    rows = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
    return [hashlib.sha1(r.tobytes()).digest() for r in rows]


def log_probabilities(p: np.ndarray) -> np.ndarray:
    """Probabilities as logits: their logarithm (softmax gives them back)."""
    return np.log(np.clip(p, _FLOOR, 1.0)).astype(np.float32)


def topk_to_logits(index: np.ndarray, prob: np.ndarray, classes: int) -> np.ndarray:
    """Full-distribution logits from the top-k classes and their probabilities: the mass the top k
    leave (1 - their sum) is spread evenly over the other classes."""
    n, k = index.shape
    rest = np.clip(1.0 - prob.sum(axis=1, keepdims=True), 0.0, 1.0) / max(1, classes - k)
    full = np.repeat(rest, classes, axis=1)
    np.put_along_axis(full, index.astype(np.int64), prob, axis=1)
    return log_probabilities(full)


def load_recorded(path: Path, x_train: np.ndarray, classes: int) -> Recorded:
    """The record at `path`, aligned with the training inputs `x_train`; rows of the training split
    the record lacks are marked unknown (trained on labels alone)."""
    arrays = _read(path)
    x = arrays["x"]
    if x.shape[1:] != x_train.shape[1:]:
        raise UserError(
            f"{path}: recorded inputs have shape {x.shape[1:]}, the training data {x_train.shape[1:]}: "
            "record the same inputs the run trains on"
        )
    logits, form, use = _as_logits(path, arrays, classes)
    if len(logits) != len(x):
        raise UserError(f"{path}: {len(x)} inputs but {len(logits)} recorded outputs: give one output row per input")
    where = {key: i for i, key in enumerate(row_keys(x))}
    rows = np.array([where.get(key, -1) for key in row_keys(x_train)])
    known = rows >= 0
    aligned = np.full((len(x_train), logits.shape[1]), np.nan, dtype=np.float32)
    aligned[known] = logits[rows[known]]
    matched = int(known.sum())
    if matched == 0:
        raise UserError(f"{path}: none of its {len(x)} inputs is in the training data: record outputs for the run's own data")
    return Recorded(
        TeacherOutputs(aligned, known=known), form, use,
        matched=matched, missing=len(x_train) - matched, unused=len(x) - len(set(rows[known].tolist())),
    )


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UserError(f"recorded outputs {path} do not exist: give an .npz with x and logits, probabilities or topk_index + topk_prob")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz ({exc}): save it with numpy.savez") from exc
    if "x" not in arrays:
        raise UserError(f"{path} has no x: save the inputs the outputs belong to as x")
    return arrays


def _as_logits(path: Path, arrays: dict[str, np.ndarray], classes: int) -> tuple[np.ndarray, str, str]:
    """(logits, the form recorded, how KD uses it)."""
    if "logits" in arrays:
        logits = _finite(path, "logits", arrays["logits"])
        return logits, "logits", "KD at temperature on the recorded logits"
    if "probabilities" in arrays:
        p = _finite(path, "probabilities", arrays["probabilities"])
        return log_probabilities(p), "probabilities", "KD on the logarithm of the recorded probabilities"
    if "topk_index" in arrays and "topk_prob" in arrays:
        index, prob = arrays["topk_index"], _finite(path, "topk_prob", arrays["topk_prob"])
        if index.shape != prob.shape or index.ndim != 2:
            raise UserError(f"{path}: topk_index {index.shape} and topk_prob {prob.shape} must both be (N, k)")
        if not np.issubdtype(index.dtype, np.integer) or index.min() < 0:
            raise UserError(f"{path}: topk_index must hold class indices 0..C-1")
        classes = max(classes, int(index.max()) + 1)
        k = index.shape[1]
        use = f"KD on top-{k} probabilities, the remaining mass spread evenly over the other {classes - k} classes"
        return topk_to_logits(index, prob, classes), f"top-{k} probabilities", use
    raise UserError(f"{path} holds no outputs: save logits, probabilities, or topk_index and topk_prob beside x")


def _finite(path: Path, name: str, a: np.ndarray) -> np.ndarray:
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise UserError(f"{path}: {name} must be a finite (N, C) number array, got {a.dtype} {a.shape}")
    return a.astype(np.float32)
