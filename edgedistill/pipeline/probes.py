"""What the search asks of a candidate student beyond its PyTorch footprint: the bytes of the
files it would ship as, and its predicted latency on the targets a tier has latency budgets for.
Both make the candidate's files the way the run makes them, in a scratch folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from edgedistill.compress.quantize import quantize
from edgedistill.config import TierConfig
from edgedistill.data.base import Exported
from edgedistill.export.deploy import deploy, wanted
from edgedistill.export.formats import format_for
from edgedistill.fileio import file_bytes, scratch_dir
from edgedistill.pipeline.context import Context
from edgedistill.pipeline.sources import PROBE_SAMPLES, Files, sources


def file_size(ctx: Context, precision: str) -> Callable[[nn.Module], int] | None:
    """Bytes of the file a candidate would ship as, for the search.

    Weight values barely change a file's size, so an undistilled candidate shows it. It is the
    largest of the files at that precision: every int8 method's (the winner is decided later) and
    every file a target deploys (an .ort for a phone) whose size is known here.
    """
    if precision == "int8" and not ctx.cfg.quantize.enabled:
        return None
    deployed = {k: v for k, v in wanted(ctx.targets).items() if k[1] == precision and format_for(k[0]).runs_here}
    if precision == "fp16":
        deployed.setdefault(("onnx", "fp16"), ())
    parts, q = ctx.prep.parts, ctx.cfg.quantize

    def probe(model: nn.Module) -> int:
        with scratch_dir(ctx.rd.root, ".size-probe-") as tmp:
            fp32 = _export(ctx, model, Path(tmp))
            sizes = [file_bytes(fp32.path)] if precision == "fp32" else []
            int8 = None
            if precision == "int8":
                calib, val = ctx.entry.feed(parts.calib, fp32.inputs), ctx.entry.feed(parts.val, fp32.inputs, PROBE_SAMPLES)
                int8 = quantize(fp32.path, Path(tmp) / "model.int8.onnx", q.methods_for(fp32.path), calib, lambda _o: 0.0, val, timing_runs=1)
                sizes += [t.bytes for t in int8.trials]
            made = deploy(sources(ctx, Files(fp32, int8), None), deployed).made
            return max(sizes + [file_bytes(d.path) for d in made])

    return probe


def latency(ctx: Context, tier: TierConfig) -> Callable[[nn.Module], dict[str, float]] | None:
    """Predicted p50 of a candidate on each target the tier has a latency budget for.

    The candidate is exported (fp32) and its graph priced as if at the precision the target gets
    first: the quantized file does not exist yet. Every target is predicted, this machine too, so
    the search is quick and consistent; the report then judges measured figures where it has them.
    """
    names = tuple(tier.budget.latency_ms or ())
    if not names:
        return None
    targets = [t for t in ctx.targets if t.name in names]
    seq = max(ctx.prep.seq_lens) if ctx.prep.seq_lens else None

    def probe(model: nn.Module) -> dict[str, float]:
        with scratch_dir(ctx.rd.root, ".latency-probe-") as tmp:
            graph = _export(ctx, model, Path(tmp)).path
            return {t.name: ctx.latency.predict(graph, t, t.artifacts[0].precision, seq).p50_ms for t in targets}

    return probe


def _export(ctx: Context, model: nn.Module, folder: Path) -> Exported:
    return ctx.entry.export(ctx.prep, model, folder / "onnx" / "model.onnx", ctx.cfg.export)
