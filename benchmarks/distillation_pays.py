"""Figure 1: does distillation pay? The same student, same initialisation, epochs, data and seed,
trained (a) from scratch on labels and (b) with edgedistill's distillation against cached teacher
outputs; accuracy on held-out data over several seeds.

Run: python -m benchmarks.distillation_pays [--quick]
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks import fixtures, tasks
from benchmarks.compare import mean_std
from benchmarks.fixtures import Split
from benchmarks.results import Figure, main, table
from edgedistill.compress.distill import DistillConfig, accuracy, fit, predict, teacher_outputs
from edgedistill.examples.digits import cnn

HEADING = "## 1. Distillation pays: one student, from scratch vs distilled"
SEEDS, QUICK_SEEDS, QUICK_EPOCHS = 5, 2, 3
CAPPED = 0.9  # a best epoch past this share of the allowed epochs means training was cut short


@dataclass(frozen=True)
class Case:
    """A student architecture on a task, with the teacher it is distilled from."""

    task: str
    student: str
    make: Callable[[], nn.Module]
    data: Callable[[], Split]
    teacher: Callable[[], nn.Module]


CASES = (
    Case("digits", "digits CNN, width 0.125", lambda: cnn(0.125), fixtures.digits, fixtures.teacher),
    Case("digits", "digits CNN, width 0.25", lambda: cnn(0.25), fixtures.digits, fixtures.teacher),
    *(
        Case(
            "noisy-20", f"MLP {tasks.TASK.features}-{'-'.join(map(str, hidden))}-{tasks.TASK.classes}",
            lambda hidden=hidden: tasks.MLP(tasks.TASK.features, hidden, tasks.TASK.classes), tasks.noisy, tasks.teacher,
        )
        for hidden in tasks.TASK.students
    ),
)


@dataclass(frozen=True)
class Row:
    """Held-out accuracies of one case, paired by seed."""

    case: Case
    params: int
    teacher_accuracy: float
    scratch: tuple[float, ...]
    distilled: tuple[float, ...]
    best_epochs: tuple[tuple[int, int], ...]  # per seed: (scratch, distilled) epoch early stopping kept

    @property
    def gain(self) -> tuple[float, float]:
        """Mean paired gain (distilled - scratch) and its standard error."""
        mean, std = mean_std([d - s for d, s in zip(self.distilled, self.scratch)])
        return mean, std / math.sqrt(len(self.scratch))

    @property
    def verdict(self) -> str:
        """won / lost when the mean paired gain is beyond two standard errors of zero, else tie."""
        mean, se = self.gain
        if mean > 2 * se and mean > 0:
            return "won"
        if mean < -2 * se and mean < 0:
            return "lost"
        return "tie"


def measure(case: Case, seeds: range, cfg: DistillConfig) -> Row:
    data, teacher = case.data(), case.teacher()
    outputs = teacher_outputs(teacher, data.train.x)  # once, reused by every seed: the library's cache
    scratch, distilled, best_epochs = [], [], []
    for seed in seeds:
        torch.manual_seed(seed)
        model = case.make()  # one initialisation per seed, shared by both arms (fit trains a copy)
        pair = []
        for arm, teacher_out in ((scratch, None), (distilled, outputs)):
            trained = fit(model, data.train, data.val, cfg, seed, teacher_out)
            arm.append(accuracy(predict(trained.model, data.test.x), data.test.y))
            pair.append(trained.best_epoch)
        best_epochs.append((pair[0], pair[1]))
    params = sum(p.numel() for p in case.make().parameters())
    teacher_acc = accuracy(predict(teacher, data.test.x), data.test.y)
    return Row(case, params, teacher_acc, tuple(scratch), tuple(distilled), tuple(best_epochs))


def run(quick: bool = False) -> str:
    cfg = fixtures.example().distill
    if quick:
        cfg = fixtures.epochs(cfg, QUICK_EPOCHS)
    seeds = range(QUICK_SEEDS if quick else SEEDS)
    with fixtures.torch_threads(fixtures.TRAIN_THREADS):
        rows = [measure(case, seeds, cfg) for case in CASES]
    return _section(rows, cfg, len(seeds))


def _why(row: Row, cfg: DistillConfig) -> str:
    """The likely cause of a tie or loss, from the row's own figures."""
    scratch = mean_std(list(row.scratch))[0]
    distilled_best = statistics.median(d for _, d in row.best_epochs)
    if distilled_best > CAPPED * cfg.epochs:
        return (
            f"the distilled students kept their best epoch at {distilled_best:g} of the {cfg.epochs} allowed (median): "
            "they were still improving when training stopped, so the likely cause is too few epochs for the "
            "softer KD targets, not distillation itself"
        )
    if row.teacher_accuracy - scratch < 0.01:
        return (
            f"from scratch the student already reaches {scratch:.2%}, within a point of its teacher's "
            f"{row.teacher_accuracy:.2%}: there is little left for the teacher to teach"
        )
    teacher_params = sum(p.numel() for p in row.case.teacher().parameters())
    return (
        f"the student has {row.params:,} parameters, {teacher_params / row.params:.0f}x fewer than its teacher, "
        f"and stays {row.teacher_accuracy - scratch:.1%} below it from scratch; the likely cause is the capacity "
        "gap (a student this small cannot follow the teacher's soft distribution, so the KD term, weighted "
        f"{cfg.alpha:g}, competes with the labels instead of adding to them)"
    )


