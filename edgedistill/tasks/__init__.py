"""The task seam: what a teacher outputs, and so how a student is scored against it.

An entry gives the score (higher is better, for early stopping and the int8 tolerance), the
report's metric columns and the words the report uses; `TASKS` holds one per kind and
`task_for(name)` finds it. A new task is one new module plus its line in `TASKS`.
"""

from edgedistill.tasks.base import Reference, Task
from edgedistill.tasks.classification import CLASSIFICATION
from edgedistill.tasks.embedding import EMBEDDING

TASKS: dict[str, Task] = {t.name: t for t in (CLASSIFICATION, EMBEDDING)}


def task_for(name: str) -> Task:
    """The registered task called `name`."""
    return TASKS[name]


__all__ = ["Reference", "Task", "TASKS", "task_for"]
