"""Stages 4 and 5 for one tier: its generator, the search of its knob against every budget, and
distillation (with born-again generations where asked). A chained tier learns from, and is
generated from, the student of the tier it names."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from edgedistill.compress import budget as budgets
from edgedistill.compress.distill import TeacherOutputs
from edgedistill.compress.search import search
from edgedistill.config import TierConfig
from edgedistill.data.base import FitOrder, Trained
from edgedistill.errors import UserError
from edgedistill.rundir import Made, StageId, input_key
from edgedistill.pipeline import probes
from edgedistill.pipeline.context import Context
from edgedistill.tasks import Reference


@dataclass(frozen=True)
class StudentRecord:
    """The outcome of the search and distillation of one tier, as kept in the manifest."""

    knob: float
    footprint: budgets.Footprint
    checks: tuple[budgets.BudgetCheck, ...]
    search_evaluations: int
    val_score: float
    metric: str
    best_epoch: int
    epochs_run: int
    # validation score of each generation of self-distillation; empty with one generation
    generations: tuple[float, ...] = ()
    # what the inputs entry did to the starting model (a pruned vocabulary), and the architecture
    details: dict | None = None
    # validation score of the same student trained on labels alone (tier.compare), else None
    labels_only: float | None = None


@dataclass(frozen=True)
class Lesson:
    """What a tier learns from: the model it is generated from (None without weights), its
    outputs on the training split, the validation reference, and their key."""

    model: nn.Module | None
    outputs: TeacherOutputs
    reference: Reference
    key: str


@dataclass(frozen=True)
class Distilled:
    """A tier's trained student, its record, generator and stage key."""

    model: nn.Module
    record: StudentRecord
    spec: BaseModel
    key: str


def lesson(ctx: Context, tier: TierConfig, parent: Distilled | None) -> Lesson:
    """The run's teacher, or for a chained tier the student of the tier it names, whose outputs
    are computed once and kept beside that student."""
    side = ctx.prep.teacher
    if parent is None:
        return Lesson(side.model, side.outputs, side.reference, side.outputs_key)
    key = input_key(parent.key, "outputs")
    rel = f"{ctx.folder(tier.parent)}/outputs.npz"
    parts = ctx.prep.parts

    def make() -> Made[dict]:
        ctx.progress.stage(f"{tier.parent}: running the student over the training split for the tiers it teaches")
        arrays = {"logits": ctx.entry.predict(parent.model, parts.train)}
        if side.reference.teacher is not None:
            arrays["val"] = ctx.entry.predict(parent.model, parts.val)
        with ctx.rd.atomic(rel) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return Made({"samples": len(arrays["logits"])}, (ctx.rd.path(rel),))

    sid = StageId("outputs", tier.parent)
    ctx.rd.stage(sid, key, dict, make, ctx.progress, f"{tier.parent}: its outputs were computed earlier")
    with np.load(ctx.rd.path(rel)) as saved:
        val = saved["val"] if "val" in saved.files else None
        return Lesson(parent.model, TeacherOutputs(saved["logits"]), Reference(val, side.reference.labels), ctx.rd.made_key(sid))


def distilled(ctx: Context, tier: TierConfig, learn: Lesson) -> Distilled:
    """Search and distil one tier's student (resumed from the run directory when done)."""
    cfg = ctx.cfg
    weights = tier.parent is not None or cfg.teacher.has_weights
    spec = ctx.entry.student(ctx.prep, cfg, tier, weights)
    key = input_key(learn.key, tier, spec, cfg.distill, cfg.seed)
    folder = ctx.folder(tier.name)

    def make() -> Made[StudentRecord]:
        resolved = resolve(ctx, tier)
        start = ctx.entry.start(ctx.prep, learn.model, spec)
        learns = f" from tier {tier.parent}" if tier.parent else ""
        ctx.progress.stage(f"{tier.name}: searching {spec.kind} for {tier.budget_text()}{learns}")
        torch.manual_seed(cfg.seed)  # scale and custom students start from fresh, seeded weights
        cand = search(
            spec, start.model, ctx.prep.input_shape, resolved, input_dtype=ctx.prep.input_dtype,
            file_bytes=probes.file_size(ctx, resolved.precision), latency=probes.latency(ctx, tier),
        )
        ctx.progress.stage(f"{tier.name}: distilling a {cand.footprint.params:,}-parameter student")
        trained = _fit(ctx, cand.model, learn, cfg.seed, f"distil {tier.name}")
        trained, generations = _born_again(ctx, tier, cand.model, learn, trained)
        alone = _labels_only(ctx, tier, cand.model) if tier.compare else None
        path = ctx.entry.save(ctx.prep, trained.model, ctx.rd, folder)
        record = StudentRecord(
            cand.knob, cand.footprint, cand.checks, cand.evaluations, trained.val_score, trained.metric,
            trained.best_epoch, trained.epochs_run, generations,
            {**start.details, **trained.details, "threads": trained.threads.threads, "threads_chosen": trained.threads.how},
            alone,
        )
        return Made(record, (path,))

    record = ctx.rd.stage(
        StageId("student", tier.name), key, StudentRecord, make, ctx.progress,
        f"{tier.name}: distilled earlier, loaded from the run directory",
    )
    return Distilled(ctx.entry.load(ctx.rd, folder), record, spec, ctx.rd.made_key(StageId("student", tier.name)))


