"""Stage 7b for one tier: quantization-aware training with the teacher. Where post-training int8
loses more than the tolerance or needs ops or layers kept in float (or always, `quantize.qat = true`),
the student is fine-tuned with the int8 scheme of its quantizer emulated in the loop
(`compress.qat`), against the teacher's outputs as in distillation, at a low rate; it is exported,
quantized by the same method, and the better int8 of the two ships: the one that holds the score
with less in float (op types left in float, then layers), or the more accurate when neither holds."""

from __future__ import annotations

import time

import torch

from edgedistill.compress import qat as fake
from edgedistill.compress.qat import QatResult
from edgedistill.compress.quantize import QuantResult, quantize
from edgedistill.config import TierConfig
from edgedistill.data.base import Exported, FitOrder
from edgedistill.fileio import atomic_path
from edgedistill.rundir import Made, StageId, input_key
from edgedistill.pipeline.context import Context
from edgedistill.pipeline.sources import scorer
from edgedistill.pipeline.student import Distilled, Lesson


def with_qat(ctx: Context, tier: TierConfig, student: Distilled, learn: Lesson, fp32: Exported, post: QuantResult, key: str) -> tuple[QuantResult, QatResult | None, str]:
    """The int8 the tier ships, the QAT record (None where QAT was not wanted) and the key of both."""
    q = ctx.cfg.quantize
    if ctx.entry.qat_refused is not None or not q.wants_qat(post):
        return post, None, key
    # "start competes", "weights kept": QAT made before its calibrated start could be kept, or
    # before its student was kept for the int8 files made from PyTorch, is made again.
    qat_key = input_key(key, learn.key, ctx.cfg.distill, ctx.cfg.seed, "start competes", "weights kept")
    folder = ctx.folder(tier.name)

    def make() -> Made[QatResult]:
        result = _train_and_quantize(ctx, tier, student, learn, fp32, post, folder)
        return Made(result, (result.int8.path, result.fp32, result.weights))

    sid = StageId("qat", tier.name)
    done = ctx.rd.stage(sid, qat_key, QatResult, make, ctx.progress, f"{tier.name}: trained with int8 in the loop earlier")
    return (done.int8 if done.shipped else post), done, input_key(key, ctx.rd.made_key(sid))


def _train_and_quantize(ctx: Context, tier: TierConfig, student: Distilled, learn: Lesson, fp32: Exported, post: QuantResult, folder: str) -> QatResult:
    q, cfg = ctx.cfg.quantize, ctx.cfg.distill
    method = q.static_for(post, fp32.path)
    lr = q.qat_lr or cfg.lr / 10
    training = cfg.model_copy(update={"epochs": q.qat_epochs, "lr": lr, "patience": min(cfg.patience, q.qat_epochs)})
    ctx.progress.stage(
        f"{tier.name}: post-training int8 scored {post.score:.4f} against fp32 {post.fp32_score:.4f}; "
        f"training with {method.name} in the loop ({q.qat_epochs} epochs at lr {lr:g})"
    )
    started = time.perf_counter()
    model = fake.fake_quantized(student.model, fake.scheme_for(method))
    # Training starts from the ranges onnxruntime will calibrate: those seen in training then move them.
    with fake.calibrating(model):
        ctx.entry.predict(model, ctx.prep.parts.calib)
    live = learn.model if cfg.augment.active else None
    order = FitOrder(model, training, ctx.cfg.seed, learn.outputs, learn.reference, live, ctx.prep.task, start_competes=True)
    with ctx.progress.task(f"qat {tier.name}", q.qat_epochs) as advance:
        trained = ctx.trainer.fit(ctx.prep.parts, order, lambda e, _n, score: advance(e, f"val {score:.3f}"))
    plain = fake.unwrapped(trained.model)
    exported = ctx.entry.export(ctx.prep, plain, ctx.onnx(folder, "qat"), ctx.cfg.export)
    weights = exported.path.with_suffix(".pt")
    with atomic_path(weights) as tmp:
        torch.save(plain.state_dict(), tmp)
    parts = ctx.prep.parts
    int8 = quantize(
        exported.path, exported.path.parent / "model.int8.qat.onnx", (method,), ctx.entry.feed(parts.calib, exported.inputs),
        scorer(ctx, learn.reference), ctx.entry.feed(parts.val, exported.inputs), q.max_score_drop, reference=post.fp32_score,
    )
    shipped, why = better(int8, post, q.max_score_drop)
    return QatResult(
        int8, method.name, post.score, post.kept_float, trained.val_score, trained.best_epoch, trained.epochs_run, lr,
        round(time.perf_counter() - started, 3), shipped, why, exported.path, weights, post.float_ops,
    )


def better(qat: QuantResult, post: QuantResult, max_drop: float) -> tuple[bool, str]:
    """Whether the QAT int8 ships instead of the post-training one, and why."""
    def holds(r: QuantResult) -> bool:
        return r.fp32_score - r.score <= max_drop + 1e-12

    said = f"QAT {qat.score:.4f} with {_in_float(qat)}, post-training {post.score:.4f} with {_in_float(post)}"
    if holds(qat) and not holds(post):
        return True, f"QAT holds the score where post-training int8 does not: {said}"
    if holds(qat) and qat.in_float < post.in_float:
        return True, f"QAT holds the score with less in float: {said}"
    if holds(qat) and holds(post) and qat.in_float == post.in_float and qat.score > post.score:
        return True, f"both hold with as much in float and QAT scores higher: {said}"
    if not holds(qat) and not holds(post) and qat.score > post.score:
        return True, f"neither holds the score and QAT comes closer: {said}"
    return False, f"post-training int8 is as good or better: {said}"


def _in_float(r: QuantResult) -> str:
    ops = f"every {', '.join(r.float_ops)} and " if r.float_ops else ""
    return f"{ops}{len(r.kept_float)} layer(s) in float"
