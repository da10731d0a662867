"""The one builder of the report's entries: an artifact (scored on the validation split, its
latency on every target it is made for), the teacher's row, a student's row and its checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.compress import budget as budgets
from edgedistill.compress.qat import QatResult
from edgedistill.compress.quantize import QuantResult
from edgedistill.export.deploy import DeployArtifact
from edgedistill.export.formats import here_runtime
from edgedistill.export.parity import Parity
from edgedistill.fileio import file_bytes
from edgedistill.ortsession import open_session, run_batched
from edgedistill.report import schema
from edgedistill.pipeline.context import Context
from edgedistill.serialize import to_jsonable
from edgedistill.targets.latency import HOST, Latency
from edgedistill.targets.profile import Target
from edgedistill.tasks import Reference


@dataclass(frozen=True)
class ArtifactSpec:
    """One file to enter: what it is, what it was checked against and what it is made for.
    `evaluated` is the file scored in its place (a TensorRT engine's ONNX source) and `graph`
    the ONNX its latency is predicted from; both default to the file itself. `notes` are the
    format's own (what could not be checked here). `arena_bytes`: the activation memory the
    file's runtime plans, where its format knows it. `seq_len`: the one sequence length a file
    made at fixed shapes takes, which it is timed and priced at instead of the run's lengths."""

    format: str
    precision: str
    path: Path
    targets: tuple[str, ...]
    parity: Parity = Parity.unchecked()
    quant: QuantResult | None = None
    lint: tuple[dict, ...] = ()
    build: dict | None = None
    evaluated: Path | None = None
    graph: Path | None = None
    runs_here: bool = True
    qat: QatResult | None = None
    notes: tuple[str, ...] = ()
    arena_bytes: int | None = None
    seq_len: int | None = None


def artifact(ctx: Context, spec: ArtifactSpec, ref: Reference) -> schema.Artifact:
    """One file's entry: its metrics on the validation split and its latency on this machine and
    on every target it is made for, measured where a runner reaches it and predicted elsewhere."""
    evaluated = spec.evaluated or spec.path
    out = _outputs(ctx, evaluated)
    latency, seq_latency = _latencies(ctx, spec)
    notes = spec.notes + (() if spec.runs_here else (f"accuracy of its source {evaluated.name}, run with onnxruntime on this CPU",))
    if ctx.prep.companion is not None:
        notes += (f"tokenizer saved beside it in {ctx.rd.relative(spec.path.parent)}",)
    return schema.Artifact(
        format=spec.format, precision=spec.precision, path=ctx.rd.relative(spec.path), bytes=file_bytes(spec.path),
        metrics=ctx.prep.task.metrics(out, ref), score=ctx.prep.task.score(out, ref), parity_max_abs_err=spec.parity.max_abs_err,
        parity_tolerance=spec.parity.tolerance, passed=spec.parity.passed, latency=latency, quantization=_quantization(spec.quant, spec.qat),
        targets=spec.targets, lint=spec.lint, build=spec.build, notes=notes, seq_latency=seq_latency,
        arena_bytes=spec.arena_bytes,
    )


def _outputs(ctx: Context, path: Path) -> np.ndarray:
    """`path`'s outputs on the validation split: by its format's own runtime where onnxruntime
    cannot open it (an ExecuTorch program), fed the inputs it names at the length it was made
    for, else by onnxruntime."""
    runtime = here_runtime(path)
    if runtime is not None:
        names = runtime.input_names(path)
        feed = ctx.entry.feed(ctx.prep.parts.val, names)
        fixed = ctx.prep.fixed
        return runtime.outputs(path, fixed.fit(feed) if fixed is not None and names else feed)
    session = open_session(path)
    return run_batched(session, ctx.entry.feed(ctx.prep.parts.val, tuple(i.name for i in session.get_inputs())))


def _latencies(ctx: Context, spec: ArtifactSpec) -> tuple[dict[str, Latency], dict[str, Latency]]:
    """(latency by target, this machine's latency by sequence length for text)."""
    seq_lens = (spec.seq_len,) if spec.seq_len is not None else ctx.prep.seq_lens
    longest = max(seq_lens) if seq_lens else None
    service, m = ctx.latency, ctx.cfg.measure
    latency: dict[str, Latency] = {}
    seq_latency: dict[str, Latency] = {}
    if spec.runs_here:
        for seq in seq_lens or (None,):
            what = f"measure {spec.path.parent.name}/{spec.path.name}" + (f" at {seq} tokens" if seq else "")
            with ctx.progress.task(what, m.runs) as advance:
                lat = service.here(spec.path, seq, progress=lambda done, _total: advance(done, ""))
            if seq is not None:
                seq_latency[str(seq)] = lat
        latency[HOST] = lat
    for name in spec.targets:
        target = service.target(name)
        if name in latency:
            continue
        if service.measurable(target, spec.path):
            ctx.progress.stage(f"measuring {spec.path.name} on {name} ({target.runner} {service.addresses.get(name)})")
            latency[name] = service.measure(spec.path, target, longest)
        elif target.specs is not None and target.runner != "local":
            latency[name] = service.predict(spec.graph or spec.path, target, seq_len=longest)
    return latency, seq_latency


def _quantization(q: QuantResult | None, qat: QatResult | None) -> schema.QuantizationInfo | None:
    if q is None:
        return None
    return schema.QuantizationInfo(
        method=q.method, reason=q.reason, kept_float=q.kept_float, fp32_accuracy=q.fp32_score,
        trials=tuple({"method": t.method, "accuracy": t.score, "p50_ms": t.p50_ms, "bytes": t.bytes} for t in q.trials),
        qat=None if qat is None else _qat(qat),
        assignments=tuple(
            {"order": a.order, "kept_float": list(a.kept_float), "accuracy": a.score, "bytes": a.bytes, "holds": a.holds}
            for a in q.assignments
        ),
        float_ops=q.float_ops,
    )


def _qat(qat: QatResult) -> dict:
    """Post-training and QAT int8 side by side (fp32 is the entry's `fp32_accuracy`), and which shipped."""
    return {
        "shipped": "qat" if qat.shipped else "post-training", "why": qat.why, "method": qat.method,
        "post_training_accuracy": qat.post_training_score, "post_training_kept_float": list(qat.post_training_kept_float),
        "post_training_float_ops": list(qat.post_training_float_ops),
        "qat_accuracy": qat.int8.score, "qat_kept_float": list(qat.int8.kept_float),
        "qat_float_ops": list(qat.int8.float_ops), "qat_path": qat.int8.path.name,
        "trained_accuracy": qat.trained_score, "best_epoch": qat.best_epoch, "epochs_run": qat.epochs_run,
        "lr": qat.lr, "seconds": qat.seconds,
    }


def deployed(ctx: Context, d: DeployArtifact, runs_here: bool) -> ArtifactSpec:
    """The entry spec of a file made for targets (fp16 ONNX, .ort, TensorRT)."""
    # Paths of the run directory relative to it, so the report holds when the folder moves.
    build = None if d.build is None else to_jsonable(d.build, ctx.rd.root)
    # A file that is an ONNX graph is priced as itself; an .ort or an engine by the ONNX it came from.
    graph = d.path if d.path.suffix == ".onnx" else d.source
    return ArtifactSpec(
        d.format, d.precision, d.path, d.targets, d.parity, d.quantization,
        tuple(to_jsonable(r, ctx.rd.root) for r in d.lint), build,
        evaluated=None if runs_here else d.source, graph=graph, runs_here=runs_here, notes=d.notes,
        arena_bytes=d.arena_bytes, seq_len=d.seq_len,
    )


def checks(
    searched: tuple[budgets.BudgetCheck, ...], resolved: budgets.ResolvedBudget, artifacts: tuple[schema.Artifact, ...]
) -> tuple[schema.Check, ...]:
    """The tier's budgets against the student, from the search's checks: `bytes` judged again on
    the largest file a target deploys, latency on the figure of the file each target deploys."""
    largest = schema.largest_file(artifacts, resolved.precision)
    out = []
    for c in searched:
        if c.name.startswith(budgets.LATENCY_PREFIX):
            out.append(_latency_check(c.name.removeprefix(budgets.LATENCY_PREFIX), resolved, artifacts))
            continue
        source = "student in PyTorch"
        if c.name == "bytes" and largest is not None:
            c = budgets.check_value(resolved, "bytes", largest.bytes)
            source = schema.file_source(largest, resolved.precision)
        elif c.name == "bytes":
            source = f"estimate at {resolved.precision} (no {resolved.precision} artifact)"
        out.append(schema.Check(c.name, c.limit, c.value, c.ok, c.margin, source))
    return tuple(out)


def device_checks(targets: tuple[Target, ...], artifacts: tuple[schema.Artifact, ...]) -> tuple[schema.Check, ...]:
    """Each target's own memory as a hard budget (`schema.DEVICE_MEMORY`): a microcontroller's
    flash against the file it deploys, its SRAM against that file's activation arena. A target
    without a deployed file, or a file without a known arena, breaks the budget: a fit is proved
    or not claimed."""
    out = []
    for t in targets:
        limits = {"flash": t.specs.flash_bytes, "sram": t.specs.sram_bytes} if t.specs else {}
        for memory, limit in limits.items():
            if limit is None:
                continue
            value, source = schema.memory_figure(artifacts, memory, t.name)
            c = budgets.BudgetCheck(f"{memory}:{t.name}", float(limit), value, value <= limit)
            out.append(schema.Check(c.name, c.limit, c.value, c.ok, c.margin, source))
    return tuple(out)


def _latency_check(target: str, resolved: budgets.ResolvedBudget, artifacts: tuple[schema.Artifact, ...]) -> schema.Check:
    """A latency budget judged on the fastest file the target gets: measured where a runner reached
    the target, predicted otherwise, and the check says which (and where it was measured)."""
    name = budgets.latency_name(target)
    deciding = schema.deciding_latency(artifacts, target)
    if deciding is None:
        limit = resolved.limits[name]
        return schema.Check(name, limit, float("nan"), False, float("nan"), f"no latency on {target}")
    lat, art = deciding
    c = budgets.check_value(resolved, name, lat.p50_ms)
    where = f" ({lat.runner} {lat.address})" if lat.address else ""
    return schema.Check(c.name, c.limit, c.value, c.ok, c.margin, f"{lat.source}{where} p50 of {art.path}")
