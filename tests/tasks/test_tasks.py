"""The task registry's sweep: every task scores the teacher's own outputs best and fills its columns."""

import numpy as np
import pytest

from edgedistill.tasks import TASKS, Reference, task_for


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_scores_the_teacher_above_noise(name):
    task = task_for(name)
    rng = np.random.default_rng(0)
    teacher = rng.standard_normal((64, 5)).astype(np.float32)
    ref = Reference(teacher, teacher.argmax(axis=1))
    noise = rng.standard_normal((64, 5)).astype(np.float32)
    assert task.name == name and task.quality
    assert task.score(teacher, ref) == pytest.approx(1.0)
    assert task.score(noise, ref) < 0.9
    own, other = task.metrics(teacher, ref), task.metrics(noise, ref)
    assert own and set(own) == set(other)
    assert all(own[k] >= other[k] for k in own)


def test_classification_without_teacher_outputs_reports_accuracy_alone():
    ref = Reference(None, np.array([0, 1, 1]))
    out = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert task_for("classification").metrics(out, ref) == {"accuracy": pytest.approx(2 / 3)}
