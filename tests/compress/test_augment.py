"""Consistent augmentation: the views it makes, what it refuses, and that the teacher sees them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_cnn, tiny_mlp, tiny_run_config
from pydantic import ValidationError
from torch import nn

from edgedistill import pipeline
from edgedistill.compress.augment import AugmentConfig, augment, check_shape
from edgedistill.compress.distill import DistillConfig, kd_loss
from edgedistill.compress.distill import DistillConfig, TeacherOutputs, fit, teacher_outputs
from edgedistill.config import parse_config
from edgedistill.data.arrays import Dataset
from edgedistill.errors import UserError


def _images(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_a_seed_repeats_its_views_and_another_seed_does_not():
    cfg = AugmentConfig(flip=True, shift=2, noise=0.1, mask=0.3, mixup=0.4, cutmix=1.0)
    x = _images()
    a, b = (augment(x, cfg, torch.Generator().manual_seed(3)) for _ in range(2))
    c = augment(x, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a.x, b.x) and torch.equal(a.partner, b.partner)
    assert not torch.equal(a.x, c.x)


def test_flip_mirrors_some_samples_and_leaves_the_others():
    x = _images(64)
    out = augment(x, AugmentConfig(flip=True), torch.Generator().manual_seed(0)).x
    mirrored = [torch.equal(o, s.flip(-1)) for o, s in zip(out, x)]
    kept = [torch.equal(o, s) for o, s in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 10 < sum(mirrored) < 54


def test_shift_moves_a_pixel_at_most_the_set_distance_and_fills_with_zeros():
    x = torch.zeros(32, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    out = augment(x, AugmentConfig(shift=2), torch.Generator().manual_seed(0)).x
    for sample in out:
        (row, col), = torch.nonzero(sample[0]).tolist()
        assert abs(row - 4) <= 2 and abs(col - 4) <= 2
        assert sample.sum() == 1.0
    assert len({tuple(torch.nonzero(s[0])[0].tolist()) for s in out}) > 3


def test_mask_zeroes_one_span_of_a_signal_no_longer_than_its_share():
    x = torch.ones(32, 2, 50)
    out = augment(x, AugmentConfig(mask=0.2), torch.Generator().manual_seed(0)).x
    zeros = (out[:, 0] == 0).sum(dim=1)
    assert zeros.max() <= 10 and zeros.max() > 0
    assert torch.equal(out[:, 0] == 0, out[:, 1] == 0)  # every channel of a step is masked alike


def test_mixup_mixes_each_sample_with_its_partner_by_the_views_weight():
    x = _images()
    view = augment(x, AugmentConfig(mixup=0.4), torch.Generator().manual_seed(0))
    lam = view.lam.view(-1, 1, 1, 1)
    assert torch.allclose(view.x, lam * x + (1 - lam) * x[view.partner])
    logits, labels = torch.randn(16, 10), torch.randint(0, 10, (16,))
    ce = kd_loss(logits, labels, None, DistillConfig(), view=view)
    expected = view.lam * nn.functional.cross_entropy(logits, labels, reduction="none") + (1 - view.lam) * nn.functional.cross_entropy(
        logits, labels[view.partner], reduction="none"
    )
    assert torch.allclose(ce, expected.mean())


def test_cutmix_weight_is_the_share_of_each_sample_it_kept():
    x = torch.zeros(16, 1, 8, 8)
    x[8:] = 1.0
    view = augment(x, AugmentConfig(cutmix=1.0), torch.Generator().manual_seed(1))
    for i in range(16):
        own = (view.x[i] == x[i]).float().mean()
        if view.partner[i] // 8 != i // 8:  # a partner of the other value shows the pasted box
            assert torch.isclose(own, view.lam[i])


@pytest.mark.parametrize("setting", [{"flip": True}, {"shift": 1}, {"cutmix": 1.0}, {"mask": 0.1}])
def test_an_augmentation_the_inputs_have_no_axis_for_is_one_line(setting):
    with pytest.raises(UserError, match=rf"distill\.augment\.{next(iter(setting))} needs"):
        check_shape(AugmentConfig(**setting), (64,))
    check_shape(AugmentConfig(noise=0.1, mixup=0.2), (64,))


def test_unknown_or_out_of_range_settings_are_refused():
    with pytest.raises(ValidationError):
        AugmentConfig(rotate=10)
    with pytest.raises(ValidationError):
        AugmentConfig(mask=1.0)


class _Recording(nn.Module):
    """A teacher that records every batch it is run on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.model(x)


def _digits(digits_xy, n: int = 128) -> tuple[Dataset, Dataset]:
    x, y = digits_xy
    return Dataset(x[:n], y[:n]), Dataset(x[n : n + 64], y[n : n + 64])


def test_the_teacher_runs_on_the_very_batches_the_student_trains_on(digits_xy):
    train, val = _digits(digits_xy)
    teacher = _Recording(tiny_cnn().eval())
    cfg = DistillConfig(epochs=2, batch_size=32, augment=AugmentConfig(shift=1, mixup=0.5))
    result = fit(tiny_cnn(0.5), train, val, cfg, 0, teacher_outputs(teacher, train.x), live=teacher)
    online = teacher.seen[1:]  # the first call made the cached outputs
    assert len(online) == 2 * 4
    assert all(b.shape == (32, 1, 8, 8) for b in online)
    # Augmented: no online batch is a batch of original training samples.
    originals = torch.from_numpy(train.x)
    assert not any(any(torch.equal(s, o) for o in originals) for b in online for s in b[:4])
    assert result.teacher_seconds > 0


def test_without_augmentation_the_cached_outputs_serve_and_the_teacher_never_runs(digits_xy):
    train, val = _digits(digits_xy)
    teacher = _Recording(tiny_cnn().eval())
    outputs = teacher_outputs(teacher, train.x)
    result = fit(tiny_cnn(0.5), train, val, DistillConfig(epochs=1), 0, outputs, live=teacher)
    assert len(teacher.seen) == 1 and result.teacher_seconds == 0


def test_augmenting_against_outputs_of_a_teacher_that_cannot_run_is_one_line(digits_xy):
    train, val = _digits(digits_xy)
    outputs = TeacherOutputs(np.zeros((len(train), 10), np.float32))
    cfg = DistillConfig(epochs=1, augment=AugmentConfig(mixup=0.2))
    with pytest.raises(UserError, match="runs the teacher on every augmented batch"):
        fit(tiny_mlp(), train, val, cfg, 0, outputs)


def test_labels_alone_train_on_augmented_views_without_a_teacher(digits_xy):
    train, val = _digits(digits_xy)
    cfg = DistillConfig(epochs=2, augment=AugmentConfig(flip=True, mixup=0.2))
    result = fit(tiny_cnn(0.5), train, val, cfg, 0)
    assert result.epochs_run == 2 and result.teacher_seconds == 0


def test_a_run_with_augmentation_reports_the_teacher_online_and_its_cost(tmp_path):
    config = tiny_run_config()
    config["tiers"] = config["tiers"][:1]
    config["distill"]["augment"] = {"shift": 1, "mixup": 0.2}
    report = pipeline.run(parse_config(config, "test"), tmp_path / "run").report
    (student,) = report.students
    assert student.distill["augment"] == "shift 1, mixup 0.2"
    assert "online" in student.distill["teacher_outputs"]
    assert student.distill["teacher_online_s"] > 0
