"""The user's own score (`score = "mypkg.metrics:score"`): it replaces a task's for early
stopping, the int8 tolerance, the report and the Pareto plot; the task's loss and columns stay."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from edgedistill.errors import UserError
from edgedistill.importing import import_object
from edgedistill.tasks.base import ArrayTask, Reference

ScoreFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class CustomScore:
    """A task scored by the user's function of (outputs, targets): the labels where the data has
    them, the teacher's outputs otherwise. Higher must be better."""

    base: ArrayTask
    spec: str
    fn: ScoreFn

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def quality(self) -> str:
        return f"score by {self.spec}"

    @property
    def label_dtype(self) -> torch.dtype:
        return self.base.label_dtype

    @property
    def temperature(self) -> float:
        return self.base.temperature

    def score(self, out: np.ndarray, ref: Reference) -> float:
        """The user's function on these outputs and the reference's labels (or teacher outputs)."""
        target = ref.labels if ref.labels is not None else ref.teacher
        try:
            value = self.fn(out, target)
        except Exception as exc:  # the user's code fails: name it, in one line
            raise UserError(f"score {self.spec} raised {type(exc).__name__} ({str(exc).splitlines()[0] if str(exc) else ''}): fix it") from exc
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(float(value)):
            raise UserError(f"score {self.spec} returned {value!r}: return one finite number, higher is better")
        return float(value)

    def metrics(self, out: np.ndarray, ref: Reference) -> dict[str, float]:
        """The user's score first, then the task's own columns."""
        return {"score": self.score(out, ref), **self.base.metrics(out, ref)}

    def weakness(self, metrics: dict[str, float], ref: Reference) -> str | None:
        """The task's own judgement of the teacher (a user's score has no chance level we know)."""
        return self.base.weakness({k: v for k, v in metrics.items() if k != "score"}, ref)

    def distill(self, out: torch.Tensor, teacher: torch.Tensor, temperature: float | None) -> torch.Tensor:
        """The task's own teacher-matching loss."""
        return self.base.distill(out, teacher, temperature)

    def supervised(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The task's own label loss."""
        return self.base.supervised(out, labels)

    def check(self, out_shape: tuple[int, ...], labels: np.ndarray | None) -> str | None:
        """The task's own check."""
        return self.base.check(out_shape, labels)


def scored_by(task: ArrayTask, spec: str | None) -> ArrayTask:
    """`task` scored by the function `spec` names, or `task` itself without one."""
    if spec is None:
        return task
    fn = import_object(spec)
    if not callable(fn):
        raise UserError(f"score {spec!r} is not a function: name a function of (outputs, targets) that returns a float")
    return CustomScore(task, spec, fn)
