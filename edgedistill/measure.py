"""Stage 9, benchmark: every artifact evaluated on the validation split and timed on each of its
targets: measured on this machine, predicted from its ONNX graph where no runner reaches the
device, and always labelled which."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgedistill.compress import budget as budgets
from edgedistill.compress.distill import accuracy
from edgedistill.compress.quantize import QuantResult
from edgedistill.config import MeasureConfig
from edgedistill.data import Dataset
from edgedistill.export.deploy import DeployArtifact
from edgedistill.ortsession import open_session, run_batched
from edgedistill.progress import Progress
from edgedistill.report import schema
from edgedistill.serialize import to_jsonable
from edgedistill.targets.calibration import load as load_calibration
from edgedistill.targets.cost import graph_cost
from edgedistill.targets.estimate import predict as predict_latency
from edgedistill.targets.profile import Target
from edgedistill.targets.runners.base import Measurement
from edgedistill.targets.runners.local import LocalRunner

HOST = "host-cpu"


@dataclass(frozen=True)
class Bench:
    """What measuring a run's artifacts needs: the validation split, the measurement settings,
    the run's targets, the folder report paths are relative to, and where progress goes."""

    val: Dataset
    measure: MeasureConfig
    targets: tuple[Target, ...]
    root: Path
    progress: Progress


def artifact_entry(
    bench: Bench,
    fmt: str,
    precision: str,
    path: Path,
    targets: tuple[str, ...],
    parity: tuple[float | None, float | None] = (None, None),
    quant: QuantResult | None = None,
    lint: tuple[dict, ...] = (),
    build: dict | None = None,
    evaluated: Path | None = None,
    graph: Path | None = None,
) -> schema.Artifact:
    """One artifact's entry. ONNX and .ort files are evaluated and measured here; a TensorRT engine
    cannot be, so its accuracy is that of its ONNX source (`evaluated`), and says so. On every
    target of the artifact that no runner reaches, its latency is predicted from `graph` (the ONNX
    the artifact is, or is made from)."""
    err, tolerance = parity
    val = bench.val
    evaluated = evaluated or path
    metrics = {"accuracy": accuracy(run_batched(open_session(evaluated), val.x), val.y)}
    latency, notes = predictions(bench, graph or path, targets), ()
    if fmt in ("onnx", "ort"):
        m = bench.measure
        runner = LocalRunner(threads=m.threads, warmup=m.warmup, runs=m.runs, throughput_batch=m.throughput_batch)
        with bench.progress.task(f"measure {path.parent.name}/{path.name}", m.runs) as advance:
            latency[HOST] = measured_latency(runner.measure(path, HOST, progress=lambda done, _total: advance(done, "")))
    else:
        notes = (f"accuracy of its source {evaluated.name}, run with onnxruntime on this CPU",)
    return schema.Artifact(
        format=fmt,
        precision=precision,
        path=str(path.relative_to(bench.root)),
        bytes=path.stat().st_size,
        metrics=metrics,
        parity_max_abs_err=err,
        parity_tolerance=tolerance,
        passed=err is None or err <= tolerance,
        latency=latency,
        quantization=None if quant is None else schema.QuantizationInfo(
            method=quant.method,
            reason=quant.reason,
            kept_float=quant.kept_float,
            fp32_accuracy=quant.fp32_score,
            trials=tuple({"method": t.method, "accuracy": t.score, "p50_ms": t.p50_ms, "bytes": t.bytes} for t in quant.trials),
        ),
        targets=targets,
        lint=lint,
        build=build,
        notes=notes,
    )


def predictions(bench: Bench, graph: Path, names: tuple[str, ...]) -> dict[str, schema.Latency]:
    """Predicted latency of `graph` on each named target that is not this machine."""
    remote = [t for t in bench.targets if t.name in names and t.runner != "local" and t.specs is not None]
    if not remote:
        return {}
    cost = graph_cost(graph)
    out = {}
    for target in remote:
        calibration = load_calibration(target.name)
        p = predict_latency(cost, target, calibration)
        out[target.name] = schema.Latency(
            p50_ms=p.p50_ms, source="predicted", profile=target.name,
            calibration=f"calibrated {calibration.created}" if calibration else None,
            error_band=p.error_band, low_ms=p.low_ms, high_ms=p.high_ms,
        )
    return out


