import numpy as np
import pytest
import torch

from edgedistill.compress.distill import DistillConfig, FeaturePair, accuracy, fit, predict, teacher_outputs
from edgedistill.data.arrays import Dataset
from edgedistill.errors import EdgeDistillError, UserError
from edgedistill.finite import Diverged
from edgedistill.tasks import Reference

from conftest import tiny_cnn


@pytest.fixture(scope="module")
def splits(digits_xy):
    x, y = digits_xy
    return Dataset(x[:600], y[:600]), Dataset(x[600:900], y[600:900])


def _count_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda _m, args: calls.append(len(args[0])))
    return calls


def test_teacher_outputs_run_the_teacher_once_per_sample(splits):
    train, _ = splits
    teacher = tiny_cnn()
    calls = _count_forwards(teacher)
    out = teacher_outputs(teacher, train.x, batch_size=256)
    assert sum(calls) == len(train) and len(calls) == 3
    np.testing.assert_allclose(out.logits, predict(teacher, train.x), atol=1e-6)


def test_fit_uses_cached_outputs_and_never_the_teacher(splits):
    train, val = splits
    teacher = tiny_cnn()
    outputs = teacher_outputs(teacher, train.x)
    calls = _count_forwards(teacher)
    fit(tiny_cnn(0.5), train, val, DistillConfig(epochs=3), seed=0, teacher=outputs)
    assert calls == []


def test_fit_trains_a_copy_and_keeps_the_best_epoch(splits):
    train, val = splits
    student = tiny_cnn(0.5)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = fit(student, train, val, DistillConfig(epochs=6, alpha=0.0), seed=0)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert result.val_score == max(h.val_score for h in result.history)
    assert accuracy(predict(result.model, val.x), val.y) == pytest.approx(result.val_score)
    assert result.val_score > 0.5


def test_a_start_that_competes_is_kept_where_training_only_makes_it_worse(splits):
    """QAT's calibrated start: epoch 0 of the fit, kept when no epoch beats it."""
    train, val = splits
    start = fit(tiny_cnn(0.5), train, val, DistillConfig(epochs=6, alpha=0.0), seed=0).model
    start_score = accuracy(predict(start, val.x), val.y)
    # A teacher of random outputs, learned alone, takes the accuracy on the labels away.
    wrong = teacher_outputs(tiny_cnn(), train.x)
    cfg = DistillConfig(epochs=2, alpha=1.0)
    worse = fit(start, train, val, cfg, seed=0, teacher=wrong)
    kept = fit(start, train, val, cfg, seed=0, teacher=wrong, start_competes=True)
    assert worse.val_score < start_score and worse.best_epoch >= 1
    assert kept.best_epoch == 0 and kept.val_score == pytest.approx(start_score)
    assert all(torch.equal(start.state_dict()[k], v) for k, v in kept.model.state_dict().items())


def test_fit_is_seeded(splits):
    train, val = splits
    cfg = DistillConfig(epochs=2)
    outputs = teacher_outputs(tiny_cnn(), train.x)
    a = fit(tiny_cnn(0.5), train, val, cfg, seed=3, teacher=outputs)
    b = fit(tiny_cnn(0.5), train, val, cfg, seed=3, teacher=outputs)
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]


def test_early_stopping_ends_before_the_last_epoch(splits):
    train, val = splits
    # A learning rate this small leaves accuracy flat, so patience runs out.
    result = fit(tiny_cnn(0.5), train, val, DistillConfig(epochs=30, lr=1e-9, patience=2, alpha=0.0), seed=0)
    assert result.epochs_run < 30
    assert result.epochs_run - result.best_epoch == 2


def test_distillation_beats_a_wrong_teacher(splits):
    """KD pulls the student towards the teacher: a teacher that is always wrong makes it worse."""
    train, val = splits
    trained = fit(tiny_cnn(), train, val, DistillConfig(epochs=8, alpha=0.0), seed=0).model
    good = teacher_outputs(trained, train.x)
    wrong_logits = np.roll(good.logits, 1, axis=1) * 5
    wrong = type(good)(wrong_logits)
    cfg = DistillConfig(epochs=8, alpha=0.9)
    from_good = fit(tiny_cnn(0.5), train, val, cfg, seed=0, teacher=good)
    from_wrong = fit(tiny_cnn(0.5), train, val, cfg, seed=0, teacher=wrong)
    assert from_good.val_score > from_wrong.val_score + 0.1


def test_feature_matching_trains_a_projection(splits):
    train, val = splits
    teacher = tiny_cnn()
    pair = FeaturePair(student="features.2", teacher="features.2")
    outputs = teacher_outputs(teacher, train.x, ("features.2",))
    assert outputs.features["features.2"].shape == (len(train), 8, 8, 8)
    result = fit(tiny_cnn(0.5), train, val, DistillConfig(epochs=2, features=(pair,)), seed=0, teacher=outputs)
    assert result.epochs_run == 2
    # The hooks are gone: the trained student runs without feature capture.
    assert not result.model.features[2]._forward_hooks


