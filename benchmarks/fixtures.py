"""The digits models the figures measure, made once per process with the library's own functions
and the built-in example's settings (edgedistill/examples/digits.toml), never with copies of them.

Data: the example's digits split 60 / 20 / 20 (train / validation / held-out) with its seed. The
held-out fifth is never trained or early-stopped on: it is the test set of the accuracy figures
and the calibration inputs of int8 (which needs inputs apart from the ones it is scored on).
"""

from __future__ import annotations

import functools
import multiprocessing
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from edgedistill.compress import budget as budgets
from edgedistill.compress.distill import DistillConfig, TeacherOutputs, accuracy, fit, teacher_outputs
from edgedistill.compress.quantize import QuantResult, quantize
from edgedistill.compress.search import search
from edgedistill.config import RunConfig, load_config
from edgedistill.data.arrays import Dataset, load_arrays, split
from edgedistill.examples.digits import config_path
from edgedistill.export.onnx import OnnxArtifact, OnnxExport, export_onnx
from edgedistill.tasks import ArrayTask
from edgedistill.tasks.classification import CLASSIFICATION
from edgedistill.teachers import load_teacher
from edgedistill.threads import cores, torch_threads

# The example's middle tier (<= 20 % of the teacher's parameters): its pruned student is "a digits student".
STUDENT_TIER = "fifth"
HELD_OUT_FRACTION = 0.2
# The models here are trained at one torch thread: on a shared 2-core machine torch's default two
# threads made these small models train several times slower (see the scaling figure), and a fixed
# count keeps them the same whichever figure asks first.
TRAIN_THREADS = 1
T = TypeVar("T")


@dataclass(frozen=True)
class Split:
    """Train / validation (early stopping) / held-out (test, int8 calibration) of one task."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int


@dataclass(frozen=True)
class Exported:
    """A model, its fp32 ONNX export and edgedistill's int8 of that file."""

    model: nn.Module
    fp32: OnnxArtifact
    int8: QuantResult


@functools.cache
def example() -> RunConfig:
    """The built-in example's run config: seed, teacher training, distillation, export and quantize
    settings; training at TRAIN_THREADS threads, so figures do not depend on the thread probe."""
    cfg = load_config(config_path("digits"))
    update = {s: getattr(cfg, s).model_copy(update={"threads": TRAIN_THREADS}) for s in ("distill", "teacher_training")}
    return cfg.model_copy(update=update)


@functools.cache
def workdir() -> Path:
    """A temporary folder for this process's files, removed when the process ends."""
    return Path(_tmp().name)


@functools.cache
def _tmp() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="edgedistill-bench-")


def held_out_split(source: str) -> Split:
    """A built-in source split as the figures split it: the example's validation share and seed,
    and HELD_OUT_FRACTION held out."""
    cfg = example()
    x, y, classes = load_arrays(source)
    s = split(x, y, classes, source, cfg.data.val_fraction, HELD_OUT_FRACTION, cfg.seed)
    return Split(s.train, s.val, s.calib, s.num_classes)


def trained_teacher(data: Split) -> nn.Module:
    """The example's teacher factory trained on `data`'s labels with its `teacher_training` and seed."""
    cfg = example()
    torch.manual_seed(cfg.seed)  # the factory initialises from the global RNG, as in the pipeline
    with torch_threads(TRAIN_THREADS):
        return fit(load_teacher(cfg.teacher), data.train, data.val, cfg.teacher_training, cfg.seed).model


@functools.cache
def digits() -> Split:
    return held_out_split(example().data.source)


@functools.cache
def teacher() -> nn.Module:
    """The digits teacher trained on labels with the example's factory, `teacher_training` and seed."""
    return trained_teacher(digits())


def kd_temperature(cfg: DistillConfig, task: ArrayTask = CLASSIFICATION) -> float:
    """The temperature KD runs at under `cfg` for `task`: the config's, or the task's own default."""
    return task.temperature if cfg.temperature is None else cfg.temperature


def parallel_seeds(job: Callable[..., T], cases: int, seeds: range, *args: object) -> list[tuple[T, ...]]:
    """`job(case, seed, *args)` for every case index and seed, in one worker process per core;
    the results grouped by case, in seed order. Workers are spawned, not forked: a forked torch
    may hang on the OpenMP pool its parent started."""
    jobs = [(i, seed) for i in range(cases) for seed in seeds]
    with ProcessPoolExecutor(min(cores(), len(jobs)), multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(job, *zip(*jobs), *([a] * len(jobs) for a in args)))
    return [tuple(d for (j, _), d in zip(jobs, done) if j == i) for i in range(cases)]


@functools.cache
def cached_outputs() -> TeacherOutputs:
    """The teacher's logits on the training split, computed once: edgedistill's teacher-output cache."""
    return teacher_outputs(teacher(), digits().train.x)


@functools.cache
def student() -> nn.Module:
    """The example's STUDENT_TIER student: pruned from the teacher by `search` to the tier's budget,
    then distilled with the example's settings against the cached teacher outputs."""
    cfg, data, t = example(), digits(), teacher()
    tier = next(tier for tier in cfg.tiers if tier.name == STUDENT_TIER)
    shape = data.train.x.shape[1:]
    resolved = budgets.resolve(tier.budget, budgets.measure(t, shape))
    candidate = search(tier.student, t, shape, resolved)
    with torch_threads(TRAIN_THREADS):
        return fit(candidate.model, data.train, data.val, cfg.distill, cfg.seed, cached_outputs()).model


@functools.cache
def exported(role: str) -> Exported:
    """"teacher" or "student", exported to ONNX and quantized to int8 the way the pipeline does."""
    model = {"teacher": teacher, "student": student}[role]()
    cfg, data = example(), digits()
    folder = workdir() / f"digits-{role}"
    e = cfg.export
    fp32 = export_onnx(
        model, data.val.x[:2], data.val.x, folder / "model.onnx",
        OnnxExport(opset=e.opset, simplify=e.simplify, parity_tolerance=e.parity_tolerance),
    )
    int8 = quantize(
        fp32.path, folder / "model.int8.onnx", cfg.quantize.methods_for(fp32.path), data.test.x,
        lambda out: accuracy(out, data.val.y), data.val.x, cfg.quantize.max_score_drop,
    )
    return Exported(model, fp32, int8)


def epochs(cfg: DistillConfig, n: int) -> DistillConfig:
    """`cfg` limited to `n` epochs (quick mode), early stopping unchanged."""
    return cfg.model_copy(update={"epochs": min(cfg.epochs, n)})


