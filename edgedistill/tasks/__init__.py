"""The task seam: what a teacher outputs, and so how a student learns from it and is scored.

An entry gives the score (higher is better, for early stopping and the int8 tolerance), the
report's metric columns and the words the report uses; an array task (`ArrayTask`) also gives
the two halves of the training loss and checks the outputs and labels it takes. `TASKS` holds one
per kind and `task_for(name)` finds it; `infer` picks an array task from the teacher's outputs and
the labels. A new task is one new module plus its line in `TASKS` (and `ARRAY_TASKS`).
"""

from edgedistill.tasks.base import ArrayTask, Reference, Task
from edgedistill.tasks.custom import scored_by
from edgedistill.tasks.embedding import EMBEDDING
from edgedistill.tasks.infer import ARRAY_TASKS, Inferred, infer

TASKS: dict[str, Task] = {**ARRAY_TASKS, EMBEDDING.name: EMBEDDING}


def task_for(name: str) -> Task:
    """The registered task called `name`."""
    return TASKS[name]


__all__ = ["ARRAY_TASKS", "ArrayTask", "Inferred", "Reference", "Task", "TASKS", "infer", "scored_by", "task_for"]
