"""Dataset distillation by distribution matching (Zhao & Bilen, "Dataset Condensation with
Distribution Matching", WACV 2023): a few synthetic inputs per class, learned so that under many
randomly initialised networks their mean embedding matches that of the class's real inputs.

No network is trained while condensing: each iteration draws a fresh one of the given
architecture, so the synthetic set cannot overfit one set of weights. The embedding is the input
of the model's last `nn.Linear` (its classifier head), which makes any classifier usable.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from edgedistill.compress.budget import measure
from edgedistill.compress.distill import DistillConfig, accuracy, fit, predict
from edgedistill.data.arrays import Dataset
from edgedistill.errors import UserError
from edgedistill.fileio import atomic_path
from edgedistill.teachers import FactoryTeacher, TeacherConfig, load_teacher
from edgedistill.threads import choose, torch_threads

Architecture = Callable[[], nn.Module]
# What `save` writes: the inputs, labels and class names a data source reads, and how they were made.
_ARRAYS = {"x", "y", "classes", "how"}
# Most times `score` scales a small set's epochs: on digits at 10 samples, 17x (as many steps as the
# whole split) gave the accuracies of 5x, in 3x the time.
MAX_SCALE = 5.0


class CondenseConfig(BaseModel):
    """How a condensed training set is learned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_class: int = Field(10, ge=1, description="Synthetic samples per class.")
    iterations: int = Field(100, ge=1, description="Optimisation steps, each under a freshly initialised network.")
    lr: float = Field(0.05, gt=0, description="Adam learning rate of the synthetic inputs.")
    batch_real: int = Field(128, ge=1, description="Real samples per class embedded each iteration.")
    # Off by default: on 8x8 digits a 1-pixel shift measured no gain (K = 1 and 10, 3 seeds each:
    # 88.2 % and 97.2 % without it, 87.7 % and 96.8 % with it).
    shift: int = Field(
        0, ge=0, le=16,
        description="Translate real and synthetic images alike by up to this many pixels each iteration "
        "(DSA's differentiable augmentation; images (N, C, H, W) only); 0 = off.",
    )
    threads: int = Field(
        0, ge=0,
        description="torch threads while condensing; 0 = the rule training uses (edgedistill.threads.choose) on one iteration's work.",
    )


@dataclass(frozen=True)
class Condensed:
    """A condensed training set: `per_class` inputs of each class, ordered by class."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    seconds: float
    how: str

    def __len__(self) -> int:
        return len(self.x)


def random_subset(train: Dataset, classes: tuple[str, ...], per_class: int, seed: int) -> Dataset:
    """`per_class` real samples of each class, chosen at random with `seed`, ordered by class:
    where condensation starts from, and the baseline it must beat."""
    rng = np.random.default_rng(seed)
    picks = []
    for c, name in enumerate(classes):
        members = np.flatnonzero(train.y == c)
        if len(members) < per_class:
            raise UserError(
                f"class {name} has {len(members)} training samples, fewer than the {per_class} per class asked for: "
                "ask for fewer per class"
            )
        picks.append(rng.choice(members, per_class, replace=False))
    idx = np.concatenate(picks)
    return Dataset(train.x[idx], train.y[idx])  # indexing with an array copies


def condense(
    architecture: Architecture,
    train: Dataset,
    classes: tuple[str, ...],
    cfg: CondenseConfig,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> Condensed:
    """Learn `cfg.per_class` synthetic inputs per class by distribution matching under fresh
    networks from `architecture`, starting from a random real subset; values stay within the
    real inputs' range. The same arguments give the same set (on one machine: the thread count
    is `threads.choose`'s, as in training)."""
    started = time.perf_counter()
    start = random_subset(train, classes, cfg.per_class, seed)
    per_iteration = len(start) + sum(min(cfg.batch_real, int((train.y == c).sum())) for c in range(len(classes)))
    threads = choose(cfg.threads, measure(architecture(), train.x.shape[1:]).macs * per_iteration)
    with torch_threads(threads.threads):
        x = _match(architecture, train, start, len(classes), cfg, seed, progress)
    how = (
        f"distribution matching: {cfg.per_class} per class, {cfg.iterations} iterations under fresh networks, "
        f"Adam lr {cfg.lr:g}, {cfg.batch_real} real samples per class per iteration, shift {cfg.shift}, "
        f"seed {seed}, {threads.threads} torch thread(s)"
    )
    return Condensed(x, start.y, classes, time.perf_counter() - started, how)


