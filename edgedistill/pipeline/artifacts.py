"""Stages 6 to 10 for one tier: export to ONNX, int8, every file each target wants, latency, and
the student's report entry. Each stage is keyed on its inputs and resumes."""

from __future__ import annotations

import dataclasses

from edgedistill.compress import int8_speed
from edgedistill.compress.quantize import QuantResult, quantize
from edgedistill.config import TierConfig
from edgedistill.data.base import Exported
from edgedistill.export.deploy import Deployment, deploy, wanted
from edgedistill.export.formats import format_for, made_with
from edgedistill.report import schema
from edgedistill.rundir import Made, StageId, input_key
from edgedistill.pipeline import choice, entries
from edgedistill.pipeline.qat import with_qat
from edgedistill.pipeline.context import Context
from edgedistill.pipeline.sources import Files, scorer, sources
from edgedistill.pipeline.student import Distilled, Lesson, resolve
from edgedistill.targets.profile import Target


def files(ctx: Context, tier: TierConfig, student: Distilled, learn: Lesson) -> tuple[Files, str]:
    """Export and quantize one tier's student; the files and the key of what they hold."""
    cfg, folder = ctx.cfg, ctx.folder(tier.name)
    export_key = input_key(student.key, cfg.export)
    dst = ctx.onnx(folder)

    def export() -> Made[Exported]:
        ctx.progress.stage(f"{tier.name}: exporting to ONNX and checking parity")
        art = ctx.entry.export(ctx.prep, student.model, dst, cfg.export)
        return Made(art, (art.path,))

    fp32 = ctx.rd.stage(StageId("export", tier.name), export_key, Exported, export, ctx.progress, f"{tier.name}: exported earlier")
    # Each stage after this one is keyed on the content of the files it reads, as written.
    exported_key = ctx.rd.made_key(StageId("export", tier.name))
    if not cfg.quantize.enabled:
        return Files(fp32, None), exported_key
    # "weight-bearing first": int8 made before the fallback tried the weight-bearing ops alone is made again
    quant_key = input_key(exported_key, cfg.quantize, ctx.prep.data_key, "weight-bearing first")

    def int8() -> Made[QuantResult]:
        ctx.progress.stage(f"{tier.name}: quantizing to int8")
        parts, score = ctx.prep.parts, scorer(ctx, learn.reference)
        result = quantize(
            fp32.path, dst.parent / "model.int8.onnx", cfg.quantize.methods_for(fp32.path),
            ctx.entry.feed(parts.calib, fp32.inputs), score, ctx.entry.feed(parts.val, fp32.inputs), cfg.quantize.max_score_drop,
        )
        return Made(result, (result.path,))

    post = ctx.rd.stage(StageId("quantize", tier.name), quant_key, QuantResult, int8, ctx.progress, f"{tier.name}: quantized earlier")
    key = input_key(exported_key, ctx.rd.made_key(StageId("quantize", tier.name)))
    shipped, trained, key = with_qat(ctx, tier, student, learn, fp32, post, key)
    return Files(fp32, shipped, trained), key


def deployment(ctx: Context, tier: TierConfig, made: Files, student: Distilled, learn: Lesson, key: str) -> tuple[Deployment, str]:
    """Every file each target wants beyond the fp32 and int8 ONNX, made, checked and linted."""
    want = wanted(ctx.targets)
    # What each wanted format is made with: a resumed run remakes files its converters would now make otherwise.
    deploy_key = input_key(key, ctx.targets, made_with(f for f, _ in want))

    def make() -> Made[Deployment]:
        ctx.progress.stage(f"{tier.name}: making artifacts for {', '.join(t.name for t in ctx.targets)}")
        result = deploy(sources(ctx, made, learn.reference, student.model), want)
        return Made(result, tuple(d.path for d in result.made) + tuple(d.build.command_path for d in result.made if d.build))

    done = ctx.rd.stage(StageId("deploy", tier.name), deploy_key, Deployment, make, ctx.progress, f"{tier.name}: target files made earlier")
    return done, ctx.rd.made_key(StageId("deploy", tier.name))


