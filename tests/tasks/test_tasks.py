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


def _labels(n: int, majority: float) -> np.ndarray:
    """n labels of 10 classes, class 0 taking the `majority` share, the rest spread evenly."""
    head = round(n * majority)
    return np.concatenate([np.zeros(head, np.int64), 1 + np.arange(n - head) % 9])


def test_a_classifier_within_the_margin_of_the_most_common_class_is_weak():
    ref = Reference(None, _labels(359, 0.112))
    weak = task_for("classification").weakness({"accuracy": 0.13}, ref)
    assert weak == "the teacher scores 13.0% on validation, no better than always answering the most common class (11.1%)"
    assert task_for("classification").weakness({"accuracy": 0.955}, ref) is None


def test_the_classification_margin_is_two_standard_errors_and_at_least_two_points():
    task = task_for("classification")
    small, large = Reference(None, _labels(40, 0.5)), Reference(None, _labels(100_000, 0.5))
    # 40 samples at 50%: a standard error of 7.9 points, so 65% is still within reach of chance.
    assert task.weakness({"accuracy": 0.65}, small) and task.weakness({"accuracy": 0.67}, small) is None
    assert task.weakness({"accuracy": 0.519}, large) and task.weakness({"accuracy": 0.521}, large) is None


def test_a_classifier_without_labels_is_weak_when_it_answers_one_class():
    task = task_for("classification")
    constant = np.tile([0.0, 3.0, 1.0], (20, 1))
    varied = np.eye(3)[np.arange(20) % 3]
    assert task.weakness({"agreement": 1.0}, Reference(constant)) == (
        "the teacher answers class 1 for every one of the 20 validation samples"
    )
    assert task.weakness({"agreement": 1.0}, Reference(varied)) is None


def test_an_embedding_teacher_is_weak_when_every_embedding_is_the_same_vector():
    rng = np.random.default_rng(0)
    same = np.tile(rng.standard_normal(16), (30, 1)) + 1e-6 * rng.standard_normal((30, 16))
    spread = rng.standard_normal((30, 16))
    task = task_for("embedding")
    assert "nearly the same vector" in task.weakness({"cosine": 1.0}, Reference(same))
    assert task.weakness({"cosine": 1.0}, Reference(spread)) is None


@pytest.mark.parametrize("name", sorted(TASKS))
def test_no_task_calls_a_teacher_without_a_validation_reference_weak(name):
    assert task_for(name).weakness({}, Reference(None)) is None
