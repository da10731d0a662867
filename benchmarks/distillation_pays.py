"""Figure 1: does distillation pay? The same student, same initialisation, epochs, data and seed,
trained from scratch on labels and with edgedistill's distillation, each without augmentation and
with it (for distillation, consistent augmentation: the teacher runs on the student's own
augmented view); accuracy on held-out data over several seeds. Seeds run in parallel processes,
one per core, each training at one thread.

Run: python -m benchmarks.distillation_pays [--quick]
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks import fixtures, tasks
from benchmarks.compare import mean_std
from benchmarks.fixtures import Split
from benchmarks.results import Figure, cores, main, table
from edgedistill.compress.augment import AugmentConfig
from edgedistill.compress.distill import DistillConfig, accuracy, fit, predict, teacher_outputs
from edgedistill.examples.digits import cnn

HEADING = "## 1. Distillation pays: one student, from scratch vs distilled, with and without consistent augmentation"
SEEDS, QUICK_SEEDS, QUICK_EPOCHS = 5, 2, 3
# The augmentation measured: mixup alone. A trial on the digits students (3 seeds) put it ahead of
# a 1-pixel shift, shift + mixup and noise + mixup at the example's 60 epochs; and it fits every input.
AUGMENT = AugmentConfig(mixup=0.5)
ARMS = ("scratch", "distilled", "scratch + mixup", "distilled + mixup")
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
    Case("sensor-digits", "digits CNN, width 0.125", lambda: cnn(0.125), tasks.sensor, tasks.sensor_teacher),
    Case("sensor-digits", "digits CNN, width 0.25", lambda: cnn(0.25), tasks.sensor, tasks.sensor_teacher),
)


@dataclass(frozen=True)
class Seed:
    """One seed of one case: the held-out accuracy and best epoch of every arm."""

    accuracy: dict[str, float]
    best_epoch: dict[str, int]
    teacher_seconds: float
    teacher_accuracy: float
    teacher_params: int


@dataclass(frozen=True)
class Row:
    """Held-out accuracies of one case, paired by seed."""

    case: Case
    params: int
    teacher_accuracy: float
    seeds: tuple[Seed, ...]

    def arm(self, name: str) -> tuple[float, ...]:
        return tuple(s.accuracy[name] for s in self.seeds)

    def gain(self, better: str, base: str) -> tuple[float, float]:
        """Mean paired gain of arm `better` over arm `base` and its standard error."""
        mean, std = mean_std([b - a for b, a in zip(self.arm(better), self.arm(base))])
        return mean, std / math.sqrt(len(self.seeds))

    def verdict(self, better: str, base: str) -> str:
        """won / lost when the mean paired gain is beyond two standard errors of zero, else tie."""
        mean, se = self.gain(better, base)
        if mean > 2 * se and mean > 0:
            return "won"
        if mean < -2 * se and mean < 0:
            return "lost"
        return "tie"

    @property
    def best_distilled(self) -> str:
        """The distilled arm with the higher mean accuracy."""
        return max(("distilled", "distilled + mixup"), key=lambda a: mean_std(list(self.arm(a)))[0])

    @property
    def best_scratch(self) -> str:
        return max(("scratch", "scratch + mixup"), key=lambda a: mean_std(list(self.arm(a)))[0])


def _one_seed(case_index: int, seed: int, cfg: DistillConfig) -> Seed:
    """Every arm of one case at one seed (run in a worker process, at one thread)."""
    case = CASES[case_index]
    data, teacher = case.data(), case.teacher()
    outputs = _outputs(case_index)
    torch.manual_seed(seed)
    model = case.make()  # one initialisation per seed, shared by every arm (fit trains a copy)
    acc, best, online = {}, {}, 0.0
    with fixtures.torch_threads(fixtures.TRAIN_THREADS):
        for arm in ARMS:
            arm_cfg = cfg.model_copy(update={"augment": AUGMENT}) if arm.endswith("mixup") else cfg
            taught = outputs if arm.startswith("distilled") else None
            trained = fit(model, data.train, data.val, arm_cfg, seed, taught, live=teacher)
            acc[arm] = accuracy(predict(trained.model, data.test.x), data.test.y)
            best[arm] = trained.best_epoch
            online += trained.teacher_seconds
    teacher_acc = accuracy(predict(teacher, data.test.x), data.test.y)
    return Seed(acc, best, online, teacher_acc, sum(p.numel() for p in teacher.parameters()))


@functools.cache
def _outputs(case_index: int):
    case = CASES[case_index]
    return teacher_outputs(case.teacher(), case.data().train.x)  # once per process: the library's cache


def measure_all(seeds: range, cfg: DistillConfig) -> list[Row]:
    """Every case at every seed, spread over one worker process per core."""
    rows = []
    for case, per_seed in zip(CASES, fixtures.parallel_seeds(_one_seed, len(CASES), seeds, cfg)):
        params = sum(p.numel() for p in case.make().parameters())
        rows.append(Row(case, params, per_seed[0].teacher_accuracy, per_seed))
    return rows


def run(quick: bool = False) -> str:
    cfg = fixtures.example().distill
    if quick:
        cfg = fixtures.epochs(cfg, QUICK_EPOCHS)
    seeds = range(QUICK_SEEDS if quick else SEEDS)
    return _section(measure_all(seeds, cfg), cfg, len(seeds))


def _why(row: Row, cfg: DistillConfig) -> str:
    """The likely cause of a tie or loss of the best distilled arm, from the row's own figures."""
    arm = row.best_distilled
    scratch = mean_std(list(row.arm(row.best_scratch)))[0]
    best = statistics.median(s.best_epoch[arm] for s in row.seeds)
    if best > CAPPED * cfg.epochs:
        return (
            f"the {arm} students kept their best epoch at {best:g} of the {cfg.epochs} allowed (median): "
            "they were still improving when training stopped, so the likely cause is too few epochs, not distillation itself"
        )
    if row.teacher_accuracy - scratch < 0.01:
        return (
            f"from scratch the student already reaches {scratch:.2%}, "
            f"{'above' if scratch > row.teacher_accuracy else 'within a point of'} its teacher's "
            f"{row.teacher_accuracy:.2%}: there is little left for the teacher to teach"
        )
    teacher_params = row.seeds[0].teacher_params
    return (
        f"the student has {row.params:,} parameters, {teacher_params / row.params:.0f}x fewer than its teacher, "
        f"and stays {row.teacher_accuracy - scratch:.1%} below it from scratch; the likely cause is the capacity "
        "gap (a student this small cannot follow the teacher's soft distribution, so the KD term, weighted "
        f"{cfg.alpha:g}, competes with the labels instead of adding to them)"
    )