def measured(ctx: Context, tier: TierConfig, made: Files, dep: Deployment, learn: Lesson, key: str) -> tuple[schema.Artifact, ...]:
    """Every file's entry: scored on the validation split and timed or predicted on its targets."""
    want = wanted(ctx.targets)
    # "scored": entries carry the task's score since the deployment choice reads it; older ones are redone.
    measure_key = input_key(key, ctx.cfg.measure, ctx.latency.addresses, "scored")

    def make() -> Made[tuple[schema.Artifact, ...]]:
        fp32 = made.fp32
        specs = [entries.ArtifactSpec(
            "onnx", "fp32", fp32.path, want.get(("onnx", "fp32"), ()), fp32.parity,
        )]
        if made.int8 is not None:
            specs.append(entries.ArtifactSpec("onnx", "int8", made.int8.path, want.get(("onnx", "int8"), ()), quant=made.int8))
        specs += [entries.deployed(ctx, d, format_for(d.format).runs_here) for d in dep.made]
        # Every file made from the int8 that QAT decided on carries the record of that decision.
        specs = [dataclasses.replace(s, qat=made.qat) if made.int8 and s.quant and s.quant.path == made.int8.path else s for s in specs]
        return Made(tuple(entries.artifact(ctx, s, learn.reference) for s in specs))

    return ctx.rd.stage(
        StageId("measure", tier.name), measure_key, tuple[schema.Artifact, ...], make, ctx.progress,
        f"{tier.name}: measured earlier, taken from the run directory",
    )


def student_entry(ctx: Context, tier: TierConfig, student: Distilled, learn: Lesson) -> schema.Student:
    """Everything after distillation for one tier, and its report entry."""
    made, key = files(ctx, tier, student, learn)
    dep, key = deployment(ctx, tier, made, student, learn, key)
    resolved = resolve(ctx, tier)
    artifacts, chosen = _deployed(
        ctx, made, dep, measured(ctx, tier, made, dep, learn, key), student.record.footprint.macs, resolved.limits.get("bytes")
    )
    checks = entries.checks(student.record.checks, resolved, artifacts) + entries.device_checks(tuple(ctx.targets), artifacts)
    r = student.record
    return schema.Student(
        name=tier.name, tier=tier.name, generator=student.spec.model_dump(mode="json"), knob=r.knob,
        budget={"spec": tier.budget.model_dump(mode="json", exclude_none=True), "limits": resolved.limits, "precision": resolved.precision},
        params=r.footprint.params, macs=r.footprint.macs, peak_activation_bytes=r.footprint.peak_activation_bytes,
        metrics={r.metric: r.val_score}, within_budget=all(c.ok for c in checks), checks=checks,
        distill={
            "best_epoch": r.best_epoch, "epochs_run": r.epochs_run, "search_evaluations": r.search_evaluations,
            "teacher_outputs": "cached", "teacher": tier.teacher or "teacher", "trained_with_teacher": learn.outputs.covered,
            "trained_on_labels_only": len(learn.outputs.logits) - learn.outputs.covered, "generations": list(r.generations),
            **(r.details or {}),
            **({"labels_only": r.labels_only} if r.labels_only is not None else {}),
        },
        artifacts=artifacts,
        skipped=tuple(
            {"format": s.format, "precision": s.precision, "targets": list(s.targets), "reason": s.reason} for s in dep.skipped
        ),
        deployed=chosen,
    )


def _deployed(
    ctx: Context, made: Files, dep: Deployment, artifacts: tuple[schema.Artifact, ...], macs: int, max_bytes: float | None
) -> tuple[tuple[schema.Artifact, ...], tuple[schema.Deployed, ...]]:
    """Which file each target deploys (`choice.choose`), judged against the fp32 ONNX's score and
    the tier's bytes budget; where int8 lost on speed, the findings read from the int8 ONNX that
    file was made from (a TensorRT engine's is the symmetric one) against the fp32 ONNX."""
    fp32 = next(a for a in artifacts if (a.format, a.precision) == ("onnx", "fp32"))
    rules = choice.Rules(fp32.score, ctx.cfg.quantize.max_score_drop, ctx.prep.task.quality, max_bytes)
    onnx_of = {ctx.rd.relative(d.path): d.source for d in dep.made}
    if made.int8 is not None:
        onnx_of[ctx.rd.relative(made.int8.path)] = made.int8.path

    def explain(target: Target, int8: schema.Artifact) -> tuple[str, ...]:
        source = onnx_of.get(int8.path)
        return () if source is None else int8_speed.explain(source, made.fp32.path, target, macs)

    return choice.choose(artifacts, ctx.targets, rules, explain)
