"""The task registry's sweep: every task scores the teacher's own outputs best and fills its columns."""

import numpy as np
import pytest
import torch

from edgedistill.errors import UserError
from edgedistill.tasks import ARRAY_TASKS, TASKS, Reference, infer, scored_by, task_for


def _example(name: str, rng: np.random.Generator, n: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """Teacher outputs of the task and labels that they fit (None for embeddings, which have none)."""
    if name == "segmentation":
        out = rng.standard_normal((n, 3, 4, 5)).astype(np.float32)
        return out, out.argmax(axis=1)
    out = rng.standard_normal((n, 5)).astype(np.float32)
    labels = {"classification": out.argmax(axis=1), "regression": out.copy(), "multilabel": (out > 0).astype(np.float32)}
    return out, labels.get(name)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_scores_the_teacher_above_noise(name):
    task = task_for(name)
    rng = np.random.default_rng(0)
    teacher, labels = _example(name, rng)
    ref = Reference(teacher, labels)
    noise = rng.standard_normal(teacher.shape).astype(np.float32)
    assert task.name == name and task.quality
    assert task.score(teacher, ref) == pytest.approx(1.0)
    assert task.score(noise, ref) < 0.9
    own, other = task.metrics(teacher, ref), task.metrics(noise, ref)
    assert own and set(own) == set(other)
    higher_better = [k for k in own if k != "mae"]
    assert all(own[k] >= other[k] for k in higher_better)


@pytest.mark.parametrize("name", sorted(ARRAY_TASKS))
@pytest.mark.parametrize("labelled", [True, False])
def test_the_score_is_the_first_column(name, labelled):
    task = task_for(name)
    rng = np.random.default_rng(1)
    teacher, labels = _example(name, rng)
    ref = Reference(teacher, labels if labelled else None)
    out = teacher + rng.standard_normal(teacher.shape).astype(np.float32)
    assert next(iter(task.metrics(out, ref).values())) == pytest.approx(task.score(out, ref))


@pytest.mark.parametrize("name", sorted(ARRAY_TASKS))
def test_losses_are_per_sample_and_least_at_the_target(name):
    task = ARRAY_TASKS[name]
    rng = np.random.default_rng(2)
    teacher, labels = _example(name, rng, 16)
    t = torch.from_numpy(teacher)
    y = torch.from_numpy(labels).to(task.label_dtype)
    noise = torch.randn(t.shape, requires_grad=True)
    for loss_at in (lambda o: task.distill(o, t, 2.0), lambda o: task.supervised(o, y)):
        far = loss_at(noise)
        assert far.shape == (16,) and bool((far > 0).all())
        far.sum().backward()
        assert torch.isfinite(noise.grad).all()
        noise.grad = None
    assert float(task.distill(t, t, 2.0).abs().max()) < 1e-5


@pytest.mark.parametrize("name", sorted(ARRAY_TASKS))
def test_each_task_takes_its_own_outputs_and_labels(name):
    task = ARRAY_TASKS[name]
    teacher, labels = _example(name, np.random.default_rng(3))
    assert task.check(teacher.shape[1:], labels) is None
    assert task.check(teacher.shape[1:], None) is None


@pytest.mark.parametrize(
    ("out_shape", "labels", "expected"),
    [
        ((10,), np.arange(20) % 10, "classification"),
        ((10,), None, "classification"),
        ((1,), None, "regression"),
        ((3,), np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32), "regression"),
        ((1,), np.random.default_rng(0).standard_normal(20).astype(np.float32), "regression"),
        ((4,), (np.arange(80).reshape(20, 4) % 3 == 0).astype(np.int64), "multilabel"),
        ((4,), (np.arange(80).reshape(20, 4) % 3 == 0).astype(np.float32), "multilabel"),
        ((3, 8, 8), np.zeros((20, 8, 8), np.int64), "segmentation"),
        ((3, 16), np.ones((20, 16), np.int64), "segmentation"),
        ((3, 8, 8), None, "segmentation"),
        ((1, 8, 8), np.zeros((20, 1, 8, 8), np.float32), "regression"),
        ((1, 8, 8), None, "regression"),
    ],
)
def test_the_task_is_inferred_from_the_outputs_and_labels(out_shape, labels, expected):
    inferred = infer(None, out_shape, labels)
    assert inferred.task.name == expected and inferred.how.startswith("inferred")