def _pct(values: tuple[float, ...]) -> str:
    mean, std = mean_std(list(values))
    return f"{mean:.2%} ± {std:.2%}"


def _gain(row: Row, better: str, base: str) -> str:
    mean, se = row.gain(better, base)
    return f"{mean * 100:+.2f} ± {se * 100:.2f} pt ({row.verdict(better, base)})"


def _cells(r: Row) -> list[str]:
    arms = [_pct(r.arm(a)) for a in ARMS]
    epochs = " / ".join(f"{statistics.median(s.best_epoch[a] for s in r.seeds):g}" for a in ARMS)
    return [
        r.case.task, r.case.student, f"{r.params:,}", f"{r.teacher_accuracy:.2%}", *arms,
        _gain(r, "distilled", "scratch"), _gain(r, "distilled + mixup", "scratch + mixup"),
        _gain(r, "distilled + mixup", "distilled"), f"{r.best_distilled} vs {r.best_scratch}: {r.verdict(r.best_distilled, r.best_scratch)}",
        epochs,
    ]


def _section(rows: list[Row], cfg: DistillConfig, seeds: int) -> str:
    task = tasks.TASK
    body = table(
        ["task", "student", "params", "teacher", *ARMS, "KD gain, no augmentation", "KD gain, mixup in both",
         "mixup's gain to KD", "best distilled vs best scratch", "best epoch (median, arms in order)"],
        [_cells(r) for r in rows],
        right=[False, False, *[True] * 10, False],
    )
    verdicts = [r.verdict(r.best_distilled, r.best_scratch) for r in rows]
    online = sum(s.teacher_seconds for r in rows for s in r.seeds)
    won = verdicts.count("won")
    mixup_wins = sum(r.verdict("distilled + mixup", "distilled") == "won" for r in rows)
    return "\n".join([
        "What: held-out accuracy of one student architecture trained four ways with the same call, "
        "`fit(student, train, val, cfg, seed, ...)`: from scratch on labels; distilled against the teacher's cached "
        f"outputs (Hinton KD at the example's temperature {fixtures.kd_temperature(cfg):g}, alpha {cfg.alpha:g}, plus cross-entropy); "
        f"and each of these with `distill.augment = {{ mixup = {AUGMENT.mixup:g} }}`, where distillation is consistent: "
        "the teacher runs online on the very mixed batch the student sees (Beyer et al. 2022), and cross-entropy uses the mixed labels.",
        "",
        f"How: {seeds} seeds (0–{seeds - 1}); each seed fixes the student's initialisation (shared by every arm) "
        f"and the data order. Every arm uses the example's `[distill]` settings: up to {cfg.epochs} epochs, "
        f"batch {cfg.batch_size}, AdamW lr {cfg.lr:g} (cosine), early stopping on validation accuracy "
        f"(patience {cfg.patience}), best epoch kept. Accuracy is on the held-out 20 %, never trained or "
        f"early-stopped on. One teacher per task, trained on labels with the example's `[teacher_training]` "
        f"and seed. Seeds run in {cores()} worker processes at {fixtures.TRAIN_THREADS} torch thread each (accuracy does not "
        "depend on it). Spread: ± sample standard deviation over seeds; gains are paired by seed, ± their standard error. "
        "Verdict: won / lost when the mean paired gain is beyond two standard errors of zero, else tie. "
        f"The teachers ran {online:.0f} s online in all (the cost of consistent augmentation; cached outputs cost nothing per epoch).",
        "",
        "Tasks: **digits** is the clean built-in digits (scikit-learn's 8x8 digits, 60 / 20 / 20 split); its teacher "
        "is the example's CNN, the students narrower members of the same family (`examples.digits.cnn`), "
        "freshly initialised. **sensor-digits** is the default example's data: the same digits with Gaussian read "
        "noise of 0.3 of full scale (seeded), where the teacher is well below 99 % and the smallest students lose "
        "several points trained alone. **noisy-20** is `sklearn.datasets.make_classification` with "
        f"{task.samples} samples, {task.features} features ({task.informative} informative), {task.classes} "
        f"classes of {task.clusters_per_class} clusters (class_sep {task.class_sep:g}), and {task.label_noise:.0%} "
        "of the training and validation labels replaced by a random class (held-out labels clean); its teacher is an MLP "
        f"{task.features}-{'-'.join(map(str, task.teacher_hidden))}-{task.classes} trained on the noisy labels, "
        "its students small MLPs. Nothing is downloaded.",
        "",
        body,
        "",
        f"Verdict: the better distilled arm beat the better from-scratch arm in {won} of {len(rows)} cases, tied in "
        f"{verdicts.count('tie')} and lost in {verdicts.count('lost')}; consistent mixup added to plain KD in "
        f"{mixup_wins} of {len(rows)}."
        + "".join(
            f" Not a win for {r.case.task} / {r.case.student}: {_why(r, cfg)}."
            for r, v in zip(rows, verdicts) if v != "won"
        ),
    ])


FIGURE = Figure("distillation", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