def _match(
    architecture: Architecture, train: Dataset, start: Dataset, num_classes: int, cfg: CondenseConfig, seed: int,
    progress: Callable[[int, int], None] | None,
) -> np.ndarray:
    """The optimisation of `condense`: Adam on the synthetic inputs, one fresh network an iteration."""
    syn = torch.from_numpy(start.x).requires_grad_(True)
    y_syn = torch.from_numpy(start.y)
    lo, hi = float(train.x.min()), float(train.x.max())
    members = [np.flatnonzero(train.y == c) for c in range(num_classes)]
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam([syn], lr=cfg.lr)
    for it in range(cfg.iterations):
        idx = np.concatenate([rng.choice(m, min(cfg.batch_real, len(m)), replace=False) for m in members])
        real, y_real = torch.from_numpy(train.x[idx]), torch.from_numpy(train.y[idx])
        net = _fresh(architecture, seed, it)
        # The same translation for real and synthetic inputs (DSA's "siamese" augmentation).
        offset = _offset(syn.shape, cfg.shift, rng)
        with torch.no_grad():
            real_means = _class_means(_embed(net, _shift(real, offset)), y_real, num_classes)
        syn_means = _class_means(_embed(net, _shift(syn, offset)), y_syn, num_classes)
        loss = ((real_means - syn_means) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            syn.clamp_(lo, hi)  # the student will only ever see inputs from the real range
        if progress is not None:
            progress(it + 1, cfg.iterations)
    return syn.detach().numpy().copy()


def match_distance(architecture: Architecture, x: np.ndarray, y: np.ndarray, real: Dataset, networks: int, seed: int) -> float:
    """What condensation lowers, measured without augmentation on every real sample: the sum over
    classes of ||mean real embedding - mean embedding of `x`||^2, averaged over `networks` fresh
    networks drawn from `seed`."""
    num_classes = int(max(real.y.max(), y.max())) + 1
    total = 0.0
    with torch.no_grad():
        for i in range(networks):
            net = _fresh(architecture, seed, i)
            a = _class_means(_embed(net, torch.from_numpy(real.x)), torch.from_numpy(real.y), num_classes)
            b = _class_means(_embed(net, torch.from_numpy(x)), torch.from_numpy(y), num_classes)
            total += float(((a - b) ** 2).sum())
    return total / networks


def _fresh(architecture: Architecture, seed: int, it: int) -> nn.Module:
    """A freshly initialised network, seeded by (seed, iteration); frozen, in eval mode, so batch
    norm and dropout treat real and synthetic samples alike, one sample at a time."""
    torch.manual_seed(int(np.random.SeedSequence([seed, it]).generate_state(1)[0]))
    return architecture().eval().requires_grad_(False)


def _embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the network's last nn.Linear, flattened per sample; its outputs where it has none."""
    head = next((m for m in reversed(list(net.modules())) if isinstance(m, nn.Linear)), None)
    if head is None:
        return net(x).flatten(1)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        net(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1)


def _class_means(emb: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, D): the mean embedding of each class (zero for a class with no sample)."""
    sums = torch.zeros(num_classes, emb.shape[1]).index_add(0, y, emb)
    counts = torch.bincount(y, minlength=num_classes).clamp(min=1).unsqueeze(1)
    return sums / counts


def _offset(shape: torch.Size, most: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """One translation (rows, columns) for this iteration's images, or None (off, or not images)."""
    if most == 0 or len(shape) != 4:
        return None
    dy, dx = rng.integers(-most, most + 1, size=2)
    return int(dy), int(dx)


def _shift(x: torch.Tensor, offset: tuple[int, int] | None) -> torch.Tensor:
    """`x` translated by `offset`, zero-filled; differentiable in `x`."""
    if offset is None:
        return x
    dy, dx = offset
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)))
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[..., top : top + h, left : left + w]


