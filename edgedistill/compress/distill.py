"""Knowledge distillation: the task's loss to the teacher's outputs (Hinton KD on logits for
classification), optional feature matching, one training loop for every array task.

The teacher's outputs are computed once (`teacher_outputs`) and passed to every student's `fit`,
so the teacher never runs twice on the same batch; with `augment` on, the teacher runs online
instead, on each augmented batch the student sees (consistent augmentation). Model, optimizer and sampler are built in
`_build` alone, the one place a distributed launcher needs to change.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, TensorDataset

from edgedistill.compress.augment import AugmentConfig, View, augment, check_shape
from edgedistill.compress.budget import measure
from edgedistill.data.arrays import Dataset
from edgedistill.distributed import World
from edgedistill.errors import UserError
from edgedistill.finite import check_epoch
from edgedistill.tasks import ArrayTask, Reference
from edgedistill.tasks.classification import CLASSIFICATION
from edgedistill.tasks.heads import join
from edgedistill.threads import ThreadChoice, choose, torch_threads


class FeaturePair(BaseModel):
    """Match the output of a student layer to a teacher layer (names as in `named_modules()`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    student: str = Field(description="Student layer name, e.g. \"features.3\".")
    teacher: str = Field(description="Teacher layer name whose output the student layer learns to match.")


class DistillConfig(BaseModel):
    """How students (and a teacher trained from labels) are trained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(60, ge=1, description="Most epochs to train; early stopping may end sooner.")
    batch_size: int = Field(64, ge=1, description="Training batch size.")
    lr: float = Field(3e-3, gt=0, le=1e6, description="AdamW learning rate (cosine-annealed over the epochs); at most 1e6.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    temperature: float | None = Field(
        None, gt=0,
        description="KD softmax temperature; default the task's: 4 for classification and multilabel, 1 for segmentation "
        "(per pixel, 4 lost to training from scratch in benchmark figure 13).",
    )
    alpha: float = Field(
        0.7, ge=0, le=1,
        description="Weight of the loss to the teacher; 1 - alpha weights the task's loss on labels (cross-entropy, MSE, BCE).",
    )
    features: tuple[FeaturePair, ...] = Field((), description="Layers whose outputs the student learns to match.")
    feature_weight: float = Field(1.0, ge=0, description="Weight of the feature-matching (MSE) loss.")
    patience: int = Field(15, ge=1, description="Stop after this many epochs without a better validation score.")
    threads: int = Field(
        0, ge=0,
        description="torch threads while training; 0 = 1 for small students, every core for large ones (threads.choose).",
    )
    augment: AugmentConfig = Field(
        AugmentConfig(), description="Augmentations of each training batch, seen by the teacher and the student alike."
    )


@dataclass(frozen=True)
class TeacherOutputs:
    """The teacher's logits (and requested layer outputs) for every sample of one split, in order.

    `known` marks the samples the teacher answered (a record or a query budget may cover only
    some); the others are trained on their labels alone. None means every sample.
    """

    logits: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    known: np.ndarray | None = None

    @property
    def covered(self) -> int:
        """How many samples have the teacher's outputs."""
        return len(self.logits) if self.known is None else int(self.known.sum())


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    val_score: float
    val_loss: float


@dataclass(frozen=True)
class TrainResult:
    """A trained copy of the student with its best validation weights loaded."""

    model: nn.Module
    best_epoch: int
    val_score: float
    history: tuple[EpochLog, ...]
    threads: ThreadChoice
    # Seconds the teacher ran on augmented batches (0 when its cached outputs served).
    teacher_seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.history)


ProgressFn = Callable[[int, int, float], None]


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Outputs of `model` on `x`, batched, in eval mode, as float32 numpy (several outputs joined,
    `tasks.heads.join`)."""
    was_training = model.training
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            outs.append(join(model(torch.from_numpy(x[start : start + batch_size]))).float().numpy())
    model.train(was_training)
    return np.concatenate(outs)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Share of samples whose arg-max class is the label."""
    return float((logits.argmax(axis=1) == y).mean())


