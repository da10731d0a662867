"""Figure 13: tasks beyond classification. One case per kind of teacher output: a small student
trained from scratch and the same student distilled from a teacher, scored on held-out data over
several seeds, as figure 1 does for classification.

- regression: vibration windows (3 axes, 128 samples) to their dominant frequency, 1-D CNNs;
- segmentation: two scikit-learn digits on a 16x16 canvas, a class per digit at every ink pixel;
- a classifier distilled on unlabelled inputs only (sensor-digits), beside the same student trained
  on the labels of a small labelled share;
- a teacher of two outputs (a detector's raw heads on digits: the ink's bounding box and the class
  logits), each output with its own task and labels.

A case is one entry of CASES: its data (made in `benchmarks.task_data`), teacher, students and
which labels each arm may use.
Teachers are trained once, in parallel worker processes; then every case's seeds run in one
worker per core, each at one torch thread.

Run: python -m benchmarks.every_task [--quick]
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from benchmarks import fixtures, tasks
from benchmarks.compare import mean_std
from benchmarks.fixtures import TRAIN_THREADS, Split, torch_threads
from benchmarks.results import Figure, cores, main, table
from edgedistill.compress.distill import DistillConfig, TeacherOutputs, fit, predict, teacher_outputs
from edgedistill.compress.families import build
from edgedistill.data.arrays import Dataset, class_labels
from edgedistill.examples.digits import cnn
from benchmarks.task_data import (
    CANVAS, SEGMENT_CLASSES, TWO_HEADS, VIBRATION, TwoHeads, boxes_and_classes, frequency_scale, segments, vibration,
    vibration_windows,
)
from edgedistill.tasks import ARRAY_TASKS, ArrayTask, Reference
from edgedistill.teachers import load_teacher

HEADING = "## 13. Tasks beyond classification: distilled vs from scratch"
SEEDS, QUICK_SEEDS, QUICK_EPOCHS = 5, 2, 2
ARMS = ("scratch", "distilled")
# The share of the training (and validation) labels the from-scratch student of the unlabelled
# case gets: a user with many inputs and labels for one in ten of them.
LABELLED_SHARE = 0.1


@dataclass(frozen=True)
class Probe:
    """A further distilled arm with other `[distill]` settings, measured to explain a result, never
    used for the verdict (which is the pre-chosen settings' alone); `why` says when and why it was added."""

    name: str
    update: dict[str, object]
    why: str


@dataclass(frozen=True)
class Student:
    name: str
    make: Callable[[], nn.Module]


@dataclass(frozen=True)
class Case:
    """One task: its data, its teacher (`teacher` builds it untrained; it is trained on the labels
    of the training split), the students, and which labels each arm may use: the scratch arm trains
    and early-stops on `labelled` of the training and validation labels; the distilled arm on the
    teacher's outputs, with every label when `distil_labels`, with none (early stopping on agreement
    with the teacher's validation outputs) otherwise."""

    title: str
    task: ArrayTask
    data: Callable[[], Split]
    teacher_name: str
    teacher: Callable[[], nn.Module]
    students: tuple[Student, ...]
    what: str
    labelled: float = 1.0
    distil_labels: bool = True
    # how each metric of task.metrics is shown; a metric not named here is a share, shown in %
    units: Callable[[], dict[str, Unit]] = dict
    probes: tuple[Probe, ...] = ()
    # a sentence on the data computed when the figure runs (after `what`), or None
    note: Callable[[], str] | None = None

    @property
    def arms(self) -> tuple[str, ...]:
        return (*ARMS, *(p.name for p in self.probes))


@dataclass(frozen=True)
class Unit:
    """How a metric is written: value x `scale` with `digits` decimals and `suffix`."""

    scale: float = 100.0
    digits: int = 2
    suffix: str = "%"

    def show(self, v: float) -> str:
        return f"{v * self.scale:.{self.digits}f}{self.suffix}"

    def spread(self, values: tuple[float, ...]) -> str:
        mean, std = mean_std(list(values))
        return f"{mean * self.scale:.{self.digits}f} ± {self.show(std)}"

    def gain(self, mean: float, se: float) -> str:
        suffix = " pt" if self.suffix == "%" else self.suffix
        return f"{mean * self.scale:+.{self.digits}f} ± {se * self.scale:.{self.digits}f}{suffix}"


PERCENT = Unit()
# Column names of the tasks' metrics (`task.metrics` keys); the others are shown as they are.
NAMES = {"r2": "R²", "mae": "MAE", "teacher r2": "R² to the teacher's outputs", "agreement": "agreement with the teacher"}


def _name(metric: str) -> str:
    return NAMES.get(metric, metric)


def _vibration_units() -> dict[str, Unit]:
    return {"r2": Unit(1.0, 3, ""), "teacher r2": Unit(1.0, 3, ""), "mae": Unit(frequency_scale()[1], 2, " Hz")}


def _swapped_share() -> float:
    return float(vibration_windows(VIBRATION.samples, fixtures.example().seed)[2].mean())


_SHAPE = (VIBRATION.channels, VIBRATION.length)
_CANVAS = (1, CANVAS.size, CANVAS.size)
_MAPS = (SEGMENT_CLASSES, CANVAS.size, CANVAS.size)
CASES = (
    Case(
        "regression on 1-D signals", ARRAY_TASKS["regression"], vibration,
        "cnn1d, width 1", lambda: build("cnn1d", _SHAPE, (1,), 1.0),
        tuple(Student(f"cnn1d, width {w:g}", lambda w=w: build("cnn1d", _SHAPE, (1,), w)) for w in (0.125, 0.25)),
        f"**{VIBRATION.samples:,} vibration windows** made by this script (seeded): {VIBRATION.channels} axes of "
        f"{VIBRATION.length} samples at {VIBRATION.rate_hz:g} Hz, each the sum of a dominant tone and a weaker one "
        f"({VIBRATION.second[0]:g}–{VIBRATION.second[1]:g} of its amplitude), both at frequencies drawn from "
        f"{VIBRATION.band_hz[0]:g}–{VIBRATION.band_hz[1]:g} Hz and mixed onto each axis with its own gain and phase, "
        f"times a window gain of {VIBRATION.amplitude[0]:g}–{VIBRATION.amplitude[1]:g}, plus a linear drift of up to "
        f"±{VIBRATION.drift:g}, an offset and white noise (std {VIBRATION.noise:g}). Target: the dominant tone's "
        "frequency in Hz, standardised with the training split's mean and std for training (MAE is shown back in Hz). "
        "Task `regression` (MSE to the labels and to the teacher's outputs); score R² on the held-out labels.",
        units=_vibration_units, note=lambda: (
            f"In {_swapped_share():.1%} of the windows the weaker tone carries more energy than the dominant one summed "
            "over the axes (the per-axis gains turn the order round), so the window does not show which tone is the "
            "target: no model reaches R² 1."
        ),
    ),
    Case(
        "segmentation", ARRAY_TASKS["segmentation"], segments,
        "dense, width 0.5", lambda: build("dense", _CANVAS, _MAPS, 0.5),
        (Student("dense, width 0.125", lambda: build("dense", _CANVAS, _MAPS, 0.125)),),
        f"**two scikit-learn digits on a {CANVAS.size}x{CANVAS.size} canvas**, one in each half at a seeded height, "
        f"labelled per pixel: 0 for background, 1 + the digit at each ink pixel (value ≥ {CANVAS.ink:g} of full "
        f"scale), {SEGMENT_CLASSES} classes. The canvases of each split are made from that split's digit images "
        f"(figure 1's 60 / 20 / 20 split of the digits, {CANVAS.per_image:g} canvases per image), so no held-out "
        "canvas holds an image seen in training. Task `segmentation` (per-pixel cross-entropy and per-pixel KD at "
        "the task's temperature 1); score mIoU over the classes on the held-out label maps.",
        probes=(Probe(
            "distilled at temperature 4", {"temperature": 4.0},
            "the classifier's temperature, which segmentation used before this figure: its first full run found "
            "per-pixel KD at 4 losing to scratch by 29 points where 1 gained, and segmentation's default became 1 "
            "(also the pixel-wise KD of Liu et al. 2019); kept to show the difference",
        ),),
    ),
    Case(
        "a classifier distilled on unlabelled inputs only", ARRAY_TASKS["classification"], tasks.sensor,
        "the example's digits CNN", lambda: load_teacher(fixtures.example().teacher),
        tuple(Student(f"digits CNN, width {w:g}", lambda w=w: cnn(w)) for w in (0.125, 0.25)),
        "**sensor-digits** (the default example's data, figure 1's split). The teacher trains on every label of the "
        "training split. The distilled student sees the training inputs with no label (`Dataset(x, None)`) and "
        "early-stops on agreement with the teacher's validation outputs, so it uses no label at all; the "
        f"from-scratch student trains on the labels of {LABELLED_SHARE:.0%} of the training split and early-stops on "
        f"{LABELLED_SHARE:.0%} of the validation split (stratified subsets drawn with each seed): a user with many "
        "unlabelled inputs and few labels. Score: accuracy on the held-out labels.",
        labelled=LABELLED_SHARE, distil_labels=False,
    ),
    Case(
        "a teacher of two outputs", TWO_HEADS, boxes_and_classes,
        "two-head CNN, width 0.5", lambda: TwoHeads(0.5),
        tuple(Student(f"two-head CNN, width {w:g}", lambda w=w: TwoHeads(w)) for w in (0.125, 0.25)),
        "**scikit-learn's digits as a detector sees them** (figure 1's split): each digit on its own "
        f"{CANVAS.size}x{CANVAS.size} canvas at a seeded place, and a model returning two raw heads as a dict, `boxes` "
        f"(the bounding box of the pixels at or above {CANVAS.ink:g} of full scale: top, left, bottom, right, as "
        "shares of the canvas side) and `scores` (10 class logits). Labels per output, as a .npz gives them "
        "(`y_boxes`, `y_scores`): boxes learn by `regression` (MSE), scores by `classification` (KD and "
        "cross-entropy), weight 1 each. The run's score is the mean of boxes' R² and scores' accuracy on the "
        "held-out labels.",
        units=lambda: {"score": Unit(1.0, 3, ""), "boxes r2": Unit(1.0, 3, ""), "boxes teacher r2": Unit(1.0, 3, ""),
                       "boxes mae": Unit(float(CANVAS.size), 2, " px")},
    ),
)


@dataclass(frozen=True)
class Taught:
    """A case's trained teacher and what training it took."""

    model: nn.Module
    seconds: float
    best_epoch: int


@dataclass(frozen=True)
class Seed:
    """One seed of one case: held-out metrics and best epoch of every student's arms."""

    metrics: dict[str, dict[str, dict[str, float]]]  # student -> arm -> metric -> value
    best_epoch: dict[str, dict[str, int]]
    labelled: int  # training labels the scratch arm had


def _teach(index: int, _seed: int, cfg: DistillConfig) -> Taught:
    """CASES[index]'s teacher trained on its training labels with `cfg` and the example's seed (in a worker)."""
    case, data, seed = CASES[index], CASES[index].data(), fixtures.example().seed
    torch.manual_seed(seed)  # the factory initialises from the global RNG, as in the pipeline
    started = time.perf_counter()
    with torch_threads(TRAIN_THREADS):
        trained = fit(case.teacher(), data.train, data.val, cfg, seed, task=case.task)
    return Taught(trained.model, time.perf_counter() - started, trained.best_epoch)


@dataclass(frozen=True)
class _Outputs:
    train: TeacherOutputs
    val: np.ndarray
    test: np.ndarray


_OUTPUTS: dict[int, _Outputs] = {}


def _outputs(index: int, teacher: nn.Module) -> _Outputs:
    """The teacher's outputs on every split of its case, once per process (the library's cache)."""
    if index not in _OUTPUTS:
        data = CASES[index].data()
        with torch_threads(TRAIN_THREADS):
            _OUTPUTS[index] = _Outputs(teacher_outputs(teacher, data.train.x), predict(teacher, data.val.x), predict(teacher, data.test.x))
    return _OUTPUTS[index]


def labelled_part(data: Dataset, share: float, seed: int) -> Dataset:
    """`share` of `data`, drawn with `seed` (stratified for class labels); all of it at share 1."""
    if share >= 1.0:
        return data
    stratify = data.y if class_labels(data.y) else None
    rows, _ = train_test_split(np.arange(len(data)), train_size=share, random_state=seed, stratify=stratify)
    return Dataset(data.x[rows], data.y[rows])


def _one_seed(index: int, seed: int, teachers: tuple[Taught, ...], cfg: DistillConfig) -> Seed:
    """Both arms of every student of CASES[index] at one seed (in a worker process, at one thread)."""
    case, data = CASES[index], CASES[index].data()
    out = _outputs(index, teachers[index].model)
    train_few, val_few = labelled_part(data.train, case.labelled, seed), labelled_part(data.val, case.labelled, seed)
    if case.distil_labels:
        distil_train, distil_val, val_teacher = data.train, data.val, None
    else:
        distil_train, distil_val, val_teacher = Dataset(data.train.x, None), Dataset(data.val.x, None), out.val
    metrics, best = {}, {}
    with torch_threads(TRAIN_THREADS):
        for student in case.students:
            torch.manual_seed(seed)
            model = student.make()  # one initialisation per seed, shared by both arms (fit trains a copy)
            runs = {
                "scratch": fit(model, train_few, val_few, cfg, seed, task=case.task),
                "distilled": fit(model, distil_train, distil_val, cfg, seed, out.train, task=case.task, val_teacher=val_teacher),
            }
            for probe in case.probes:
                runs[probe.name] = fit(
                    model, distil_train, distil_val, cfg.model_copy(update=probe.update), seed, out.train,
                    task=case.task, val_teacher=val_teacher,
                )
            ref = Reference(out.test, data.test.y)
            metrics[student.name] = {arm: case.task.metrics(predict(r.model, data.test.x), ref) for arm, r in runs.items()}
            best[student.name] = {arm: r.best_epoch for arm, r in runs.items()}
    return Seed(metrics, best, len(train_few))


@dataclass(frozen=True)
class Row:
    """One student of one case, its arms paired by seed."""

    student: Student
    params: int
    seeds: tuple[Seed, ...]

    def values(self, arm: str, metric: str) -> tuple[float, ...]:
        return tuple(s.metrics[self.student.name][arm][metric] for s in self.seeds)

    def gain(self, metric: str, arm: str = "distilled") -> tuple[float, float]:
        """Mean paired gain of `arm` over scratch on `metric`, and its standard error."""
        mean, std = mean_std([d - s for d, s in zip(self.values(arm, metric), self.values("scratch", metric))])
        return mean, std / math.sqrt(len(self.seeds))

    def verdict(self, metric: str, arm: str = "distilled") -> str:
        """won / lost when the mean paired gain is beyond two standard errors of zero, else tie."""
        mean, se = self.gain(metric, arm)
        if mean > 2 * se and mean > 0:
            return "won"
        if mean < -2 * se and mean < 0:
            return "lost"
        return "tie"

    def best_epoch(self, arm: str) -> float:
        return statistics.median(s.best_epoch[self.student.name][arm] for s in self.seeds)


@dataclass(frozen=True)
class Result:
    """One case measured: its teacher's held-out metrics and size, and a row per student."""

    case: Case
    teacher: dict[str, float]
    teacher_params: int
    taught: Taught
    rows: tuple[Row, ...]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_all(seeds: range, cfg: DistillConfig, teacher_cfg: DistillConfig) -> list[Result]:
    """Every case's teacher trained (one worker per case, as cores allow), then every case at every seed."""
    teachers = tuple(t for (t,) in fixtures.parallel_seeds(_teach, len(CASES), range(1), teacher_cfg))
    per_case = fixtures.parallel_seeds(_one_seed, len(CASES), seeds, teachers, cfg)
    results = []
    for case, taught, per_seed in zip(CASES, teachers, per_case):
        data = case.data()
        with torch_threads(TRAIN_THREADS):
            teacher = case.task.metrics(predict(taught.model, data.test.x), Reference(None, data.test.y))
        rows = tuple(Row(s, _params(s.make()), per_seed) for s in case.students)
        results.append(Result(case, teacher, _params(taught.model), taught, rows))
    return results


def settings(quick: bool) -> tuple[DistillConfig, DistillConfig]:
    """The example's `[distill]` and `[teacher_training]`, at QUICK_EPOCHS for a smoke run."""
    example = fixtures.example()
    cfg, teacher_cfg = example.distill, example.teacher_training
    if quick:
        return fixtures.epochs(cfg, QUICK_EPOCHS), fixtures.epochs(teacher_cfg, QUICK_EPOCHS)
    return cfg, teacher_cfg


def run(quick: bool = False) -> str:
    cfg, teacher_cfg = settings(quick)
    seeds = range(QUICK_SEEDS if quick else SEEDS)
    return _section(measure_all(seeds, cfg, teacher_cfg), cfg, teacher_cfg, len(seeds))


def _case_section(r: Result, number: int) -> str:
    case, units = r.case, r.case.units()

    def unit(metric: str) -> Unit:
        return units.get(metric, PERCENT)

    headline, *others = list(r.teacher)
    extra = [m for m in r.rows[0].seeds[0].metrics[r.rows[0].student.name]["scratch"] if m not in r.teacher]
    arms, gained = case.arms, case.arms[1:]
    body = table(
        ["student", "params (teacher's)", f"teacher {_name(headline)}",
         *[f"{arm} {_name(headline)}" for arm in arms], *[f"{arm} − scratch" for arm in gained], "verdict",
         *[f"{arm} {_name(m)}" for m in [*others, *extra] for arm in arms],
         f"best epoch (median, {' / '.join(arms)})"],
        [
            [row.student.name, f"{row.params:,} ({r.teacher_params:,}, {r.teacher_params / row.params:.0f}x)",
             unit(headline).show(r.teacher[headline]),
             *[unit(headline).spread(row.values(arm, headline)) for arm in arms],
             *[unit(headline).gain(*row.gain(headline, arm)) for arm in gained], row.verdict(headline),
             *[unit(m).spread(row.values(arm, m)) for m in [*others, *extra] for arm in arms],
             " / ".join(f"{row.best_epoch(arm):g}" for arm in arms)]
            for row in r.rows
        ],
        right=[False, True, True, *[True] * (len(arms) + len(gained)), False,
               *[True] * (len(arms) * (len(others) + len(extra))), False],
    )
    teacher_line = ", ".join(f"{_name(m)} {unit(m).show(v)}" for m, v in r.teacher.items())
    labels = (
        "both arms train and early-stop on every label"
        if case.labelled >= 1.0 and case.distil_labels else
        f"the scratch arm had {r.rows[0].seeds[0].labelled:,} training labels"
    )
    probes = "".join(
        f" The arm \"{p.name}\" is the distilled arm with {', '.join(f'{k} = {v}' for k, v in p.update.items())}: {p.why}."
        for p in case.probes
    )
    return "\n".join([
        f"**Case {number}: {case.title}.** Data: {case.what}" + (f" {case.note()}" if case.note else ""),
        "",
        f"Teacher: {case.teacher_name}, {r.teacher_params:,} parameters, trained on the training labels "
        f"(best epoch {r.taught.best_epoch}, {r.taught.seconds:.0f} s); held-out {teacher_line}. "
        f"{labels[0].upper() + labels[1:]}.{probes}",
        "",
        body,
        "",
        _verdict(r, headline, unit(headline)),
    ])


def _verdict(r: Result, headline: str, unit: Unit) -> str:
    """In words, per student: whether distillation helped on the headline metric, with the numbers."""
    parts = []
    for row in r.rows:
        scratch, distilled = (mean_std(list(row.values(arm, headline)))[0] for arm in ARMS)
        teacher = r.teacher[headline]
        verdict = row.verdict(headline)
        said = {
            "won": "distillation helped",
            "lost": "distillation hurt",
            "tie": "distillation made no difference beyond the spread over seeds",
        }[verdict]
        parts.append(
            f"{row.student.name}: {said} ({_name(headline)} {unit.show(scratch)} from scratch, {unit.show(distilled)} distilled, "
            f"{unit.gain(*row.gain(headline))} paired; teacher {unit.show(teacher)}"
            f"{'; the distilled student passes its teacher' if distilled > teacher else ''})"
            + "".join(
                f"; {p.name}: {unit.show(mean_std(list(row.values(p.name, headline)))[0])}, "
                f"{unit.gain(*row.gain(headline, p.name))} paired ({row.verdict(headline, p.name)})"
                for p in r.case.probes
            )
        )
    return "Verdict (the example's settings): " + "; ".join(parts) + "."


def _section(results: list[Result], cfg: DistillConfig, teacher_cfg: DistillConfig, seeds: int) -> str:
    cases = "\n\n".join(_case_section(r, i) for i, r in enumerate(results, 1))
    won = sum(row.verdict(list(r.teacher)[0]) == "won" for r in results for row in r.rows)
    lost = sum(row.verdict(list(r.teacher)[0]) == "lost" for r in results for row in r.rows)
    total = sum(len(r.rows) for r in results)
    return "\n".join([
        "What: for each kind of teacher output but plain classification with labels, held-out scores of small "
        "students trained two ways with the same call, `fit(student, train, val, cfg, seed, teacher=..., task=...)`: "
        "from scratch on labels, and distilled against the teacher's cached outputs with the task's own loss. "
        "Everything is made by this script or scikit-learn; nothing is downloaded.",
        "",
        f"How: {seeds} seeds (0–{seeds - 1}); each seed fixes the student's initialisation (shared by both arms), "
        f"the data order and, where the scratch arm has only some labels, which ones. Both arms use the example's "
        f"`[distill]` settings unchanged: up to {cfg.epochs} epochs, batch {cfg.batch_size}, AdamW lr {cfg.lr:g} "
        f"(cosine), early stopping on the task's validation score (patience {cfg.patience}), best epoch kept; the "
        f"distilled arm weights the loss to the teacher alpha {cfg.alpha:g} and the labels {1 - cfg.alpha:g} "
        f"(KD at each task's own temperature: classification {fixtures.kd_temperature(cfg):g}, segmentation "
        f"{fixtures.kd_temperature(cfg, ARRAY_TASKS['segmentation']):g}; regression's MSE has none). Alpha is the library's default, chosen once for "
        "every case and seed (what a user gets without tuning), not tuned here. Teachers: one per case, trained on "
        f"labels with the example's `[teacher_training]` (alpha {teacher_cfg.alpha:g}, up to {teacher_cfg.epochs} "
        f"epochs, patience {teacher_cfg.patience}) and seed. Every score is on each case's held-out 20 %, which "
        "nothing trains or early-stops on (train / validation / held-out 60 / 20 / 20). Spread: ± sample standard "
        "deviation over seeds; differences are paired by seed, ± their standard error. Verdict: won / lost when the "
        "mean paired gain is beyond two standard errors of zero, else tie. The columns \"agreement with the teacher\" "
        "(the share of held-out samples or pixels where the student's class is the teacher's) and \"R² to the teacher's "
        "outputs\" compare the student with the teacher, not with the labels. Teachers, then seeds, run in "
        f"{cores()} worker processes at "
        f"{TRAIN_THREADS} torch thread each.",
        "",
        cases,
        "",
        f"Overall: distillation won for {won} of {total} students, lost for {lost} and tied for {total - won - lost}.",
    ])


FIGURE = Figure("every_task", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
