"""int8 quantization with onnxruntime's quantizer, accuracy-aware.

A technique is a frozen config dataclass with a handler registered for its type. `quantize`
tries each, keeps the fastest that holds the accuracy tolerance and, when none does, quantizes the
most accurate one's weight-bearing ops alone, then keeps layers in float: the cheapest set that
holds, as `mixed.assign` searches it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from edgedistill.compress import mixed
from edgedistill.errors import EdgeDistillError, UserError
from edgedistill.fileio import quiet, scratch_dir, working_directory
from edgedistill.finite import nonfinite
from edgedistill.ortsession import Feed, feed_len, feed_slice, open_session, run_batched, session_feed
from edgedistill.timing import time_calls

PRECISION = "int8"
# The ops whose weights int8 quantizes: the candidates to keep in float, most sensitive first.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# What the fallback first tries in int8 alone: the ops that carry weights (Gather: embedding
# tables). Every other op stays in float, so a transformer's LayerNormalization never sees its
# residual stream's outlier channels through one uint8 scale: on MiniLM static int8 of every op
# kept 0.35 cosine, of these alone 0.94 (benchmarks/RESULTS.md).
WEIGHT_BEARING_OPS = WEIGHTED_OPS | {"Gather"}
_CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "distribution": CalibrationMethod.Distribution,
}
_CALIB_BATCH = 32


@dataclass(frozen=True)
class Int8Static:
    """Static int8 in QDQ format: int8 weights, uint8 activations calibrated on real inputs."""

    per_channel: bool = True
    calibration_method: str = "minmax"
    name: ClassVar[str] = "int8-static"
    # the op types onnxruntime's QDQ quantizer puts in int8 when not told otherwise
    quantizable: ClassVar[frozenset[str]] = frozenset(QDQRegistry)

    def __post_init__(self) -> None:
        # Resolve the string now, so a typo fails at config time rather than mid-run.
        if self.calibration_method not in _CALIBRATION_METHODS:
            raise UserError(
                f"calibration_method {self.calibration_method!r} is unknown: "
                f"use one of {', '.join(sorted(_CALIBRATION_METHODS))}"
            )


@dataclass(frozen=True)
class Int8Dynamic:
    """Dynamic int8: int8 weights, activations quantized at run time; suits Linear-heavy models."""

    per_channel: bool = False
    name: ClassVar[str] = "int8-dynamic"
    quantizable: ClassVar[frozenset[str]] = frozenset(IntegerOpsRegistry)


@dataclass(frozen=True)
class Int8StaticSymmetric(Int8Static):
    """Static int8 QDQ the way TensorRT's explicit quantization takes it: int8 activations and
    weights with symmetric ranges (every zero point 0) and the bias left in float
    (onnx-tensorrt docs/operators.md: Q/DQ of INT8 only, zero points 0)."""

    name: ClassVar[str] = "int8-static-symmetric"


QuantMethod = Int8Static | Int8StaticSymmetric | Int8Dynamic


@dataclass(frozen=True)
class QuantJob:
    """What every quantizer handler gets: one pre-processed fp32 model to quantize to `dst`.

    `only` None quantizes every eligible node; `op_types` None every op type the method
    quantizes; `workdir` holds caches shared between jobs.
    """

    src: Path
    dst: Path
    calib_x: Feed
    workdir: Path
    exclude: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    op_types: frozenset[str] | None = None


@dataclass(frozen=True)
class MethodTrial:
    """One method tried on the whole model: its score on the validation inputs, latency and size."""

    method: str
    score: float
    p50_ms: float
    bytes: int


@dataclass(frozen=True)
class QuantResult:
    """The chosen quantized model, why it was chosen and every method tried."""

    path: Path
    method: str
    bytes: int
    score: float
    fp32_score: float
    kept_float: tuple[str, ...]
    trials: tuple[MethodTrial, ...]
    reason: str
    precision: str = PRECISION
    # where layers had to stay in float: each mixed-precision search's assignment (mixed.assign)
    assignments: tuple[mixed.Assignment, ...] = ()
    # op types every node of which stayed in float: only the weight-bearing ops were quantized
    float_ops: tuple[str, ...] = ()

    @property
    def in_float(self) -> tuple[int, int]:
        """How much stayed in float, for comparing two int8 files: op types first, then layers."""
        return len(self.float_ops), len(self.kept_float)


QUANTIZERS: dict[type, Callable[[QuantMethod, QuantJob], None]] = {}


def register(config_type: type) -> Callable[[Callable], Callable]:
    """Register the handler that quantizes a model for configs of `config_type`."""

    def decorate(handler: Callable) -> Callable:
        QUANTIZERS[config_type] = handler
        return handler

    return decorate


class _CalibrationReader(CalibrationDataReader):
    """Feeds the calibration inputs to onnxruntime's calibrator in batches."""

    def __init__(self, model: Path, x: Feed) -> None:
        session = open_session(model)
        self._batches = iter(
            [session_feed(session, feed_slice(x, i, i + _CALIB_BATCH)) for i in range(0, feed_len(x), _CALIB_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@register(Int8Static)
def _quantize_static(cfg: Int8Static, job: QuantJob) -> None:
    # uint8 activations with int8 weights: onnxruntime's advice for x86 CPUs.
    _static(cfg, job, QuantType.QUInt8, {})


@register(Int8StaticSymmetric)
def _quantize_static_symmetric(cfg: Int8StaticSymmetric, job: QuantJob) -> None:
    _static(cfg, job, QuantType.QInt8, {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})


def _static(cfg: Int8Static, job: QuantJob, activations: QuantType, extra_options: dict[str, bool]) -> None:
    quantize_static(
        job.src,
        job.dst,
        _CalibrationReader(job.src, job.calib_x),
        quant_format=QuantFormat.QDQ,
        per_channel=cfg.per_channel,
        activation_type=activations,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=list(job.only) if job.only is not None else None,
        nodes_to_exclude=list(job.exclude),
        op_types_to_quantize=sorted(job.op_types) if job.op_types is not None else None,
        calibrate_method=_CALIBRATION_METHODS[cfg.calibration_method],
        # Calibrate once per method: the fallback re-quantizes many times with the same ranges.
        calibration_cache_path=job.workdir / f"calibration-{cfg.name}-{cfg.calibration_method}.json",
        extra_options=extra_options,
    )


@register(Int8Dynamic)
def _quantize_dynamic(cfg: Int8Dynamic, job: QuantJob) -> None:
    quantize_dynamic(
        job.src,
        job.dst,
        per_channel=cfg.per_channel,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=_with_gemm_aliases(job.only) if job.only is not None else None,
        nodes_to_exclude=_with_gemm_aliases(job.exclude),
        op_types_to_quantize=sorted(job.op_types) if job.op_types is not None else None,
    )


def _with_gemm_aliases(names: tuple[str, ...]) -> list[str]:
    """The names plus `<name>_MatMul`: the dynamic quantizer rewrites each Gemm into a MatMul of
    that name before it matches node names, so a Gemm named in the fp32 graph would be missed."""
    return [alias for name in names for alias in (name, f"{name}_MatMul")]


def has_linear_ops(path: Path) -> bool:
    """True when the graph has MatMul or Gemm nodes, the ops dynamic int8 speeds up."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in ("MatMul", "Gemm") for node in graph.node)


def quantize(
    fp32_path: Path,
    out: Path,
    methods: Sequence[QuantMethod],
    calib_x: Feed,
    score: Callable[[np.ndarray], float],
    val_x: Feed,
    max_drop: float = 0.01,
    timing_runs: int = 50,
    reference: float | None = None,
) -> QuantResult:
    """Quantize `fp32_path` with each method and write the best model to `out`.

    `score(outputs on val_x)` is higher-is-better (e.g. accuracy as a fraction). The fastest
    method (batch-1 p50) whose score drop is within `max_drop` wins; the drop is from `reference`
    (default the score of `fp32_path` itself: QAT passes the score of the student before it).
    When none holds, the most accurate method is re-quantized with only the weight-bearing ops in
    int8 and, if that does not hold either, with weighted nodes kept in float: the smallest file
    that holds, of the searches of `mixed.assign`.
    """
    out = Path(out)
    _check_inputs(methods, calib_x, val_x, timing_runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    # In out's directory, so the final os.replace is an atomic rename; removed on exit.
    with scratch_dir(out.parent, f".{out.name}.") as tmp:
        workdir = Path(tmp)
        src = _preprocess(Path(fp32_path), workdir / "fp32.onnx")
        fp32_out = run_batched(open_session(src), val_x)
        _check_finite(fp32_path, fp32_out)
        fp32_score = float(score(fp32_out)) if reference is None else reference
        # Numbered paths: two configs of one technique (e.g. two calibrations) must not collide.
        paths = [
            _run(method, QuantJob(src, workdir / f"{i}-{method.name}.onnx", calib_x, workdir))
            for i, method in enumerate(methods)
        ]
        trials = [_trial(m.name, p, score, val_x, timing_runs) for m, p in zip(methods, paths)]
        runs = list(zip(trials, methods, paths))
        held = [r for r in runs if fp32_score - r[0].score <= max_drop]
        if held:
            best, method, chosen = min(held, key=lambda r: r[0].p50_ms)
            reason = _reason_held(best, [t for t in trials if t is not best], max_drop)
            kept = _Kept(chosen, (), (), best.score, reason, ())
        else:
            best, method, path = max(runs, key=lambda r: r[0].score)
            kept = _fallback(method, best, path, src, calib_x, score, val_x, fp32_out, fp32_score, max_drop, workdir)
        os.replace(kept.path, out)
    return QuantResult(
        path=out,
        method=method.name,
        bytes=out.stat().st_size,
        score=kept.score,
        fp32_score=fp32_score,
        kept_float=kept.kept_float,
        trials=tuple(trials),
        reason=kept.reason,
        assignments=kept.assignments,
        float_ops=kept.float_ops,
    )


def _check_inputs(
    methods: Sequence[QuantMethod], calib_x: Feed, val_x: Feed, timing_runs: int
) -> None:
    if not methods:
        raise UserError("no quantization method given: pass Int8Static() and/or Int8Dynamic()")
    unknown = [type(m).__name__ for m in methods if type(m) not in QUANTIZERS]
    if unknown:
        raise UserError(f"no quantizer registered for {', '.join(unknown)}: use Int8Static or Int8Dynamic")
    if feed_len(calib_x) == 0 or feed_len(val_x) == 0:
        raise UserError("quantization needs calibration and validation inputs: the split is empty")
    if timing_runs < 1:
        raise UserError(f"timing_runs must be >= 1, got {timing_runs}")


def _check_finite(fp32_path: Path, fp32_out: np.ndarray) -> None:
    """One line, not onnxruntime's calibration AssertionError, for a model whose outputs hold NaN or
    Inf: neither int8 ranges nor a score drop can be judged on them."""
    bad = nonfinite(fp32_out)
    if bad:
        raise EdgeDistillError(
            f"{Path(fp32_path).name} gives {bad:,} non-finite outputs (NaN or Inf) on the validation inputs, "
            "so it cannot be quantized: retrain it (with a lower distill.lr) or set quantize.enabled = false"
        )


def _preprocess(fp32_path: Path, dst: Path) -> Path:
    """onnxruntime's recommended pre-processing; every node named, so nodes can be excluded."""
    # When symbolic shape inference gives up it dumps its model into the working directory:
    # run it from the work folder, which is removed with everything in it. Paths are made
    # absolute first, as relative ones would then point elsewhere.
    src, dst = Path(fp32_path).resolve(), dst.resolve()
    with quiet(), working_directory(dst.parent):
        try:
            quant_pre_process(src, dst)
        except Exception:  # noqa: BLE001 - onnxruntime raises a bare Exception when symbolic inference gives up
            # Symbolic shape inference cannot follow every graph (a transformer's dynamic sequence
            # axis through appended pooling); ONNX's own shape inference is enough to quantize.
            quant_pre_process(src, dst, skip_symbolic_shape=True)
    model = onnx.load(str(dst))
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    onnx.save_model(model, str(dst), save_as_external_data=False)
    return dst


def _run(method: QuantMethod, job: QuantJob) -> Path:
    with quiet():
        QUANTIZERS[type(method)](method, job)
    return job.dst


def _trial(
    name: str, path: Path, score: Callable[[np.ndarray], float], val_x: Feed, runs: int
) -> MethodTrial:
    session = open_session(path)
    value = float(score(run_batched(session, val_x)))
    feed = session_feed(session, feed_slice(val_x, 0, 1))
    stats = time_calls(lambda: session.run(None, feed), warmup=max(1, runs // 10), runs=runs)
    return MethodTrial(method=name, score=value, p50_ms=stats.p50_ms, bytes=path.stat().st_size)


@dataclass(frozen=True)
class _Kept:
    """What the fallback keeps: its file, what stayed in float, its score, why, and each search."""

    path: Path
    kept_float: tuple[str, ...]
    float_ops: tuple[str, ...]
    score: float
    reason: str
    assignments: tuple[mixed.Assignment, ...]


def _fallback(
    method: QuantMethod,
    trial: MethodTrial,
    trial_path: Path,
    src: Path,
    calib_x: Feed,
    score: Callable[[np.ndarray], float],
    val_x: Feed,
    fp32_out: np.ndarray,
    fp32_score: float,
    max_drop: float,
    workdir: Path,
) -> _Kept:
    """First quantize the weight-bearing ops alone, where the graph has others the method would
    quantize; then, from the more accurate of that and all-int8, keep weighted layers in float
    until the drop holds, the cheapest such set that `mixed.assign` finds. When nothing holds, the
    most accurate attempt is kept and the reason says so."""
    numbers = itertools.count()

    def holds(value: float) -> bool:
        return fp32_score - value <= max_drop

    def quantized_in(op_types: frozenset[str] | None) -> mixed.Quantizer:
        def quantized(kept: tuple[str, ...]) -> mixed.Trial:
            dst = workdir / f"fallback-{next(numbers)}.onnx"
            path = _run(method, QuantJob(src, dst, calib_x, workdir, exclude=kept, op_types=op_types))
            return mixed.Trial(kept, float(score(run_batched(open_session(path), val_x))), path.stat().st_size, path)

        return quantized

    best, op_types, float_ops = mixed.Trial((), trial.score, trial.bytes, trial_path), None, ()
    graph = onnx.load(str(src)).graph
    left = _left_in_float(method, graph)
    if left and (scoped := quantized_in(WEIGHT_BEARING_OPS)(())).score > best.score:
        best, op_types, float_ops = scoped, WEIGHT_BEARING_OPS, left
    layers, assignments = [], ()
    if not holds(best.score):
        layers = _layers(method, src, graph, calib_x, val_x, fp32_out, workdir)
    if layers:  # a graph without weighted nodes has nothing to keep in float
        searched, assignments = mixed.assign(layers, quantized_in(op_types), holds)
        if holds(searched.score) or searched.score >= best.score:
            best = searched
    return _Kept(best.path, best.kept_float, float_ops, best.score, _reason_fallback(
        method, best, float_ops, len(layers), len(assignments), fp32_score, max_drop
    ), assignments)


def _left_in_float(method: QuantMethod, graph: onnx.GraphProto) -> tuple[str, ...]:
    """The op types of the graph that `method` would quantize beyond the weight-bearing ones."""
    present = {node.op_type for node in graph.node}
    return tuple(sorted(present & method.quantizable - WEIGHT_BEARING_OPS))


def _reason_fallback(
    method: QuantMethod, best: mixed.Trial, float_ops: tuple[str, ...], n_layers: int, searches: int,
    fp32_score: float, max_drop: float,
) -> str:
    scoped = f"every {', '.join(float_ops)} left in float (only weight-bearing ops in int8)" if float_ops else ""
    if fp32_score - best.score > max_drop:
        also = f"; {scoped}" if scoped else ""
        return (
            f"no method kept the score within {max_drop:g} of fp32, even with layers of {method.name} kept in float{also}; "
            f"kept the most accurate attempt (drop {fp32_score - best.score:.4f})"
        )
    said = [scoped] if scoped else []
    if best.kept_float or not scoped:
        said.append(
            f"{len(best.kept_float)} of {n_layers} weighted layers kept in float (the smallest file of {searches} searches)"
        )
    return f"no method kept the score within {max_drop:g} of fp32; {method.name} did with {' and '.join(said)}"


def _layers(
    method: QuantMethod,
    src: Path,
    graph: onnx.GraphProto,
    calib_x: Feed,
    val_x: Feed,
    fp32_out: np.ndarray,
    workdir: Path,
) -> list[mixed.Layer]:
    """Weighted nodes of `graph` (the model at `src`), each with its output error on val_x when
    only it is int8 and its weights."""
    sizes = {i.name: int(np.prod(i.dims)) for i in graph.initializer}
    layers = []
    for i, node in enumerate(n for n in graph.node if n.op_type in WEIGHTED_OPS):
        dst = workdir / f"sensitivity-{i}.onnx"
        path = _run(method, QuantJob(src, dst, calib_x, workdir, only=(node.name,)))
        quant_out = run_batched(open_session(path), val_x)
        err = float(np.mean(np.abs(quant_out.astype(np.float64) - fp32_out)))
        # A node whose int8 form gives NaN or Inf is the most sensitive, not unordered (NaN sorts anywhere).
        weights = sum(sizes.get(name, 0) for name in node.input[1:2])
        layers.append(mixed.Layer(node.name, err if np.isfinite(err) else np.inf, weights))
    return layers


def _reason_held(best: MethodTrial, others: list[MethodTrial], max_drop: float) -> str:
    if not others:
        return f"{best.method} kept the score within {max_drop:g} of fp32 ({best.p50_ms:.3f} ms at batch 1)"
    rivals = ", ".join(f"{t.method} {t.p50_ms:.3f} ms" for t in others)
    return (
        f"{best.method} kept the score within {max_drop:g} of fp32 and was fastest "
        f"({best.p50_ms:.3f} ms vs {rivals})"
    )


class QuantizeConfig(BaseModel):
    """The run's int8 quantization: which methods to try and how much accuracy may be lost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="Make an int8 artifact of every student.")
    methods: tuple[Literal["int8-static", "int8-static-symmetric", "int8-dynamic"], ...] | None = Field(
        None,
        description="Methods to try; default int8-static, plus int8-dynamic for graphs with MatMul/Gemm. "
        "TensorRT targets always get int8-static-symmetric, the form TensorRT accepts.",
    )
    per_channel: bool = Field(True, description="Per-channel weight scales for int8-static and int8-dynamic.")
    calibration_method: Literal["minmax", "entropy", "percentile", "distribution"] = Field(
        "minmax", description="How int8-static chooses activation ranges on the calibration split."
    )
    max_score_drop: float = Field(
        0.01, ge=0, validation_alias=AliasChoices("max_score_drop", "max_accuracy_drop"),
        description="Largest loss of the task's score against fp32 (0.01 = 1 point of accuracy, mIoU, mAP or R²) before "
        "layers stay in float; max_accuracy_drop is the same setting's older name.",
    )
    qat: bool | None = Field(
        None,
        description="Quantization-aware training with the teacher: None (default) when post-training int8 loses more "
        "than max_score_drop or needs ops or layers kept in float; true always; false never. The better int8 ships.",
    )
    qat_epochs: int = Field(10, ge=1, description="Most epochs of quantization-aware training (early stopping as in distill).")
    qat_lr: float | None = Field(
        None, gt=0, description="Learning rate of quantization-aware training; default a tenth of distill.lr."
    )

    def wants_qat(self, post_training: QuantResult) -> bool:
        """Whether to train with int8 in the loop after `post_training` int8 gave this result."""
        if self.qat is not None:
            return self.qat
        return any(post_training.in_float) or post_training.fp32_score - post_training.score > self.max_score_drop

    def static_for(self, post_training: QuantResult, path: Path) -> Int8Static:
        """The static method QAT emulates: the one post-training chose when static, else int8-static."""
        static = [m for m in self.methods_for(path) if isinstance(m, Int8Static)]
        chosen = [m for m in static if m.name == post_training.method]
        return (chosen or static or [Int8Static(per_channel=self.per_channel, calibration_method=self.calibration_method)])[0]

    def methods_for(self, path: Path) -> tuple[QuantMethod, ...]:
        """The method configs to try on the fp32 model at `path`."""
        static = Int8Static(per_channel=self.per_channel, calibration_method=self.calibration_method)
        # Per-channel weight scales for dynamic int8 too: on MiniLM one scale per tensor lost 0.03
        # cosine and sent the run into the keep-in-float fallback; per channel kept 0.99 (benchmarks/).
        dynamic = Int8Dynamic(per_channel=self.per_channel)
        if self.methods is None:
            return (static, dynamic) if has_linear_ops(path) else (static,)
        by_name = {Int8Static.name: static, Int8StaticSymmetric.name: self.symmetric(), Int8Dynamic.name: dynamic}
        return tuple(by_name[name] for name in self.methods)

    def symmetric(self) -> Int8StaticSymmetric:
        """The symmetric static method with this config's options (what TensorRT takes)."""
        return Int8StaticSymmetric(per_channel=self.per_channel, calibration_method=self.calibration_method)
