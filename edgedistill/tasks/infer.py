"""Which task a teacher's outputs and the labels make, when the config does not say (`task`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedistill.errors import UserError
from edgedistill.tasks.base import ArrayTask
from edgedistill.tasks.classification import CLASSIFICATION
from edgedistill.tasks.multilabel import MULTILABEL
from edgedistill.tasks.regression import REGRESSION
from edgedistill.tasks.segmentation import SEGMENTATION

ARRAY_TASKS: dict[str, ArrayTask] = {t.name: t for t in (CLASSIFICATION, REGRESSION, MULTILABEL, SEGMENTATION)}


@dataclass(frozen=True)
class Inferred:
    """The run's task and, in words for the report, how it was chosen."""

    task: ArrayTask
    how: str


def infer(name: str | None, out_shape: tuple[int, ...], labels: np.ndarray | None) -> Inferred:
    """The task called `name`, or the one the teacher's per-sample output shape and the labels
    make; refused in one line where they do not fit it."""
    if name is not None:
        task, how = ARRAY_TASKS[name], "set in the config (task)"
    else:
        task, why = _guess(out_shape, labels)
        how = f"inferred: {why} (set task = ... to choose another)"
    problem = task.check(out_shape, labels)
    if problem is not None:
        raise UserError(f"{problem}: give a teacher and labels of the {task.name} task, or set task to the one they are")
    return Inferred(task, how)


def _guess(out_shape: tuple[int, ...], labels: np.ndarray | None) -> tuple[ArrayTask, str]:
    """The likeliest task for these outputs and labels, and why."""
    dense = len(out_shape) >= 2
    if labels is None:
        if out_shape[0] < 2:
            return REGRESSION, f"one output channel per {'position' if dense else 'sample'} and no labels"
        if dense:
            return SEGMENTATION, f"{out_shape} outputs per sample read as class logits per position, no labels"
        return CLASSIFICATION, f"{out_shape[0]} outputs per sample read as class logits, no labels"
    integer = labels.dtype.kind in "biu"
    binary = bool(np.isin(labels, (0, 1)).all())
    if labels.ndim == 1 and integer and not dense and out_shape[0] >= 2:
        return CLASSIFICATION, "one integer label per sample and a vector of outputs"
    if not dense and labels.shape[1:] == out_shape and binary and (integer or out_shape[0] > 1):
        return MULTILABEL, f"0/1 labels of the outputs' width ({out_shape[0]})"
    if dense and integer and labels.shape[1:] == out_shape[1:] and out_shape[0] >= 2:
        return SEGMENTATION, f"integer label maps of the outputs' positions {out_shape[1:]}"
    return REGRESSION, f"{labels.dtype} labels of shape {labels.shape[1:]} per sample"