def test_feature_matching_names_a_missing_layer(splits):
    train, val = splits
    outputs = teacher_outputs(tiny_cnn(), train.x, ("features.2",))
    pair = FeaturePair(student="nope", teacher="features.2")
    with pytest.raises(UserError, match="nope"):
        fit(tiny_cnn(0.5), train, val, DistillConfig(epochs=1, features=(pair,)), seed=0, teacher=outputs)


def test_a_diverged_fit_names_the_epoch_and_the_learning_rate_to_lower(splits):
    train, val = splits
    with pytest.raises(Diverged) as exc:
        fit(tiny_cnn(0.5), train, val, DistillConfig(epochs=3, lr=1e6), seed=0, teacher=teacher_outputs(tiny_cnn(), train.x))
    assert exc.value.epoch == 1 and isinstance(exc.value, EdgeDistillError) and exc.value.exit_code == 1
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("training diverged in epoch 1:") and "lower distill.lr (now 1e+06)" in msg
    assert "lower teacher_training.lr" in str(exc.value.of("teacher_training"))


def test_a_diverged_transformer_fit_names_the_epoch(bert_folder):
    from edgedistill.data.text import builtin_sentences, tokenize
    from edgedistill.hf import distill as hf_distill
    from edgedistill.hf.model import load_hf

    teacher, tokenizer = load_hf(bert_folder)
    ids = tokenize(tokenizer, builtin_sentences()[:64], 24).input_ids
    train, val = ids[:48], ids[48:]
    t_train, t_val = hf_distill.outputs(teacher, train), hf_distill.outputs(teacher, val)
    with pytest.raises(Diverged, match="diverged in epoch 1"):
        hf_distill.fit(teacher, train, t_train, val, t_val, DistillConfig(epochs=2, lr=1e6, batch_size=16), seed=0)


def test_weights_that_stop_being_finite_stop_the_fit(splits, monkeypatch):
    """Weights can go NaN while the epoch's loss still reads finite (the last step made them so)."""
    import edgedistill.compress.distill as distill_module
    from edgedistill.finite import check_epoch

    def poisoned(epoch, loss, val_out, model, lr):
        if epoch == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        check_epoch(epoch, loss, np.zeros(1), model, lr)

    monkeypatch.setattr(distill_module, "check_epoch", poisoned)
    train, val = splits
    with pytest.raises(Diverged, match="epoch 2: the weights became NaN or Inf"):
        fit(tiny_cnn(0.5), train, val, DistillConfig(epochs=3, alpha=0.0), seed=0)


def _segmentation_splits(digits_xy):
    from conftest import segmentation_data

    x, maps = segmentation_data(digits_xy)
    return Dataset(x[:300], maps[:300]), Dataset(x[300:400], maps[300:400])


def test_a_dense_task_trains_on_its_own_loss_and_scores_by_its_own_score(digits_xy):
    from conftest import tiny_segmenter
    from edgedistill.tasks import ARRAY_TASKS

    train, val = _segmentation_splits(digits_xy)
    task = ARRAY_TASKS["segmentation"]
    result = fit(tiny_segmenter(), train, val, DistillConfig(epochs=4, alpha=0.0, lr=1e-2), seed=0, task=task)
    assert result.val_score == max(h.val_score for h in result.history)
    out = predict(result.model, val.x)
    assert out.shape == (100, 3, 8, 8) and result.val_score == pytest.approx(task.score(out, Reference(None, val.y)))


def test_without_labels_students_learn_the_teacher_and_stop_on_agreement(splits):
    train, val = splits
    teacher = tiny_cnn()
    outputs = teacher_outputs(teacher, train.x)
    unlabelled, val_x = Dataset(train.x, None), Dataset(val.x, None)
    result = fit(tiny_cnn(0.5), unlabelled, val_x, DistillConfig(epochs=3), seed=0, teacher=outputs, val_teacher=predict(teacher, val.x))
    agreement = float((predict(result.model, val.x).argmax(axis=1) == predict(teacher, val.x).argmax(axis=1)).mean())
    assert result.val_score == pytest.approx(agreement)
    with pytest.raises(UserError, match="needs labels or a teacher's outputs"):
        fit(tiny_cnn(0.5), unlabelled, val_x, DistillConfig(epochs=1), seed=0, val_teacher=predict(teacher, val.x))


def test_moving_augmentations_are_refused_where_label_maps_would_not_follow(digits_xy):
    from conftest import tiny_segmenter
    from edgedistill.compress.augment import AugmentConfig
    from edgedistill.tasks import ARRAY_TASKS

    train, val = _segmentation_splits(digits_xy)
    teacher = tiny_segmenter()
    outputs = teacher_outputs(teacher, train.x)
    flip = DistillConfig(epochs=1, augment=AugmentConfig(flip=True))
    with pytest.raises(UserError, match="the label maps would not follow: set distill.alpha = 1"):
        fit(tiny_segmenter(), train, val, flip, seed=0, teacher=outputs, live=teacher, task=ARRAY_TASKS["segmentation"])
    alone = flip.model_copy(update={"alpha": 1.0})
    fit(tiny_segmenter(), train, val, alone, seed=0, teacher=outputs, live=teacher, task=ARRAY_TASKS["segmentation"])
