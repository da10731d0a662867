"""Figure 15: post-training int8 on the tasks beyond classification. Figure 13's distilled
students (regression, segmentation, a teacher of two outputs) quantized with each of figure 11's
int8 schemes, every layer int8: how much of the task's own score int8 costs. The hunt of figure
11 for students whose post-training int8 loses more than a point, carried to the other tasks.

Run: python -m benchmarks.ptq_tasks [--quick]
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import fixtures
from benchmarks.compare import mean_std
from benchmarks.every_task import CASES, Taught, _outputs, _teach, settings
from benchmarks.fixtures import TRAIN_THREADS, torch_threads
from benchmarks.qat import NO_FALLBACK, SCHEMES, calibration_inputs
from benchmarks.results import Figure, cores, main, table
from edgedistill.compress.distill import DistillConfig, fit
from edgedistill.compress.quantize import quantize
from edgedistill.export.onnx import OnnxExport, export_onnx
from edgedistill.ortsession import open_session, run_batched
from edgedistill.tasks import Reference

HEADING = "## 15. Post-training int8 on the tasks beyond classification"
SEEDS, QUICK_SEEDS = 3, 1
# Figure 13's cases but its classifier on unlabelled inputs (figure 11 sweeps classifiers).
STUDIED = tuple(i for i, c in enumerate(CASES) if c.distil_labels)


@dataclass(frozen=True)
class Scores:
    """Held-out scores of one student at one seed: fp32, and int8 by scheme."""

    fp32: float
    int8: dict[str, float]


def _one(index: int, seed: int, teacher: Taught, cfg: DistillConfig) -> dict[str, Scores]:
    """Every student of CASES[index] distilled at `seed`, exported and quantized (in a worker)."""
    case, data = CASES[index], CASES[index].data()
    out = _outputs(index, teacher.model)
    ref, vref = Reference(out.test, data.test.y), Reference(out.val, data.val.y)
    calib, scores = calibration_inputs(data, seed), {}
    with torch_threads(TRAIN_THREADS), tempfile.TemporaryDirectory() as tmp:
        for n, student in enumerate(case.students):
            torch.manual_seed(seed)
            model = fit(student.make(), data.train, data.val, cfg, seed, out.train, task=case.task).model
            fp32 = export_onnx(model, data.val.x[:2], data.val.x, Path(tmp) / f"{n}.onnx", OnnxExport()).path

            def held_out(path: Path) -> float:
                return case.task.score(run_batched(open_session(path, threads=1), data.test.x), ref)

            int8 = {
                s: held_out(quantize(fp32, Path(tmp) / f"{n}-{s}.onnx", (m,), calib, lambda o: case.task.score(o, vref),
                                     data.val.x, NO_FALLBACK, timing_runs=5).path)
                for s, m in SCHEMES.items()
            }
            scores[student.name] = Scores(held_out(fp32), int8)
    return scores


def _show(values: list[float], digits: int, sign: str = "") -> str:
    mean, std = mean_std(values)
    return f"{mean:{sign}.{digits}f} ± {std:.{digits}f}"


def _by_position(position: int, seed: int, teachers: tuple, cfg: DistillConfig) -> dict[str, Scores]:
    """`_one` for the position-th studied case (parallel_seeds numbers cases from 0)."""
    return _one(STUDIED[position], seed, teachers[position], cfg)


def _teacher(position: int, seed: int, cfg: DistillConfig) -> Taught:
    """The position-th studied case's teacher (`every_task._teach`)."""
    return _teach(STUDIED[position], seed, cfg)


def run(quick: bool = False) -> str:
    cfg, teacher_cfg = settings(quick)
    seeds = range(QUICK_SEEDS if quick else SEEDS)
    teachers = tuple(t for (t,) in fixtures.parallel_seeds(_teacher, len(STUDIED), range(1), teacher_cfg))
    per_case = fixtures.parallel_seeds(_by_position, len(STUDIED), seeds, teachers, cfg)
    rows, means = [], []
    for i, per_seed in zip(STUDIED, per_case):
        for student in CASES[i].students:
            scores = [p[student.name] for p in per_seed]
            for scheme in SCHEMES:
                drop = [100 * (p.int8[scheme] - p.fp32) for p in scores]
                means.append((sum(drop) / len(drop), f"{student.name} ({CASES[i].title}), {scheme}"))
                rows.append([
                    CASES[i].title, student.name, scheme, _show([p.fp32 for p in scores], 3),
                    _show([p.int8[scheme] for p in scores], 3), f"{_show(drop, 2, '+')} pt", f"{min(drop):+.2f} / {max(drop):+.2f}",
                ])
    lost, (least, name) = [m for m in means if m[0] < -1.0], min(means)
    verdict = (
        "Students whose post-training int8 loses more than a point on average: "
        + "; ".join(f"{n} ({d:+.2f} pt)" for d, n in lost)
        if lost else f"No student's post-training int8 lost more than a point on average; the largest mean loss: {name} ({least:+.2f} pt)."
    )
    return "\n".join([
        "What: figure 13's distilled students (regression R², segmentation mIoU, the two-output detector's mean of boxes' R² "
        "and scores' accuracy) as onnxruntime static int8 with every layer int8 (`compress.quantize`, no fallback), in each "
        "scheme of figure 11, beside fp32; a point is 0.01 of the task's score. Figure 11's hunt for students whose "
        "post-training int8 loses more than a point, carried from classifiers to the other tasks.",
        "",
        f"How: {len(seeds)} seeds (0–{len(seeds) - 1}); each case's teacher trained once on its labels with the example's "
        "`[teacher_training]`, each student distilled at each seed with the example's `[distill]` against the teacher's "
        "outputs (figure 13's distilled arm); MinMax calibration on as many training inputs as the run's calibration split "
        "holds (figure 11's `calibration_inputs`, drawn per seed); every score on each case's held-out 20 %, which nothing "
        f"calibrates or decides on. Seeds run in {cores()} worker processes at 1 torch thread each. Spread: ± sample "
        "standard deviation over seeds.",
        "",
        table(["task", "student", "int8 scheme", "fp32", "PTQ int8", "PTQ − fp32", "worst / best seed, pt"], rows,
              right=[False, False, False, True, True, True, True]),
        "",
        verdict,
    ])


FIGURE = Figure("ptq_tasks", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