@dataclass(frozen=True)
class Scores:
    """Accuracy of one architecture trained from scratch on each training set, on the same real data."""

    condensed: float
    random: float
    full: float
    samples: int
    full_samples: int


def score(
    architecture: Architecture, condensed: Condensed, train: Dataset, val: Dataset, cfg: DistillConfig, seed: int,
    test: Dataset | None = None,
) -> Scores:
    """`trained_accuracy` on the condensed set, on a random real subset of its size (with
    condensation's seed, its starting point) and on the whole `train`, each from the same
    initialisation; early stopping on `val`, accuracy on `test` (default `val`)."""
    per_class = len(condensed) // len(condensed.classes)
    sets = (Dataset(condensed.x, condensed.y), random_subset(train, condensed.classes, per_class, seed), train)
    accs = [trained_accuracy(architecture, data, val, cfg, seed, len(train), test) for data in sets]
    return Scores(*accs, len(condensed), len(train))


def trained_accuracy(
    architecture: Architecture, data: Dataset, val: Dataset, cfg: DistillConfig, seed: int, full: int,
    test: Dataset | None = None,
) -> float:
    """Accuracy on `test` (default `val`) of a fresh `architecture` (initialised from `seed`)
    trained from scratch on `data`'s labels with `cfg`, early-stopped on `val`.

    A small set is one optimiser step an epoch, and at the epochs and patience of a split of
    `full` samples it stops before it has learned what it holds (digits, 10 samples: one seed in
    four stopped at 27 %). So its epochs and patience are scaled up to give it the steps the
    split gets, at most MAX_SCALE times `cfg`'s."""
    scale = min(MAX_SCALE, _steps(full, cfg.batch_size) / _steps(len(data), cfg.batch_size))
    settings = cfg.model_copy(update={"epochs": round(cfg.epochs * scale), "patience": round(cfg.patience * scale)})
    torch.manual_seed(seed)
    trained = fit(architecture(), data, val, settings, seed)
    on = test if test is not None else val
    return accuracy(predict(trained.model, on.x), on.y)


def _steps(samples: int, batch: int) -> int:
    """Optimiser steps of one epoch over `samples`."""
    return -(-samples // batch)


def save(condensed: Condensed, path: Path) -> Path:
    """Write the set as a .npz of x, y and classes (and how it was made), which
    `edgedistill.data.arrays.load_arrays` reads as a data source; atomically: never half a file."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            # A file object: given a name, numpy would add ".npz" to the temporary one.
            arrays = {"x": condensed.x, "y": condensed.y, "classes": np.array(condensed.classes), "how": np.array(condensed.how)}
            np.savez(f, **arrays)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror or exc}): choose another path") from exc
    return path


def is_condensed(path: Path) -> bool:
    """Whether `path` is a .npz that `save` wrote (the arrays it writes, "how" among them)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a lone .npy array
        return False
    with loaded:
        return _ARRAYS <= set(loaded.files)


def architecture_of(teacher: TeacherConfig) -> Architecture:
    """A factory of the teacher's architecture, freshly initialised on each call (its weights
    file, if any, is not loaded). Only a factory teacher has one; any other is refused in one line."""
    if teacher.inputs != "arrays":
        raise UserError(
            f"condense learns array inputs (digits, a .npz, image folders); a {teacher.kind} teacher's data is "
            "text, whose tokens gradients cannot move: use a config with an array source and a teacher.factory"
        )
    if not isinstance(teacher, FactoryTeacher):
        raise UserError(
            f"condense needs a PyTorch teacher factory for its architecture: a {teacher.kind} teacher ({teacher.source}) "
            'has none to initialise afresh: set teacher.factory = "module:function" returning the untrained model'
        )
    untrained = teacher.model_copy(update={"weights": None})
    load_teacher(untrained)  # an import or a factory that fails says so now, before any data is read
    return lambda: load_teacher(untrained)
