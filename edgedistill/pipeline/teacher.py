"""Stage 3, baseline: the teacher's own score, ONNX file and latency: the first row of every table.
A teacher that cannot be run on new inputs (recorded, query-only) has only how its outputs were had.
A teacher that scores no better than chance stops the run here, unless the config allows it."""

from __future__ import annotations

from dataclasses import replace

from edgedistill.compress import budget as budgets
from edgedistill.errors import UserError
from edgedistill.report import schema
from edgedistill.rundir import Made, StageId, input_key
from edgedistill.pipeline import entries
from edgedistill.pipeline.context import Context


def baseline(ctx: Context) -> schema.Teacher:
    """The teacher's report entry, exported and measured once (resumed from the run directory)."""
    cfg, side = ctx.cfg, ctx.prep.teacher
    key = input_key(side.key, ctx.prep.data_key, cfg.export, cfg.measure, side.info, ctx.targets, ctx.latency.addresses)

    def make() -> Made[schema.Teacher]:
        fp = side.footprint or budgets.Footprint(0, 0, 0, 0)
        entry = schema.Teacher(
            source=cfg.teacher.source, params=fp.params, macs=fp.macs, bytes_fp32=fp.bytes_fp32,
            peak_activation_bytes=fp.peak_activation_bytes, metrics={}, latency={}, artifacts=(),
            kind=cfg.teacher.kind, outputs=side.info,
        )
        if side.model is None:
            return Made(entry)
        ctx.progress.stage("baseline: exporting and measuring the teacher")
        onnx = ctx.entry.export(ctx.prep, side.model, ctx.onnx("teacher", "teacher"), cfg.export)
        spec = entries.ArtifactSpec(
            "onnx", "fp32", onnx.path, tuple(t.name for t in ctx.targets), onnx.parity
        )
        art = entries.artifact(ctx, spec, ctx.prep.teacher.reference)
        metrics = ctx.prep.task.metrics(ctx.entry.predict(side.model, ctx.prep.parts.val), ctx.prep.teacher.reference)
        return Made(replace(entry, metrics=metrics, latency=art.latency, artifacts=(art,)), (onnx.path,))

    entry = ctx.rd.stage(
        StageId("baseline"), key, schema.Teacher, make, ctx.progress, "baseline: measured earlier, taken from the run directory"
    )
    return _judged(ctx, entry)


def _judged(ctx: Context, entry: schema.Teacher) -> schema.Teacher:
    """The entry, once its score is known to beat chance (the task says what chance is). Judged
    after the stage, not in it, so that allowing a weak teacher needs no new baseline."""
    # A teacher not run here (recorded, query-only) has no validation score to judge.
    weakness = ctx.prep.task.weakness(entry.metrics, ctx.prep.teacher.reference) if entry.metrics else None
    if weakness is None:
        return entry
    if not ctx.cfg.allow_weak_teacher:
        raise UserError(f"{weakness}: train it further, or set allow_weak_teacher = true to distil it anyway")
    note = f"{weakness}; distilled anyway, as allow_weak_teacher = true"
    ctx.progress.stage(f"baseline: {note}")
    return replace(entry, artifacts=tuple(replace(a, notes=(*a.notes, note)) for a in entry.artifacts))
