"""What the students of an arrays run train on: the training split, a set given instead of it
(`data.train`, e.g. one made by `edgedistill condense`), synthetic inputs made from the teacher
(`data.synthetic`, data-free distillation), or these together.

The teacher, when the run trains it, always trains on the source's own training split; the
validation split stays real, as it scores every student.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torch import nn

from edgedistill.config import RunConfig
from edgedistill.data.arrays import Dataset, Splits, load_arrays
from edgedistill.compress.distill import predict
from edgedistill.data.synthetic import InputPrior, synthesize
from edgedistill.errors import UserError
from edgedistill.fileio import file_digest
from edgedistill.progress import Progress
from edgedistill.rundir import Made, RunDir, StageId, input_key
from edgedistill.teachers import OnnxTeacher

SYNTHETIC = "data/synthetic.npz"


@dataclass(frozen=True)
class TrainingSet:
    """The splits the students use, their key, and what the report says of their training inputs."""

    splits: Splits
    key: str
    report: dict


def students_train(
    cfg: RunConfig, rd: RunDir, splits: Splits, data_key: str, teacher: nn.Module | None, teacher_key: str,
    progress: Progress,
) -> TrainingSet:
    """The config's training set for the students, keyed on its content (and the teacher's, for synthetic inputs)."""
    d, report = cfg.data, {}
    if d.train is not None:
        splits = given_train(cfg, splits)
        data_key = input_key(data_key, "train", file_digest(Path(d.train)))
        report["train_source"] = d.train
    if d.synthetic is None:
        return TrainingSet(splits, data_key, report)
    if splits.num_classes < 2:
        raise UserError(
            "data.synthetic makes inputs the teacher gives each class to, which needs a classifier's class labels; this data "
            "has none: drop data.synthetic"
        )
    if teacher is None or isinstance(teacher, OnnxTeacher):
        raise UserError(
            f"data.synthetic optimises inputs through the teacher's gradients, which a {cfg.teacher.kind} teacher does not give: "
            "give a PyTorch teacher (factory or .pt2), or drop data.synthetic"
        )
    key = input_key(teacher_key, d.synthetic, splits.input_shape, cfg.seed)
    made = _synthetic(cfg, rd, splits, teacher, key, progress)
    real = _real_part(splits.train, d.synthetic.real, cfg.seed)
    train = Dataset(np.concatenate([real.x, made.x]), np.concatenate([real.y, made.labels]))
    # With no real training input, int8 is calibrated on the synthetic ones too.
    calib = splits.calib if len(real) else Dataset(made.x[: len(splits.calib)], made.labels[: len(splits.calib)])
    report |= {
        "synthetic": len(made.x), "real_train": len(real), "synthesis": made.how,
        "synthetic_agreement": made.agreement, "synthesis_s": round(made.seconds, 1),
        "synthetic_labels": "the teacher's class for each synthetic input",
        "calibration": "real" if len(real) else "synthetic",
        "validation": "real: early stopping and every score",
    }
    return TrainingSet(replace(splits, train=train, calib=calib), input_key(data_key, rd.made_key(StageId("synthetic")), len(real)), report)


def given_train(cfg: RunConfig, splits: Splits) -> Splits:
    """The splits with `data.train`'s set (if any) as the training split, checked against the
    run's inputs and classes."""
    if cfg.data.train is None:
        return splits
    path = Path(cfg.data.train)
    x, y, _ = load_arrays(str(path))
    if tuple(x.shape[1:]) != splits.input_shape:
        raise UserError(
            f"data.train {path} holds inputs of shape {tuple(x.shape[1:])}, the data source {splits.input_shape}: "
            "make it from the same data (edgedistill condense with this config)"
        )
    if (y is None) != (splits.train.y is None):
        raise UserError(f"data.train {path} {'lacks' if y is None else 'has'} labels and the data source {'has' if y is None else 'lacks'} them: make it from the same data")
    if splits.num_classes and (int(y.max()) >= splits.num_classes or int(y.min()) < 0):
        raise UserError(f"data.train {path} has labels outside 0..{splits.num_classes - 1}, the source's classes: make it from the same data")
    return replace(splits, train=Dataset(x, y))


@dataclass(frozen=True)
class _Made:
    """Synthetic inputs with the teacher's class for each (their labels) and how they were made."""

    x: np.ndarray
    labels: np.ndarray
    how: str
    agreement: float
    seconds: float


def _synthetic(cfg: RunConfig, rd: RunDir, splits: Splits, teacher: nn.Module, key: str, progress: Progress) -> _Made:
    """Synthesise once, kept in the run directory, read back on resume. The labels are the
    teacher's classes, not the targets the inputs were optimised towards: the BatchNorm term
    outweighs the class term, so the teacher gives fewer than half of them their target."""
    syn = cfg.data.synthetic

    def make() -> Made[dict]:
        batches = -(-syn.samples // syn.batch_size)
        progress.stage(f"data: synthesising {syn.samples:,} inputs from the teacher (no real training input needed)")
        with progress.task("synthesise", batches) as advance:
            # The prior is the validation split's per-channel mean, spread and range: a few numbers, no training image.
            made = synthesize(
                teacher, splits.input_shape, splits.num_classes, syn, InputPrior.of(splits.val.x), cfg.seed,
                lambda done, _total: advance(done, ""),
            )
        labels = predict(teacher, made.x).argmax(axis=1).astype(np.int64)
        # x and y, as a data source is saved: the file can train another run (data.train).
        with rd.atomic(SYNTHETIC) as tmp, open(tmp, "wb") as f:
            np.savez(f, x=made.x, y=labels, targets=made.targets)
        info = {"how": made.how, "batchnorm_layers": made.batchnorm_layers, "agreement": made.agreement, "seconds": made.seconds}
        return Made(info, (rd.path(SYNTHETIC),))

    info = rd.stage(StageId("synthetic"), key, dict, make, progress, "data: synthetic inputs made earlier, read from the run directory")
    with np.load(rd.path(SYNTHETIC)) as saved:
        return _Made(saved["x"], saved["y"], info["how"], info["agreement"], info["seconds"])


def _real_part(train: Dataset, keep: int | None, seed: int) -> Dataset:
    """The first `keep` samples of a seeded shuffle of the training split (all of it for None)."""
    if keep is None or keep >= len(train):
        return train
    idx = np.random.default_rng(seed).permutation(len(train))[:keep]
    return Dataset(train.x[idx], train.y[idx])