def _pct(values: tuple[float, ...]) -> str:
    mean, std = mean_std(list(values))
    return f"{mean:.2%} ± {std:.2%} ({min(values):.1%}–{max(values):.1%})"


def _section(rows: list[Row], cfg: DistillConfig, seeds: int) -> str:
    task = tasks.TASK
    body = table(
        ["task", "student", "params", "teacher", "from scratch", "distilled", "gain (± s.e.)", "seeds better / worse",
         "best epoch (scratch / distilled, median)", "verdict"],
        [
            [
                r.case.task, r.case.student, f"{r.params:,}", f"{r.teacher_accuracy:.2%}", _pct(r.scratch), _pct(r.distilled),
                f"{r.gain[0] * 100:+.2f} ± {r.gain[1] * 100:.2f} pt",
                f"{sum(d > s for d, s in zip(r.distilled, r.scratch))} / {sum(d < s for d, s in zip(r.distilled, r.scratch))}",
                f"{statistics.median(s for s, _ in r.best_epochs):g} / {statistics.median(d for _, d in r.best_epochs):g}",
                r.verdict,
            ]
            for r in rows
        ],
        right=[False, False, True, True, True, True, True, True, True, False],
    )
    won = sum(r.verdict == "won" for r in rows)
    lost = [r for r in rows if r.verdict == "lost"]
    return "\n".join([
        "What: held-out accuracy of one student architecture trained (a) from scratch on labels, "
        "`fit(student, train, val, cfg, seed)`, and (b) with edgedistill's distillation, the same call with "
        "the teacher's cached outputs (`teacher_outputs` once per task, Hinton KD at the example's "
        f"temperature {cfg.temperature:g} with alpha {cfg.alpha:g}, plus cross-entropy).",
        "",
        f"How: {seeds} seeds (0–{seeds - 1}); each seed fixes the student's initialisation (shared by both arms) "
        f"and the data order. Both arms use the example's `[distill]` settings: up to {cfg.epochs} epochs, "
        f"batch {cfg.batch_size}, AdamW lr {cfg.lr:g} (cosine), early stopping on validation accuracy "
        f"(patience {cfg.patience}), best epoch kept. Accuracy is on the held-out 20 %, never trained or "
        f"early-stopped on. One teacher per task, trained on labels with the example's `[teacher_training]` "
        f"and seed. torch at {fixtures.TRAIN_THREADS} thread (accuracy does not depend on it). Spread: ± sample standard "
        "deviation over seeds (min–max); the gain is paired by seed. Verdict: won / lost when the mean paired "
        "gain is beyond two standard errors of zero, else tie.",
        "",
        "Tasks: **digits** is the built-in example (scikit-learn's 8x8 digits, 60 / 20 / 20 split); its teacher "
        "is the example's CNN, the students narrower members of the same family (`examples.digits.cnn`), "
        "freshly initialised. Digits is nearly solved (its teacher's held-out accuracy is in the table), which "
        f"leaves a student little to gain, so **noisy-20** is a harder built-in task: `sklearn.datasets.make_classification` with "
        f"{task.samples} samples, {task.features} features ({task.informative} informative), {task.classes} "
        f"classes of {task.clusters_per_class} clusters (class_sep {task.class_sep:g}), and {task.label_noise:.0%} "
        "of the training and validation labels replaced by a random class; the held-out labels are clean. "
        "Noisy labels are where a teacher's soft targets should carry what the labels lack (which classes are "
        "near each other, which labels are wrong). Its teacher is an MLP "
        f"{task.features}-{'-'.join(map(str, task.teacher_hidden))}-{task.classes} trained on the noisy labels; "
        "its students are small MLPs. Nothing is downloaded.",
        "",
        body,
        "",
        f"Verdict: distillation won in {won} of {len(rows)} cases, tied in "
        f"{sum(r.verdict == 'tie' for r in rows)} and lost in {len(lost)}."
        + "".join(f" Not a win for {r.case.task} / {r.case.student}: {_why(r, cfg)}." for r in rows if r.verdict != "won"),
    ])


FIGURE = Figure("distillation", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