def test_a_task_set_in_the_config_is_checked_against_the_outputs():
    assert infer("regression", (1,), np.arange(20) % 10).how == "set in the config (task)"
    with pytest.raises(UserError, match="segmentation takes"):
        infer("segmentation", (10,), np.arange(20) % 10)
    with pytest.raises(UserError, match="labels go up to 12"):
        infer(None, (10,), np.arange(20) % 13)


def test_a_users_score_replaces_the_tasks_and_leads_the_columns():
    task = scored_by(ARRAY_TASKS["regression"], "conftest:negative_max_error")
    out, target = np.zeros((4, 2), np.float32), np.array([[0, 1], [0, -3], [0, 0], [2, 0]], np.float32)
    ref = Reference(None, target)
    assert task.score(out, ref) == -3.0
    assert list(task.metrics(out, ref))[:2] == ["score", "r2"] and task.name == "regression"
    assert scored_by(ARRAY_TASKS["regression"], None) is ARRAY_TASKS["regression"]


def test_a_users_score_that_fails_or_returns_no_number_is_named():
    bad = scored_by(ARRAY_TASKS["regression"], "conftest:not_a_number")
    with pytest.raises(UserError, match=r"returned 'high': return one finite number"):
        bad.score(np.zeros((2, 1), np.float32), Reference(None, np.zeros((2, 1), np.float32)))
    with pytest.raises(UserError, match="has no attribute"):
        scored_by(ARRAY_TASKS["regression"], "conftest:missing")


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


def _several(labels: bool = False):
    from edgedistill.tasks.heads import Head, Labelled, Part, Several

    boxes = Part(Head("boxes", (2, 2)), ARRAY_TASKS["regression"], 1.0, Labelled(0, 4, (4,), False) if labels else None)
    scores = Part(Head("scores", (3,)), ARRAY_TASKS["classification"], 3.0, Labelled(4, 5, (), True) if labels else None)
    return Several((boxes, scores))


def test_several_outputs_join_split_and_weigh_each_outputs_own_loss():
    from edgedistill.tasks.heads import join

    task = _several()
    out = {"boxes": torch.randn(6, 2, 2), "scores": torch.randn(6, 3)}
    joined = join(out)
    assert joined.shape == (6, 7) and torch.equal(task.split(joined)[0], out["boxes"])
    teacher = torch.randn(6, 7)
    boxes, scores = task.split(joined), task.split(teacher)
    expected = ARRAY_TASKS["regression"].distill(boxes[0], scores[0], None) + 3 * ARRAY_TASKS["classification"].distill(boxes[1], scores[1], None)
    assert torch.allclose(task.distill(joined, teacher, None), expected)
    assert task.check((7,), None) is None and "join to (6,)" in task.check((6,), None)
    assert "save each output's labels as y_<output>" in task.check((7,), np.zeros((6, 1)))


def test_several_outputs_score_each_on_its_labels_and_check_them():
    task = _several(labels=True)
    rng = np.random.default_rng(0)
    teacher = rng.standard_normal((40, 7)).astype(np.float32)
    labels = np.concatenate([teacher[:, :4], teacher[:, 4:].argmax(axis=1, keepdims=True)], axis=1).astype(np.float32)
    ref = Reference(teacher, labels)
    assert task.score(teacher, ref) == pytest.approx(1.0)
    metrics = task.metrics(teacher, ref)
    assert list(metrics)[0] == "score" and {"boxes r2", "scores accuracy", "scores agreement"} <= set(metrics)
    y = torch.from_numpy(labels)
    assert task.supervised(torch.from_numpy(teacher), y).shape == (40,)
    bad = labels.copy()
    bad[0, 4] = 7
    assert task.check((7,), bad).startswith("output scores: labels go up to 7")
