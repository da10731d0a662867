"""Figure 10: dataset distillation. Does a training set condensed by distribution matching
(`edgedistill.compress.condense`) train the digits CNN better than as many real samples chosen at
random, and how close does it come to the whole training split?

Run: python -m benchmarks.condense [--quick]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import nn

from benchmarks import fixtures
from benchmarks.compare import mean_std
from benchmarks.results import Figure, main, table
from edgedistill.compress.condense import CondenseConfig, condense, random_subset, save, trained_accuracy
from edgedistill.compress.distill import DistillConfig
from edgedistill.data.arrays import Dataset
from edgedistill.teachers import load_teacher

HEADING = "## 10. Dataset distillation: a condensed digits training set"
PER_CLASS, QUICK_PER_CLASS = (1, 10), (1,)
SEEDS, QUICK_SEEDS = 3, 1
QUICK_ITERATIONS, QUICK_EPOCHS = 10, 3


@dataclass(frozen=True)
class Trial:
    """One seed at one size: held-out accuracies of the three training sets, and the condensed file."""

    per_class: int
    seed: int
    condensed: float
    random: float
    full: float
    seconds: float
    file_bytes: int


def architecture() -> nn.Module:
    """The example teacher's architecture (the digits CNN), freshly initialised."""
    return load_teacher(fixtures.example().teacher)


def trials(per_class: tuple[int, ...], seeds: range, cfg: CondenseConfig, train_cfg: DistillConfig) -> list[Trial]:
    """Every (seed, K): condense, then train on the condensed set, its random start and the whole split."""
    data = fixtures.digits()
    classes = tuple(str(c) for c in range(data.num_classes))
    n = len(data.train)
    out = []
    for seed in seeds:
        # The whole split does not depend on K: trained once per seed.
        full = trained_accuracy(architecture, data.train, data.val, train_cfg, seed, n, data.test)
        for k in per_class:
            made = condense(architecture, data.train, classes, cfg.model_copy(update={"per_class": k}), seed)
            path = save(made, fixtures.workdir() / f"condensed-{k}-{seed}.npz")
            subset = random_subset(data.train, classes, k, seed)  # the condensed set's own starting point
            out.append(Trial(
                k, seed,
                trained_accuracy(architecture, Dataset(made.x, made.y), data.val, train_cfg, seed, n, data.test),
                trained_accuracy(architecture, subset, data.val, train_cfg, seed, n, data.test),
                full, made.seconds, path.stat().st_size,
            ))
    return out


def run(quick: bool) -> str:
    example = fixtures.example()
    train_cfg = fixtures.epochs(example.teacher_training, QUICK_EPOCHS) if quick else example.teacher_training
    cfg = CondenseConfig(threads=fixtures.TRAIN_THREADS, **({"iterations": QUICK_ITERATIONS} if quick else {}))
    per_class = QUICK_PER_CLASS if quick else PER_CLASS
    found = trials(per_class, range(QUICK_SEEDS if quick else SEEDS), cfg, train_cfg)
    return _section(found, per_class, cfg, train_cfg)


def _pct(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _gain(rows: list[Trial]) -> tuple[float, float]:
    """Mean paired gain (condensed - random) in points and its standard error."""
    mean, std = mean_std([100 * (t.condensed - t.random) for t in rows])
    return mean, std / math.sqrt(len(rows))


def _word(gain: float, se: float, seeds: int) -> str:
    """beats / loses to when the mean paired gain is beyond two standard errors of zero, else ties with."""
    if seeds < 2:
        return "(one seed, no spread to judge by) scores " + ("above" if gain > 0 else "below")
    return "beats" if gain > 2 * se and gain > 0 else "loses to" if gain < -2 * se and gain < 0 else "ties with"


def _full_file_bytes() -> int:
    """Bytes of the whole training split as the same kind of .npz (x and y, uncompressed)."""
    train = fixtures.digits().train
    path = fixtures.workdir() / "train.npz"
    np.savez(path, x=train.x, y=train.y)
    return path.stat().st_size


def _section(found: list[Trial], per_class: tuple[int, ...], cfg: CondenseConfig, train_cfg: DistillConfig) -> str:
    data = fixtures.digits()
    rows, verdicts = [], []
    for k in per_class:
        mine = [t for t in found if t.per_class == k]
        gain, se = _gain(mine)
        rows.append([
            k, f"{k * data.num_classes:,}", f"{mine[0].file_bytes / 1024:,.1f}", f"{np.median([t.seconds for t in mine]):.0f}",
            _pct([t.condensed for t in mine]), _pct([t.random for t in mine]), _pct([t.full for t in mine]),
            f"{gain:+.2f} ± {se:.2f}", f"{sum(t.condensed > t.random for t in mine)} / {len(mine)}",
        ])
        word = _word(gain, se, len(mine))
        verdicts.append(
            f"at {k} per class the condensed set {word} a random real subset of its size ({gain:+.2f} points, "
            f"± {se:.2f} s.e.) and is {100 * (np.mean([t.full for t in mine]) - np.mean([t.condensed for t in mine])):.2f} "
            "points below the whole split"
        )
    body = table(
        ["per class", "samples", "file KiB", "condensing s (median)", "condensed %", "random subset %", "whole split %",
         "gain over random (pt, ± s.e.)", "seeds better"],
        rows,
    )
    seeds = len({t.seed for t in found})
    return "\n".join([
        "What: held-out accuracy of the digits CNN (the example's teacher architecture, 160k parameters) trained from "
        "scratch on labels alone on (a) a set of K synthetic inputs per class condensed from the training split by "
        "`edgedistill.compress.condense` (distribution matching, Zhao & Bilen, WACV 2023), (b) K real samples per "
        "class chosen at random, which is also where (a) starts from, and (c) the whole training split "
        f"({len(data.train):,} samples).",
        "",
        f"How: condensing runs {cfg.iterations} iterations; each draws a freshly initialised digits CNN (eval mode, "
        f"no training), embeds up to {cfg.batch_real} real samples per class and the synthetic ones (the input of its "
        "last linear layer), "
        + (f"both shifted by the same random translation of up to {cfg.shift} pixel(s), " if cfg.shift else "unaugmented, ")
        + f"and takes an Adam step (lr {cfg.lr:g}) on the synthetic inputs against the summed squared "
        "distance of the class-mean embeddings; values are clamped to the real range. Each set is then trained "
        f"with `trained_accuracy`: the example's `[teacher_training]` (up to {train_cfg.epochs} epochs, batch "
        f"{train_cfg.batch_size}, AdamW lr {train_cfg.lr:g}, patience {train_cfg.patience}), a small set's epochs and "
        "patience scaled up to the whole split's optimiser steps (at most 5x); one initialisation per seed for all "
        "three sets; early stopping on the validation fifth; accuracy on the held-out fifth "
        f"({len(data.test):,} digits), never trained or early-stopped on. {seeds} seed(s) (0–{seeds - 1}): each seeds "
        "the random subset, the condensation and the training. Spread: ± sample standard deviation over seeds; the "
        f"gain is paired by seed. torch at {fixtures.TRAIN_THREADS} thread. Files: `condense.save`'s .npz "
        f"(uncompressed float32); the whole split as the same kind of file is {_full_file_bytes() / 1024:,.1f} KiB.",
        "",
        body,
        "",
        "Verdict: " + "; ".join(verdicts) + ".",
    ])


FIGURE = Figure("condense", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