def teacher_outputs(
    teacher: nn.Module, x: np.ndarray, feature_layers: tuple[str, ...] = (), batch_size: int = 512
) -> TeacherOutputs:
    """Run the teacher once over `x`, keeping its logits and the outputs of `feature_layers`."""
    captured: dict[str, list[np.ndarray]] = {name: [] for name in feature_layers}
    handles = [
        _module(teacher, name, "teacher").register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(out.detach().float().numpy())
        )
        for name in feature_layers
    ]
    try:
        logits = predict(teacher, x, batch_size)
    finally:
        for h in handles:
            h.remove()
    return TeacherOutputs(logits, {name: np.concatenate(parts) for name, parts in captured.items()})


def fit(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    cfg: DistillConfig,
    seed: int,
    teacher: TeacherOutputs | None = None,
    progress: ProgressFn | None = None,
    world: World = World(),
    live: nn.Module | None = None,
    task: ArrayTask = CLASSIFICATION,
    val_teacher: np.ndarray | None = None,
    start_competes: bool = False,
) -> TrainResult:
    """Train a copy of `model` on the task's loss: to `teacher`'s outputs and the labels, or to
    either alone where the other is missing.

    With `cfg.augment` on, every batch is augmented once and `live` (the teacher as a model) is
    run on that view, so the student matches the teacher on what it sees; without it the
    cached `teacher` outputs serve. Early-stops on the task's validation score, against the
    labels or, without them, against `val_teacher` (the teacher's validation outputs); ties go
    to the lower validation loss. With `start_competes`, `model` as given is scored first, as
    epoch 0, and returned where no epoch beats it. A loss, validation outputs or weights that stop
    being finite raise `finite.Diverged` (exit 1). In a distributed `world` every rank calls this
    with the same arguments and trains its shard; the ranks' weights stay equal, so each one
    validates and stops alike.
    """
    if teacher is not None and teacher.features and teacher.known is not None:
        raise UserError("feature matching needs the teacher's layer outputs for every sample: drop distill.features")
    if teacher is not None and len(teacher.logits) != len(train):
        raise ValueError(f"teacher outputs cover {len(teacher.logits)} samples, the training split {len(train)}")
    if train.y is None and teacher is None:
        raise UserError("training needs labels or a teacher's outputs, and this data has no labels: give labels, or a teacher")
    if val.y is None and val_teacher is None:
        raise ValueError("scoring without labels needs the teacher's validation outputs")
    dense = cfg.augment.active and predict(model, train.x[:1]).ndim > 2
    signal = _signal(cfg, train, teacher, live, seed + world.rank, task, dense)
    step_macs = measure(model, train.x.shape[1:]).macs * min(cfg.batch_size, len(train))
    threads = choose(cfg.threads, step_macs, world.distributed)
    with torch_threads(threads.threads):
        trained = _fit(model, train, val, cfg, seed, signal, progress, world, Reference(val_teacher, val.y), start_competes)
    return TrainResult(*trained, threads, signal.seconds)


def _signal(
    cfg: DistillConfig, train: Dataset, teacher: TeacherOutputs | None, live: nn.Module | None, seed: int, task: ArrayTask,
    dense: bool,
) -> _Signal:
    """What each batch trains against, after refusing augmentation where it cannot work (`dense`:
    the outputs have positions, which label maps share)."""
    if cfg.augment.active:
        check_shape(cfg.augment, tuple(train.x.shape[1:]))
        if teacher is not None and live is None:
            raise UserError(
                "distill.augment runs the teacher on every augmented batch, and this teacher only has outputs for "
                "fixed inputs (recorded or query-only): drop [distill.augment], or give a teacher that runs"
            )
        if teacher is not None and cfg.features:
            raise UserError("distill.augment and distill.features cannot be combined (layer outputs are cached un-augmented): drop one")
        moves = cfg.augment.flip or cfg.augment.shift or cfg.augment.cutmix
        labelled = train.y is not None and (teacher is None or cfg.alpha < 1)
        if moves and labelled and dense:
            raise UserError(
                "distill.augment flips, shifts or cuts the inputs and the label maps would not follow: set distill.alpha = 1 "
                "(the teacher alone, run on each augmented view) or drop flip, shift and cutmix"
            )
    return _Signal(cfg, teacher, live if teacher is not None else None, torch.Generator().manual_seed(seed), task)