def resolve(ctx: Context, tier: TierConfig) -> budgets.ResolvedBudget:
    """The tier's budget in absolute terms: shares are of the run's teacher, also in a chain."""
    footprint = ctx.prep.teacher.footprint
    if footprint is None:
        relative = tier.budget.relative_limits()
        if relative:
            raise UserError(
                f"tier {tier.name}: budget {relative[0]} is a share of the teacher's, which a {ctx.cfg.teacher.kind} "
                "teacher does not reveal: give an absolute value (e.g. params = 20000)"
            )
        return budgets.resolve(tier.budget, budgets.Footprint(0, 0, 0, 0))
    return budgets.resolve(tier.budget, footprint)


def _fit(ctx: Context, model: nn.Module, learn: Lesson, seed: int, bar: str) -> Trained:
    # The teacher as a model travels with the order only when it must run on augmented batches.
    live = learn.model if ctx.cfg.distill.augment.active else None
    order = FitOrder(model, ctx.cfg.distill, seed, learn.outputs, learn.reference, live, ctx.prep.task)
    with ctx.progress.task(bar, ctx.cfg.distill.epochs) as advance:
        return ctx.trainer.fit(ctx.prep.parts, order, lambda e, _n, score: advance(e, f"val {score:.3f}"))


def _labels_only(ctx: Context, tier: TierConfig, model: nn.Module) -> float:
    """The validation score of `model` trained as the tier's student is, but on labels alone."""
    if ctx.prep.parts.train.labels is None:
        raise UserError(f"tier {tier.name}: compare trains the student on labels alone, and this data has none: drop compare")
    ctx.progress.stage(f"{tier.name}: training the same student on labels alone, to compare")
    order = FitOrder(model, ctx.cfg.distill, ctx.cfg.seed, None, Reference(None, ctx.prep.parts.val.labels), task=ctx.prep.task)
    with ctx.progress.task(f"labels only {tier.name}", ctx.cfg.distill.epochs) as advance:
        return ctx.trainer.fit(ctx.prep.parts, order, lambda e, _n, score: advance(e, f"val {score:.3f}")).val_score


def _born_again(ctx: Context, tier: TierConfig, architecture: nn.Module, learn: Lesson, first: Trained) -> tuple[Trained, tuple[float, ...]]:
    """Self-distillation ("born-again" networks, Furlanello et al. 2018): each further generation is
    the same architecture, freshly initialised, distilled from the generation before. Returns the
    generation with the best validation score (the earliest on a tie) and every generation's."""
    if tier.generations == 1:
        return first, ()
    results = [first]
    for generation in range(2, tier.generations + 1):
        seed = ctx.cfg.seed + generation - 1
        fresh = copy.deepcopy(architecture)
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        previous = results[-1].model
        before = Lesson(previous, TeacherOutputs(ctx.entry.predict(previous, ctx.prep.parts.train)), learn.reference, "")
        ctx.progress.stage(f"{tier.name}: generation {generation} of {tier.generations}, distilled from generation {generation - 1}")
        results.append(_fit(ctx, fresh, before, seed, f"distil {tier.name} gen {generation}"))
    best = max(results, key=lambda r: r.val_score)
    return best, tuple(r.val_score for r in results)
