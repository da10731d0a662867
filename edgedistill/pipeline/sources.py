"""What a tier's target files are made from: its ONNX files and real inputs to check them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgedistill.compress.qat import QatResult
from edgedistill.compress.quantize import Int8Dynamic, QuantResult
from edgedistill.data.base import Exported
from edgedistill.export.deploy import Sources
from edgedistill.export.lint.litert import LITERT_MICRO
from edgedistill.pipeline.context import Context
from edgedistill.tasks import Reference

# Validation inputs the search's size probe checks its files on: enough to run them, no more.
PROBE_SAMPLES = 8


@dataclass(frozen=True)
class Files:
    """A student's ONNX files: fp32 (exported) and the int8 it ships (None when quantization is
    off), with the quantization-aware training record where QAT ran (where its int8 ships, every
    int8 file for a target is made from its student)."""

    fp32: Exported
    int8: QuantResult | None
    qat: QatResult | None = None


def scorer(ctx: Context, ref: Reference) -> Callable[[np.ndarray], float]:
    """The task's score of outputs on the validation split, against `ref`."""
    task = ctx.prep.task
    return lambda out: task.score(out, ref)


def sources(ctx: Context, made: Files, ref: Reference | None, model: nn.Module | None = None) -> Sources:
    """The ONNX files, the student in PyTorch (`model`, for formats made by torch.export; None
    for the search's size probe) and real inputs to check and calibrate target files with;
    without a reference (the size probe) a few inputs and no score."""
    parts, names, q = ctx.prep.parts, made.fp32.inputs, ctx.cfg.quantize
    count = PROBE_SAMPLES if ref is None else None
    qat = made.qat if made.qat is not None and made.qat.shipped else None
    return Sources(
        made.fp32.path, made.int8.path if made.int8 else None, made.fp32.path.parent,
        ctx.entry.feed(parts.val, names, count), ctx.entry.feed(parts.calib, names),
        (lambda _out: 0.0) if ref is None else scorer(ctx, ref), q.symmetric(), q.max_score_drop, make_int8=q.enabled, model=model,
        fixed=ctx.prep.fixed, int8_dynamic=made.int8 is not None and made.int8.method == Int8Dynamic.name,
        full_integer_only=tuple(t.name for t in ctx.targets if t.runtime == LITERT_MICRO),
        int8_fp32=qat.fp32 if qat else None, int8_model=_trained(model, qat),
        int8_reference=made.int8.fp32_score if qat and made.int8 else None,
    )


def _trained(model: nn.Module | None, qat: QatResult | None) -> nn.Module | None:
    """The student QAT trained, where its int8 ships: a copy of `model` with its weights."""
    if model is None or qat is None or qat.weights is None:
        return None
    trained = copy.deepcopy(model)
    trained.load_state_dict(torch.load(qat.weights, weights_only=True))
    return trained.eval()