class _Signal:
    """The loss of one batch: against the teacher's cached outputs, or (augmenting) against the
    teacher run online on the batch's one augmented view. Counts the teacher's seconds."""

    def __init__(
        self, cfg: DistillConfig, outputs: TeacherOutputs | None, live: nn.Module | None, gen: torch.Generator, task: ArrayTask
    ) -> None:
        self.cfg, self.outputs, self.live, self.gen, self.task = cfg, outputs, live, gen, task
        self.logits = torch.from_numpy(np.nan_to_num(outputs.logits)) if outputs is not None else None
        self.known = torch.from_numpy(outputs.known) if outputs is not None and outputs.known is not None else None
        self.seconds = 0.0
        if live is not None:
            live.eval()

    def loss(self, forward: nn.Module, xb: torch.Tensor, yb: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
        """The student's loss on one batch (`yb` None: the data has no labels)."""
        if not self.cfg.augment.active:
            target = self.logits[idx] if self.logits is not None else None
            return kd_loss(join(forward(xb)), yb, target, self.cfg, self.known[idx] if self.known is not None else None, None, self.task)
        view = augment(xb, self.cfg.augment, self.gen)
        out = join(forward(view.x))
        return kd_loss(out, yb, self._teach(view.x) if self.live is not None else None, self.cfg, None, view, self.task)

    def _teach(self, x: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        with torch.no_grad():
            out = join(self.live(x)).float()
        self.seconds += time.perf_counter() - started
        return out


def _fit(
    model: nn.Module, train: Dataset, val: Dataset, cfg: DistillConfig, seed: int,
    signal: _Signal, progress: ProgressFn | None, world: World, ref: Reference, start_competes: bool,
) -> tuple[nn.Module, int, float, tuple[EpochLog, ...]]:
    """The training loop of `fit`: the best model, its epoch, its validation score, the history."""
    torch.manual_seed(seed)
    student = copy.deepcopy(model).train()
    pairs = cfg.features if signal.logits is not None else ()
    taps = _FeatureTaps(student, pairs, train.x[:2], signal.outputs)
    optimizer, loader, sampler, forward = _build(student, taps.parameters(), train, cfg, seed, world)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)

    best_key, best_state, best_epoch, history = None, None, 0, []
    if start_competes:
        score, loss = _scored(signal.task, predict(student, val.x), ref, cfg.temperature)
        best_key = (score, -loss)
        best_state = copy.deepcopy(student.state_dict())
    for epoch in range(1, cfg.epochs + 1):
        student.train()
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        total, count = 0.0, 0
        for xb, yb, idx in loader:
            loss = signal.loss(forward, xb, yb if train.y is not None else None, idx) + cfg.feature_weight * taps.loss(idx)
            optimizer.zero_grad()
            loss.backward()
            if world.distributed:
                world.average_gradients(taps.parameters())
            optimizer.step()
            total += loss.item() * len(xb)
            count += len(xb)
        scheduler.step()
        val_logits = predict(student, val.x)
        check_epoch(epoch, total / count, val_logits, student, cfg.lr)
        val_score, val_loss = _scored(signal.task, val_logits, ref, cfg.temperature)
        history.append(EpochLog(epoch, total / count, val_score, val_loss))
        if progress is not None:
            progress(epoch, cfg.epochs, val_score)
        key = (val_score, -val_loss)
        if best_key is None or key > best_key:
            best_key, best_epoch = key, epoch
            best_state = copy.deepcopy(student.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            break
    taps.remove()
    student.load_state_dict(best_state)
    return student.eval(), best_epoch, best_key[0], tuple(history)


def _scored(task: ArrayTask, out: np.ndarray, ref: Reference, temperature: float | None) -> tuple[float, float]:
    """The task's score of validation outputs `out`, and its mean loss on them: to the labels,
    or to the teacher without them."""
    out_t = torch.from_numpy(out)
    with torch.no_grad():
        if ref.labels is not None:
            loss = task.supervised(out_t, torch.from_numpy(ref.labels).to(task.label_dtype))
        else:
            loss = task.distill(out_t, torch.from_numpy(ref.teacher), temperature)
    return task.score(out, ref), float(loss.mean())


def _build(
    student: nn.Module, extra_params: list[nn.Parameter], train: Dataset, cfg: DistillConfig, seed: int, world: World
) -> tuple[torch.optim.Optimizer, DataLoader, Sampler, nn.Module]:
    """Optimizer, loader, sampler and the module to call: the one place a distributed run differs.

    Distributed, each rank takes its shard with a per-rank batch of batch_size / ranks, so the
    effective batch (and so the learning-rate schedule) is that of a single-process run.
    """
    optimizer = torch.optim.AdamW(
        [*student.parameters(), *extra_params], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    # Data without labels still yields a (placeholder) label per sample: the loader's batches keep one shape.
    labels = torch.from_numpy(train.y) if train.y is not None else torch.zeros(len(train))
    dataset = TensorDataset(torch.from_numpy(train.x), labels, torch.arange(len(train)))
    if not world.distributed:
        sampler: Sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        return optimizer, DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler), sampler, student
    sampler = DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_size=max(1, cfg.batch_size // world.size), sampler=sampler)
    return optimizer, loader, sampler, DistributedDataParallel(student)


def kd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    teacher_logits: torch.Tensor | None,
    cfg: DistillConfig,
    known: torch.Tensor | None = None,
    view: View | None = None,
    task: ArrayTask = CLASSIFICATION,
) -> torch.Tensor:
    """alpha * (loss to the teacher) + (1 - alpha) * (loss on labels) per sample, averaged, each
    the task's own (KD at temperature and cross-entropy for classification); a sample without
    teacher outputs (`known` False) gets the label loss alone, at full weight. Without labels,
    the teacher's alone. On an augmented `view` whose samples were mixed, the labels mix as the
    inputs did."""
    if labels is None:
        return task.distill(logits, teacher_logits, cfg.temperature).mean()
    supervised = _supervised(task, logits, labels.to(task.label_dtype), view)
    if teacher_logits is None:
        return supervised.mean()
    mixed = cfg.alpha * task.distill(logits, teacher_logits, cfg.temperature) + (1 - cfg.alpha) * supervised
    if known is not None:
        mixed = torch.where(known, mixed, supervised)
    return mixed.mean()


def _supervised(task: ArrayTask, out: torch.Tensor, labels: torch.Tensor, view: View | None) -> torch.Tensor:
    """Per-sample label loss; on a view whose samples were mixed, lam of each sample's own labels'
    loss and 1 - lam of its partner's."""
    own = task.supervised(out, labels)
    if view is None or view.partner is None:
        return own
    return view.lam * own + (1 - view.lam) * task.supervised(out, labels[view.partner])


def _module(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise UserError(f"distill.features names {role} layer {name!r}, which the {role} lacks: use a name from named_modules()")
    return modules[name]


class _FeatureTaps:
    """Forward hooks on the student's matched layers, with learned projections to the teacher's shapes."""

    def __init__(self, student: nn.Module, pairs: tuple[FeaturePair, ...], probe: np.ndarray, teacher: TeacherOutputs | None) -> None:
        self.pairs = pairs
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [
            _module(student, p.student, "student").register_forward_hook(
                lambda _m, _i, out, name=p.student: self.outputs.__setitem__(name, out)
            )
            for p in pairs
        ]
        self.targets = {p.teacher: torch.from_numpy(teacher.features[p.teacher]) for p in pairs} if pairs else {}
        self.projections = nn.ModuleDict()
        if pairs:
            with torch.no_grad():
                student.eval()
                student(torch.from_numpy(probe))
                student.train()
            for i, p in enumerate(pairs):
                self.projections[str(i)] = _projection(self.outputs[p.student].shape[1:], self.targets[p.teacher].shape[1:])

    def parameters(self) -> list[nn.Parameter]:
        return list(self.projections.parameters())

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(())
        for i, p in enumerate(self.pairs):
            projected = self.projections[str(i)](self.outputs[p.student])
            total = total + F.mse_loss(projected, self.targets[p.teacher][idx])
        return total

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _projection(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """A learned map from a student layer's output shape to the teacher's (1x1 conv or linear)."""
    if len(student_shape) == 3 and len(teacher_shape) == 3:
        return nn.Sequential(
            nn.Conv2d(student_shape[0], teacher_shape[0], 1), nn.AdaptiveAvgPool2d(tuple(teacher_shape[1:]))
        )
    if len(student_shape) == 1 and len(teacher_shape) == 1:
        return nn.Linear(student_shape[0], teacher_shape[0])
    raise UserError(
        f"cannot match a student layer of shape {tuple(student_shape)} to a teacher layer of shape "
        f"{tuple(teacher_shape)}: pair conv outputs with conv outputs, vectors with vectors"
    )