def deployed_entry(bench: Bench, d: DeployArtifact) -> schema.Artifact:
    """The report entry of an artifact made for targets (fp16 ONNX, .ort, TensorRT)."""
    return artifact_entry(
        bench, d.format, d.precision, d.path, d.targets,
        parity=(d.parity_max_abs_err, d.parity_tolerance),
        quant=d.quantization,
        lint=tuple(to_jsonable(r) for r in d.lint),
        build=None if d.build is None else _relative_paths(bench, to_jsonable(d.build)),
        evaluated=d.source if d.format == "tensorrt" else None,
        graph=d.source if d.format != "onnx" else d.path,
    )


def _relative_paths(bench: Bench, build: dict) -> dict:
    """A TensorRT build record with its paths relative to the report, so the run directory can move."""
    root = bench.root.resolve()
    out = dict(build)
    for key in ("onnx", "command_path", "engine"):
        if out.get(key) and Path(out[key]).resolve().is_relative_to(root):
            out[key] = str(Path(out[key]).resolve().relative_to(root))
    return out


def measured_latency(m: Measurement) -> schema.Latency:
    """A runner's measurement as the report's latency entry."""
    return schema.Latency(
        p50_ms=m.p50_ms, p90_ms=m.p90_ms, p99_ms=m.p99_ms, source=m.source, runner=m.runner,
        runtime=m.runtime, provider=m.provider, device=m.device, threads=m.threads, batch=m.batch,
        runs=m.runs, throughput_batch=m.throughput_batch, throughput_per_s=m.throughput_per_s, seq_len=m.seq_len,
    )


def final_checks(
    searched: tuple[budgets.BudgetCheck, ...], resolved: budgets.ResolvedBudget, artifacts: tuple[schema.Artifact, ...]
) -> tuple[schema.Check, ...]:
    """The tier's budgets against the student, from the search's checks: `bytes` judged again on
    the real file at the budget's precision, latency on the artifacts' figures."""
    deployed = schema.largest_file(artifacts, resolved.precision)
    checks = []
    for c in searched:
        if c.name.startswith(budgets.LATENCY_PREFIX):
            checks.append(_latency_check(c.name.removeprefix(budgets.LATENCY_PREFIX), resolved, artifacts))
            continue
        source = "student in PyTorch"
        if c.name == "bytes" and deployed is not None:
            c = budgets.check_value(resolved, "bytes", deployed.bytes)
            source = f"largest {resolved.precision} file: {deployed.path}"
        elif c.name == "bytes":
            source = f"estimate at {resolved.precision} (no {resolved.precision} artifact)"
        checks.append(schema.Check(c.name, c.limit, c.value, c.ok, c.margin, source))
    return tuple(checks)


def _latency_check(target: str, resolved: budgets.ResolvedBudget, artifacts: tuple[schema.Artifact, ...]) -> schema.Check:
    """A latency budget judged on the fastest file the target gets: measured where a runner reached
    the target, predicted otherwise, and the check says which."""
    figures = [(a.latency[target], a) for a in artifacts if target in a.targets and target in a.latency]
    name = budgets.latency_name(target)
    if not figures:
        limit = resolved.limits[name]
        return schema.Check(name, limit, float("nan"), False, float("nan"), f"no latency on {target}")
    # A measurement outranks a prediction; among equals, the fastest file decides.
    lat, art = min(figures, key=lambda f: (f[0].source != "measured", f[0].p50_ms))
    c = budgets.check_value(resolved, name, lat.p50_ms)
    return schema.Check(c.name, c.limit, c.value, c.ok, c.margin, f"{lat.source} p50 of {art.path}")
