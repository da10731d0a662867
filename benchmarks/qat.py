"""Figure 11: int8 that keeps its accuracy. Post-training int8 (onnxruntime's static QDQ, as
`compress.quantize` makes it), with and without layers kept in float, against quantization-aware
training (`compress.qat`) on labels alone and with distillation, as the run's QAT stage
(`pipeline.qat`) does it; held-out accuracy over seeds, and batch-1 latency of the files.

Run: python -m benchmarks.qat [--quick]
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks import fixtures, tasks
from benchmarks.compare import interleaved, mean_std, runs_for
from benchmarks.fixtures import TRAIN_THREADS, Split, torch_threads
from benchmarks.results import Figure, cores, main, table
from edgedistill.compress import int8_speed
from edgedistill.compress import qat as fake
from edgedistill.compress.distill import DistillConfig, TeacherOutputs, TrainResult, accuracy, fit, predict, teacher_outputs
from edgedistill.compress.quantize import Int8Static, Int8StaticSymmetric, QuantizeConfig, QuantResult, quantize
from edgedistill.config import DataConfig, RunConfig, load_config
from edgedistill.examples.digits import cnn, config_path
from edgedistill.export.onnx import OnnxExport, export_onnx
from edgedistill.ortsession import open_session, run_batched, session_feed
from edgedistill.pipeline.qat import better

HEADING = "## 11. int8 that keeps its accuracy: post-training vs quantization-aware training with distillation"
SEEDS, QUICK_SEEDS, QUICK_EPOCHS, QUICK_QAT_EPOCHS = 3, 1, 3, 2
# "No fallback": a tolerance no accuracy drop reaches, so every layer stays int8.
NO_FALLBACK = 1.0
ROUNDS, QUICK_ROUNDS = 7, 3


# ---- candidate students, built here (no torchvision / timm) ----

def _separable(a: int, b: int, stride: int, act: type[nn.Module]) -> list[nn.Module]:
    """MobileNet-v1's block: depthwise 3x3 + BatchNorm + act, pointwise 1x1 + BatchNorm + act."""
    return [nn.Conv2d(a, a, 3, stride, 1, groups=a, bias=False), nn.BatchNorm2d(a), act(),
            nn.Conv2d(a, b, 1, bias=False), nn.BatchNorm2d(b), act()]


class Separable(nn.Module):
    """A MobileNet-v1-style CNN for 1x8x8 inputs: a 3x3 stem, depthwise-separable blocks
    ((channels, stride) each), global average pooling and a linear head."""

    def __init__(self, stem: int, plan: tuple[tuple[int, int], ...], act: type[nn.Module] = nn.ReLU6, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), act()]
        a = stem
        for b, stride in plan:
            layers += _separable(a, b, stride, act)
            a = b
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(a, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class InvertedResidual(nn.Module):
    """MobileNet-v2's block: expand 1x1, depthwise 3x3 (BatchNorm, ReLU6 each), linear projection
    1x1 + BatchNorm, and the identity added where the shape allows."""

    def __init__(self, a: int, b: int, stride: int, expand: int) -> None:
        super().__init__()
        h = a * expand
        self.residual = stride == 1 and a == b
        self.body = nn.Sequential(
            nn.Conv2d(a, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
            nn.Conv2d(h, b, 1, bias=False), nn.BatchNorm2d(b),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileV2(nn.Module):
    """A MobileNet-v2-style CNN for 1x8x8 inputs: stem, inverted residual blocks, a 1x1 to `last`
    channels, global average pooling and a linear head."""

    def __init__(self, stem: int, plan: tuple[tuple[int, int], ...], expand: int = 4, last: int = 64, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6()]
        a = stem
        for b, stride in plan:
            layers.append(InvertedResidual(a, b, stride, expand))
            a = b
        layers += [nn.Conv2d(a, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(last, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_MBV2_PLAN = ((8, 1), (8, 1), (8, 1), (16, 2), (16, 1), (16, 1), (24, 2), (24, 1), (24, 1))
_DW10_PLAN = ((8, 1), (8, 1), (16, 2), (16, 1), (16, 1), (32, 2), (32, 1), (32, 1), (32, 1), (32, 1))
ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "MobileNet-v2-style, 9 inverted residual blocks (expand 4, 8-16-24 ch)": lambda: MobileV2(8, _MBV2_PLAN),
    "depthwise-separable, 10 blocks (8-16-32 ch, ReLU6)": lambda: Separable(8, _DW10_PLAN),
    "depthwise-separable, 2 blocks (8-16-32 ch, ReLU6)": lambda: Separable(8, ((16, 2), (32, 2))),
    "digits CNN, width 0.125": lambda: cnn(0.125),
    "digits CNN, width 0.0625": lambda: cnn(0.0625),
}
MBV2 = next(iter(ARCHITECTURES))

# int8 schemes: onnxruntime static QDQ, MinMax calibration (the run's default method and its variants)
SCHEMES: dict[str, Int8Static] = {
    "per-channel": Int8Static(),  # the run's default
    "per-tensor": Int8Static(per_channel=False),
    "symmetric": Int8StaticSymmetric(),  # int8 activations, zero points 0, float bias: TensorRT's form
}


@dataclass(frozen=True)
class Task:
    name: str
    data: Callable[[], Split]
    teacher: Callable[[], nn.Module]
    config: Callable[[], RunConfig]


@functools.cache
def sensor_config() -> RunConfig:
    """The default example (sensor-digits) run config, training at TRAIN_THREADS like fixtures.example."""
    cfg = load_config(config_path("sensor-digits"))
    return cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"threads": TRAIN_THREADS})})


TASKS = {
    "sensor-digits": Task("sensor-digits", tasks.sensor, tasks.sensor_teacher, sensor_config),
    "digits": Task("digits", fixtures.digits, fixtures.teacher, fixtures.example),
}


@dataclass(frozen=True)
class Case:
    """One student architecture distilled on one task; int8 of it with every scheme of SCHEMES;
    the QAT arms for the schemes in `arms` (the students studied)."""

    task: str
    arch: str
    arms: tuple[str, ...] = ()


# The studied students (arms) are fixed here, chosen before this figure was written by the
# exploration the section describes; the other cases are the sweep, rerun every time. Long jobs first.
CASES = (
    Case("sensor-digits", MBV2, ("per-tensor", "per-channel")),
    Case("sensor-digits", "depthwise-separable, 10 blocks (8-16-32 ch, ReLU6)"),
    Case("sensor-digits", "depthwise-separable, 2 blocks (8-16-32 ch, ReLU6)"),
    Case("sensor-digits", "digits CNN, width 0.125"),
    Case("sensor-digits", "digits CNN, width 0.0625"),
    Case("digits", "digits CNN, width 0.125"),
)


# ---- one case at one seed ----

@dataclass(frozen=True)
class Arms:
    """Held-out accuracy of every arm of one student and scheme at one seed, and what they said."""

    ptq: float
    fallback: float
    fallback_kept: int
    qat_labels: float
    qat_kd: float
    # the run's QAT stage: whether it would train at all, what it ships and its held-out accuracy
    run_wants_qat: bool
    run_ships_qat: bool
    run_kept: int
    run_accuracy: float
    # share of held-out predictions where the fake-quantized PyTorch model (calibrated on the
    # same inputs) agrees with onnxruntime's int8 file: before QAT, and after QAT with KD
    emulation_ptq: float
    emulation_qat: float
    qat_best_epoch: int
    qat_epochs_run: int
    qat_seconds: float
    paths: dict[str, str]


@dataclass(frozen=True)
class Seed:
    params: int
    teacher: float
    fp32: float
    ptq: dict[str, float]  # scheme -> held-out accuracy of the int8 file, every layer int8
    emulation: dict[str, float]  # scheme -> agreement of the fake-quantized student with that file (see Arms)
    arms: dict[str, Arms]  # scheme -> arms, for the case's studied schemes
    # control for the studied: the fp32 student fine-tuned as QAT + KD is, without fake-quantization
    fp32_tuned: float | None
    distill_seconds: float
    fp32_path: str


def _training(cfg: RunConfig, quick: bool) -> tuple[DistillConfig, DistillConfig]:
    """The distillation settings and the QAT stage's (pipeline.qat: qat_epochs at qat_lr, default
    distill.lr / 10, patience at most qat_epochs; augmentation as in distillation)."""
    distill, q = cfg.distill, cfg.quantize
    if quick:
        distill = fixtures.epochs(distill, QUICK_EPOCHS)
    epochs = min(q.qat_epochs, QUICK_QAT_EPOCHS) if quick else q.qat_epochs
    lr = q.qat_lr or distill.lr / 10
    return distill, distill.model_copy(update={"epochs": epochs, "lr": lr, "patience": min(distill.patience, epochs)})


def calibration_inputs(data: Split, seed: int) -> np.ndarray:
    """int8 calibration inputs: as many as the run's calibration split holds (data.calib_fraction of
    the samples), drawn from the training split, so the held-out split is only ever scored on."""
    n = len(data.train) + len(data.val) + len(data.test)
    count = round(n * DataConfig.model_fields["calib_fraction"].default)
    return data.train.x[np.random.default_rng(seed).choice(len(data.train), count, replace=False)]


def _one(index: int, seed: int, folder: str, quick: bool) -> Seed:
    """CASES[index] at one seed (in a worker process)."""
    case, started = CASES[index], time.perf_counter()
    task = TASKS[case.task]
    cfg, data, teacher = task.config(), task.data(), task.teacher()
    distill, qat_cfg = _training(cfg, quick)
    out = Path(folder) / f"{index}-{seed}"
    calib = calibration_inputs(data, seed)
    how = OnnxExport(opset=cfg.export.opset, simplify=cfg.export.simplify, parity_tolerance=cfg.export.parity_tolerance)
    live = teacher if distill.augment.active else None

    def export(model: nn.Module, name: str) -> Path:
        return export_onnx(model, data.val.x[:2], data.val.x, out / f"{name}.onnx", how).path

    def held_out(path: Path) -> float:
        return accuracy(run_batched(open_session(path, threads=1), data.test.x), data.test.y)

    def int8(path: Path, method: Int8Static, name: str, max_drop: float, reference: float | None = None) -> QuantResult:
        return quantize(path, out / f"{name}.onnx", (method,), calib, lambda o: accuracy(o, data.val.y), data.val.x,
                        max_drop, timing_runs=5, reference=reference)

    with torch_threads(TRAIN_THREADS):
        outputs = teacher_outputs(teacher, data.train.x)
        torch.manual_seed(seed)
        student = fit(ARCHITECTURES[case.arch](), data.train, data.val, distill, seed, outputs, live=live).model
        distill_seconds = time.perf_counter() - started
        fp32 = export(student, "fp32")
        ptq_files = {s: int8(fp32, SCHEMES[s], f"ptq-{s}", NO_FALLBACK) for s in SCHEMES}
        tuned = None
        if case.arms:
            control = fit(student, data.train, data.val, qat_cfg, seed, outputs, live=live, start_competes=True).model
            tuned = held_out(export(control, "fp32-tuned"))
        arms = {s: _arms(Job(student, fp32, ptq_files[s], data, calib, qat_cfg, seed, outputs, live, export, held_out, int8, cfg.quantize), s)
                for s in case.arms}
    return Seed(
        sum(p.numel() for p in student.parameters()), accuracy(predict(teacher, data.test.x), data.test.y), held_out(fp32),
        {s: held_out(r.path) for s, r in ptq_files.items()},
        {s: _agreement(fake.fake_quantized(student, fake.scheme_for(SCHEMES[s])), calib, r.path, data.test.x) for s, r in ptq_files.items()},
        arms, tuned, distill_seconds, str(fp32),
    )


def _agreement(model: nn.Module, calib: np.ndarray, path: Path, x: np.ndarray) -> float:
    """Share of `x` on which a fake-quantized model, calibrated on `calib` as onnxruntime's MinMax
    is, predicts the class onnxruntime's int8 file does."""
    ours = predict(fake.calibrate(model, calib), x).argmax(axis=1)
    return float((ours == run_batched(open_session(path, threads=1), x).argmax(axis=1)).mean())


@dataclass(frozen=True)
class Job:
    """What the arms of one student share."""

    student: nn.Module
    fp32: Path
    ptq: QuantResult
    data: Split
    calib: np.ndarray
    qat_cfg: DistillConfig
    seed: int
    outputs: TeacherOutputs
    live: nn.Module | None
    export: Callable[[nn.Module, str], Path]
    held_out: Callable[[Path], float]
    int8: Callable[..., QuantResult]
    q: QuantizeConfig


def _qat(job: Job, scheme: str, outputs: TeacherOutputs | None) -> TrainResult:
    """The run's QAT stage (pipeline.qat) on the student: fake-quantized with the scheme of its
    method, ranges calibrated on the calibration inputs, then `fit` with the QAT settings (the calibrated start competing as epoch 0), against
    the teacher's outputs (and the live teacher where distillation augments) or, without them, labels."""
    model = fake.fake_quantized(job.student, fake.scheme_for(SCHEMES[scheme]))
    with fake.calibrating(model):
        predict(model, job.calib)
    return fit(
        model, job.data.train, job.data.val, job.qat_cfg, job.seed, outputs,
        live=job.live if outputs is not None else None, start_competes=True,
    )


def _arms(job: Job, scheme: str) -> Arms:
    method, q, test = SCHEMES[scheme], job.q, job.data.test.x
    fallback = job.int8(job.fp32, method, f"fallback-{scheme}", q.max_score_drop)
    emulation_ptq = _agreement(fake.fake_quantized(job.student, fake.scheme_for(method)), job.calib, job.ptq.path, test)
    labels = _qat(job, scheme, None)
    started = time.perf_counter()
    kd = _qat(job, scheme, job.outputs)
    seconds = time.perf_counter() - started
    files = {arm: job.export(fake.unwrapped(r.model), f"qat-{arm}-{scheme}") for arm, r in (("labels", labels), ("kd", kd))}
    pure = {arm: job.int8(p, method, f"qat-{arm}-{scheme}.int8", NO_FALLBACK) for arm, p in files.items()}
    # What the run's QAT stage makes of the same student: the QAT file quantized with the run's
    # tolerance against the fp32 score, shipped only where pipeline.qat.better says so.
    run = job.int8(files["kd"], method, f"qat-kd-{scheme}.run", q.max_score_drop, reference=fallback.fp32_score)
    wants = q.wants_qat(fallback)
    ships = wants and better(run, fallback, q.max_score_drop)[0]
    shipped = run if ships else fallback
    return Arms(
        job.held_out(job.ptq.path), job.held_out(fallback.path), len(fallback.kept_float),
        job.held_out(pure["labels"].path), job.held_out(pure["kd"].path),
        wants, ships, len(shipped.kept_float), job.held_out(shipped.path),
        emulation_ptq, _agreement(kd.model, job.calib, pure["kd"].path, test),
        kd.best_epoch, kd.epochs_run, seconds,
        # the files timed: the fallback's only where it kept layers in float (else it is the PTQ graph)
        {"PTQ int8": str(job.ptq.path), **({"PTQ + fallback": str(fallback.path)} if fallback.kept_float else {}),
         "QAT + KD int8": str(pure["kd"].path)},
    )


# ---- the figure ----

def measure_all(seeds: range, folder: str, quick: bool) -> list[tuple[Seed, ...]]:
    """Every case at every seed, in one worker process per core; grouped by case, in seed order."""
    return fixtures.parallel_seeds(_one, len(CASES), seeds, folder, quick)


def latency(per_case: list[tuple[Seed, ...]], quick: bool) -> tuple[list[list[str]], str]:
    """Batch-1 p50 with onnxruntime at one thread of the files of each studied student (first seed)."""
    rows, method = [], ""
    for case, seeds in zip(CASES, per_case):
        if not case.arms:
            continue
        x = TASKS[case.task].data().test.x[:1]
        files = {"fp32": seeds[0].fp32_path}
        for scheme in case.arms:
            files |= {f"{label} ({scheme})": p for label, p in seeds[0].arms[scheme].paths.items()}
        sessions = {name: open_session(Path(p), threads=1) for name, p in files.items()}
        calls = {name: functools.partial(s.run, None, session_feed(s, x)) for name, s in sessions.items()}
        runs = runs_for(calls, 0.05 if quick else 0.2, 3000)
        timings = interleaved(calls, QUICK_ROUNDS if quick else ROUNDS, runs, warmup=max(1, runs // 10))
        method = timings.method
        for name in calls:
            graph = int8_speed.optimized(Path(files[name]))
            islands = ", ".join(f"{n} {op}" for op, n in Counter(graph.islands).most_common()) or "-"
            rows.append([f"{case.arch} ({case.task})", name, f"{os.path.getsize(files[name]) / 1024:.0f} KiB",
                         f"{timings.p50_ms(name):.3f}", f"{timings.ratio('fp32', name):.2f}x" if name != "fp32" else "1.00x",
                         f"{len(graph.ops)} ({graph.qdq})", islands])
    return rows, method


def run(quick: bool = False) -> str:
    load_before = os.getloadavg()[0]
    seeds = range(QUICK_SEEDS if quick else SEEDS)
    with tempfile.TemporaryDirectory(prefix="edgedistill-qat-") as folder:
        started = time.perf_counter()
        per_case = measure_all(seeds, folder, quick)
        trained_s = time.perf_counter() - started
        timing_rows, timing_method = latency(per_case, quick)
    return _section(per_case, timing_rows, timing_method, len(seeds), quick, load_before, os.getloadavg()[0], trained_s)


def _pct(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2%} ± {std:.2%}"


def _pt(values: list[float]) -> str:
    mean, std = mean_std([v * 100 for v in values])
    return f"{mean:+.2f} ± {std:.2f} pt"


def _mean_pt(values: list[float]) -> float:
    return mean_std(values)[0] * 100


def _sweep(per_case: list[tuple[Seed, ...]]) -> tuple[str, list[tuple[float, str]]]:
    rows, ranked = [], []
    for case, seeds in zip(CASES, per_case):
        for scheme in SCHEMES:
            drops = [s.ptq[scheme] - s.fp32 for s in seeds]
            ranked.append((_mean_pt(drops), f"{case.arch} on {case.task}, {scheme}"))
            rows.append([
                case.task, case.arch, f"{seeds[0].params:,}", scheme + (" (studied)" if scheme in case.arms else ""),
                _pct([s.fp32 for s in seeds]), _pct([s.ptq[scheme] for s in seeds]), _pt(drops),
                f"{min(drops) * 100:+.2f} / {max(drops) * 100:+.2f}", _pct([s.emulation[scheme] for s in seeds]),
            ])
    body = table(["task", "candidate", "params", "int8 scheme", "fp32", "PTQ int8", "PTQ − fp32", "worst / best seed, pt",
                  "emulation: torch fake-quant = ORT int8"],
                 rows, right=[False, False, True, False, True, True, True, True, True])
    return body, sorted(ranked)


def _arms_table(per_case: list[tuple[Seed, ...]]) -> tuple[str, list[str]]:
    rows, goals = [], []
    for case, seeds in zip(CASES, per_case):
        for scheme in case.arms:
            arms = [s.arms[scheme] for s in seeds]
            fp32 = [s.fp32 for s in seeds]
            kept = [a.fallback_kept for a in arms]
            gap = [a.qat_kd - f for a, f in zip(arms, fp32)]
            ptq_gap = [a.ptq - f for a, f in zip(arms, fp32)]
            rows.append([
                f"{case.arch} ({case.task}), {scheme}", _pct(fp32), _pct([a.ptq for a in arms]),
                f"{_pct([a.fallback for a in arms])} ({'/'.join(map(str, kept))} kept)",
                _pct([a.qat_labels for a in arms]), _pct([a.qat_kd for a in arms]), _pct([s.fp32_tuned for s in seeds]),
                _pt(ptq_gap), _pt(gap),
                f"{_pct([a.run_accuracy for a in arms])} ({sum(a.run_wants_qat for a in arms)} / {sum(a.run_ships_qat for a in arms)}; "
                f"{'/'.join(str(a.run_kept) for a in arms)} kept)",
                f"{_pct([a.emulation_ptq for a in arms])} / {_pct([a.emulation_qat for a in arms])}",
            ])
            loss, qat_gain = _mean_pt(ptq_gap), _mean_pt(gap)  # each minus fp32, in points
            kd_vs_labels = _mean_pt([a.qat_kd - a.qat_labels for a in arms])
            if loss < -1:
                verdict = (f"**reached**: PTQ {loss:+.2f} pt, QAT + KD {qat_gain:+.2f} pt from fp32 (within 0.5)" if qat_gain >= -0.5
                           else f"**not reached**: PTQ {loss:+.2f} pt, QAT + KD still {qat_gain:+.2f} pt from fp32")
            else:
                verdict = (f"**premise not met**: PTQ is {loss:+.2f} pt from fp32, not more than 1 point below, so there is no "
                           f"int8 loss for QAT to win back; QAT + KD is {qat_gain:+.2f} pt from fp32"
                           + (" (within 0.5 or above)" if qat_gain >= -0.5 else " (more than 0.5 below)"))
            control = _mean_pt([a.qat_kd - s.fp32_tuned for a, s in zip(arms, seeds)])
            goals.append(f"{case.arch} on {case.task}, {scheme}: {verdict}; QAT + KD vs QAT on labels {kd_vs_labels:+.2f} pt, "
                         f"vs the fp32 control fine-tuned the same way {control:+.2f} pt; "
                         f"QAT + KD best epoch {'/'.join(str(a.qat_best_epoch) for a in arms)} of "
                         f"{'/'.join(str(a.qat_epochs_run) for a in arms)}, {mean_std([a.qat_seconds for a in arms])[0]:.0f} s a seed.")
    body = table(
        ["student, int8 scheme", "fp32", "PTQ int8", "PTQ + fallback (layers in float per seed)", "QAT, labels only",
         "QAT + KD", "control: fp32 fine-tuned as QAT + KD, no fake-quant", "PTQ − fp32", "QAT + KD − fp32", "the run ships (seeds QAT ran / shipped; layers in float)",
         "emulation: torch fake-quant = ORT int8, before / after QAT"],
        rows, right=[False, True, True, True, True, True, True, True, True, True, True],
    )
    return body, goals


def _section(per_case: list[tuple[Seed, ...]], timing_rows: list[list[str]], timing_method: str, seeds: int, quick: bool,
             load_before: float, load_after: float, trained_s: float) -> str:
    sweep, ranked = _sweep(per_case)
    arms, goals = _arms_table(per_case)
    distill, qat_cfg = _training(sensor_config(), quick)
    q = sensor_config().quantize
    teachers = {c.task: s[0].teacher for c, s in zip(CASES, per_case)}
    worst = "; ".join(f"{name} ({drop:+.2f} pt)" for drop, name in ranked[:3])
    timings = table(["student", "file", "size", "p50 ms, batch 1, 1 thread", "speed-up vs fp32", "kernels (Q/DQ)", "left in float"],
                    timing_rows, right=[False, False, True, True, True, True, False])
    return "\n".join([
        "What: held-out accuracy of small students quantized to int8 with onnxruntime's static QDQ (`compress.quantize`, "
        "MinMax calibration) three ways: post-training (PTQ), every layer int8; post-training with the run's fallback "
        f"(`max_drop` {q.max_score_drop:g}: the most sensitive layers kept in float until the validation score holds); and "
        "quantization-aware training (`compress.qat`, which emulates onnxruntime's int8 grid in the forward pass), on labels "
        "alone and with distillation against the teacher, both quantized with every layer int8. The goal: QAT + KD within 0.5 "
        "point of fp32 on students where PTQ loses more than 1 point, at int8 speed.",
        "",
        "How the students were found: first a sweep of candidate students and schemes (seeds 0–1 or 0–2, before this figure "
        "was written): narrow digits CNNs (width 0.125, 0.0625, 0.03), depthwise-separable CNNs (MobileNet-v1 style, ReLU6 and "
        "ReLU, 2, 6 and 10 blocks, BatchNorm after the depthwise conv or only after the pointwise one), MobileNet-v2-style "
        "inverted-residual CNNs (expand 2, 4, 6; 6, 9 and 12 blocks), a MobileNet-v3-style one (hardswish, squeeze-excite), "
        "BatchNorm-free CNNs, tiny vision transformers (2 layers, width 16 and 32), MLPs and the example's own pruned tiers, on "
        "sensor-digits and on digits, each under int8-static per-channel (the run's default), per-tensor weights and the "
        "symmetric scheme (some also symmetric with per-tensor weights), calibrated on one fixed draw of 180 training inputs. "
        "**None lost more than 1 point on average over seeds**: single seeds moved by up to about ±1.4 points (once −2.8, a "
        "10-block depthwise CNN, symmetric per-tensor, seed 2; once +1.9), about as often up as down: int8 noise flipping "
        "borderline held-out samples either way (1 point is 3.6 of the 359). The most consistent loss was the 9-block "
        "MobileNet-v2-style student on sensor-digits with per-tensor weights (−0.84 pt at each of seeds 0–2), then the same "
        "student per-channel (−0.56 pt): those two are studied below, as the closest to the >1-point students asked for that "
        "exist here. The sweep below is the part of that search this figure reruns at its own seeds (calibration drawn per "
        f"seed); the three largest mean PTQ losses in this run: {worst}.",
        "",
        f"How: {seeds} seed{'s' if seeds > 1 else ''} (0–{seeds - 1}); each seed fixes the student's initialisation, its "
        "distillation and its QAT. Students are distilled with the task's example settings: sensor-digits the default example's "
        f"`[distill]` (KD at temperature {fixtures.kd_temperature(distill):g}, alpha {distill.alpha:g}, mixup {distill.augment.mixup:g} with "
        f"the teacher run online on each mixed batch, up to {distill.epochs} epochs, patience {distill.patience}); digits the "
        "digits example's (no augmentation). The teacher is the example's CNN trained on each task's labels "
        f"({', '.join(f'{t} {a:.2%} held-out' for t, a in teachers.items())}). QAT is the run's stage (`pipeline.qat`) with its "
        f"defaults: the distilled student wrapped by `fake_quantized(student, scheme_for(method))`, its ranges calibrated on the "
        f"calibration inputs (`calibrating` + a forward pass), then `fit` for up to {qat_cfg.epochs} epochs (quantize.qat_epochs) "
        f"at lr {qat_cfg.lr:g} (distill.lr / 10), patience {qat_cfg.patience}, best validation epoch kept, the same augmentation; "
        "KD arm against the teacher's outputs (online on mixed batches, as in distillation), labels arm with no teacher "
        "(outputs None). Then `unwrapped`, `export_onnx` and `quantize` with the same method. Calibration inputs: "
        "as many as the run's calibration split holds (10 % of the samples, 180), drawn per seed from the training split; "
        "the fallback's decisions are on the validation split; every accuracy here is on the held-out 20 % (figure 1's split), "
        "which nothing trains, stops, calibrates or decides on. 'The run ships' is what `pipeline.qat` would do on this student: "
        "it trains only where the fallback was needed or PTQ lost more than the tolerance (`QuantizeConfig.wants_qat`), "
        "quantizes the QAT student with the tolerance against the fp32 score and ships the better file (`pipeline.qat.better`). "
        "The control is the distilled fp32 student fine-tuned exactly as QAT + KD is (same epochs, lr, teacher, seed) with no "
        "fake-quantization, so what QAT gains by training longer is told apart from what it wins back from int8. "
        "'Emulation' is the share of held-out samples on which the fake-quantized PyTorch model, calibrated on the same inputs, "
        "predicts the class onnxruntime's int8 file does. Spread: ± sample standard deviation over seeds (differences paired by "
        f"seed). Seeds and cases run in {cores()} worker processes at {TRAIN_THREADS} torch thread each "
        f"({trained_s:.0f} s for all); load average {load_before:.2f} before, {load_after:.2f} after, on {cores()} cores.",
        "",
        "Sweep (PTQ int8, every layer int8):",
        "",
        sweep,
        "",
        "Arms (held-out accuracy, mean ± std over seeds):",
        "",
        arms,
        "",
        "Goal check (QAT + KD within 0.5 point of fp32 where PTQ is more than 1 point below):",
        "",
        *[f"- {g}" for g in goals],
        "",
        _why(per_case),
        "",
        f"Latency, first seed's files: onnxruntime at 1 intra-op thread (`open_session(path, threads=1)`), batch 1, {timing_method}; "
        "the QAT file has the PTQ file's graph, so its speed is int8 speed. onnxruntime is the runtime measured: the QAT "
        "emulates its int8 grid (figure 14 sets LiteRT and ExecuTorch int8 beside it). Kernels: the op count of the graph as onnxruntime "
        "optimizes it here (`compress.int8_speed.optimized`), quantize/dequantize nodes in brackets, and the ops it left in "
        "float between a dequantize and a quantize.",
        "",
        timings,
    ])


def _why(per_case: list[tuple[Seed, ...]]) -> str:
    """What the arms say beyond the goal: the cost of the QAT stage's fine-tuning itself, and how
    exactly compress.qat emulated onnxruntime's int8 on each architecture."""
    studied = [(c, s) for c, s in zip(CASES, per_case) if c.arms]
    parts = []
    for case, seeds in studied:
        control = _mean_pt([s.fp32_tuned - s.fp32 for s in seeds])
        said = f"Fine-tuning alone (the control) moved the fp32 {case.arch} by {control:+.2f} pt on held-out"
        if control < -0.3:
            said += (": `fit` keeps the best validation epoch of the ones it trains, never the student it started from, so on "
                     "a student already at its best, ten more epochs at a tenth of the rate end on a validation-lucky epoch; "
                     "QAT + KD pays that cost too, and is to be read against the control as much as against fp32.")
        elif control > 0.3:
            said += ": the student was not at its best yet, so part of what QAT + KD shows is more training, not int8 won back."
        else:
            said += ", within noise: what QAT + KD shows is its own."
        parts.append(said)
    by_arch: dict[str, list[float]] = {}
    for case, seeds in zip(CASES, per_case):
        by_arch.setdefault(case.arch, []).append(mean_std([s.emulation["per-channel"] for s in seeds])[0])
    fidelity = "; ".join(f"{arch} {min(v):.2%}" for arch, v in by_arch.items())
    parts.append(
        "Emulation (per-channel, the run's default): " + fidelity + ". On the digits CNN, whose every Conv/Gemm output reaches the next Conv/Gemm through Relu and MaxPool only, the two "
        "agree on all but a rare borderline sample (PyTorch sums the dequantized values in float, onnxruntime in integers, so "
        "a value on a rounding edge can land one step apart). Less so on the depthwise-separable and MobileNet-v2-style students: onnxruntime's quantizer "
        "also puts the inputs and the output of every Add on the int8 grid (the residual sums: the projecting Conv's output "
        "on a range of its own, the skip branch on its tensor's grid), and the output of the Conv before the global average "
        "pool (exported as ReduceMean, which onnxruntime runs in float between a dequantize and a quantize); `compress.qat` "
        "fake-quantizes only the inputs of Conv/Linear layers and the model's output, so those grids are missing from "
        "training (its docstring's list of what it does not emulate lacks them). With per-tensor weights the BatchNorm "
        "folding is approximate, as its docstring says."
    )
    return "\n\n".join(parts)


FIGURE = Figure("qat", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
