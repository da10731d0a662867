"""Figure 16: static int8 of transformers, every op against the weight-bearing ops alone. The
MiniLM teacher and the two students of `edgedistill run --example minilm`, each quantized by
onnxruntime's static quantizer (uint8 and symmetric int8 activations) with every op it quantizes
in int8, then with only Conv/Gemm/MatMul/Gather in int8 (what `quantize()`'s fallback tries first):
cosine to the model's own fp32 embeddings, bytes and batch-1 latency, and what `quantize()` ships.

Run: python -m benchmarks.transformer_int8 [--quick]
Both modes run the example once (~7 min on 2 cores); with EDGEDISTILL_MINILM_RUN naming a run
directory of it, that run is resumed there instead (instant when it finished).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import minilm
from benchmarks.compare import Timings, interleaved, runs_for
from benchmarks.fixtures import workdir
from benchmarks.results import Figure, cores, main, table
from edgedistill.compress.quantize import (
    QUANTIZERS,
    WEIGHT_BEARING_OPS,
    Int8Dynamic,
    Int8Static,
    Int8StaticSymmetric,
    QuantJob,
    QuantResult,
    quantize,
)
from edgedistill.data.text import Tokenized, tokenize
from edgedistill.fileio import quiet
from edgedistill.ortsession import open_session
from edgedistill.tasks.similarity import mean_cosine

HEADING = "## 16. Static int8 of transformers: every op vs the weight-bearing ops alone"
SCHEMES = {"uint8 activations": Int8Static(), "symmetric int8 (TensorRT's)": Int8StaticSymmetric()}
MAX_DROP = 0.01  # the run's default tolerance, here in cosine to the model's own fp32
ROUNDS, QUICK_ROUNDS = 7, 2
BLOCK_S, MOST_RUNS = 0.3, 100


@dataclass(frozen=True)
class Model:
    """One encoder of the run: its fp32 ONNX and the folder its tokenizer loads from."""

    name: str
    onnx: Path
    tokenizer: Path


@dataclass(frozen=True)
class Made:
    """One int8 file of a model and its cosine to the model's fp32 embeddings."""

    path: Path
    cosine: float


@dataclass(frozen=True)
class Shipped:
    """What `quantize()` made of one model with one static scheme, and how long it took."""

    result: QuantResult
    seconds: float


def _models() -> list[Model]:
    """The teacher and students of the minilm example, run once into the work folder (a subprocess,
    as a user runs it)."""
    out = Path(os.environ.get("EDGEDISTILL_MINILM_RUN") or workdir() / "minilm-run")
    subprocess.run([sys.executable, "-m", "edgedistill", "run", "--example", "minilm", "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    students = sorted((out / "students").iterdir())
    return [Model("teacher (MiniLM-L6)", out / "teacher" / "onnx" / "model.onnx", minilm.folder())] + [
        Model(s.name, s / "onnx" / "model.onnx", s / "model") for s in students
    ]


def _sentences(model: Model, quick: bool) -> tuple[Tokenized, Tokenized]:
    """Calibration and held-out sentences in `benchmarks.minilm`'s order, in the model's own vocabulary."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model.tokenizer))
    return tuple(tokenize(tok, texts, minilm.MAX_LENGTH) for texts in minilm.split_texts(quick))


def _feed(path: Path, tokens: Tokenized) -> dict[str, np.ndarray]:
    return tokens.feed([i.name for i in open_session(path).get_inputs()])


def _embeddings(path: Path, tokens: Tokenized) -> np.ndarray:
    return open_session(path).run(None, _feed(path, tokens))[0]


def _made(
    model: Model, method: Int8Static, scope: frozenset[str] | None, calib: Tokenized, val: Tokenized, ref: np.ndarray
) -> Made:
    """The model quantized by the method's registered handler, every op or only `scope` in int8."""
    folder = workdir() / "figure16" / model.name.split()[0]
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{method.name}-{'weight-bearing' if scope else 'every-op'}.onnx"
    with quiet():
        QUANTIZERS[type(method)](method, QuantJob(model.onnx, dst, _feed(model.onnx, calib), folder, op_types=scope))
    return Made(dst, mean_cosine(_embeddings(dst, val), ref))


def _shipped(model: Model, method: Int8Static, calib: Tokenized, val: Tokenized, ref: np.ndarray) -> Shipped:
    """`quantize()` with the one method and the run's tolerance: the fallback as a run meets it."""
    started = time.perf_counter()
    result = quantize(
        model.onnx, workdir() / "figure16" / f"{model.name.split()[0]}-{method.name}-shipped.onnx", (method,),
        _feed(model.onnx, calib), lambda out: mean_cosine(out, ref), _feed(model.onnx, val), MAX_DROP, timing_runs=10,
    )
    return Shipped(result, time.perf_counter() - started)


def _one(val: Tokenized) -> Tokenized:
    """Batch 1: the held-out sentence of median length, unpadded (BERT pads on the right)."""
    lengths = val.attention_mask.sum(1)
    i = int(np.argsort(lengths)[len(lengths) // 2])
    return Tokenized(val.input_ids[i : i + 1, : lengths[i]], val.attention_mask[i : i + 1, : lengths[i]])


def _latencies(files: dict[str, Path], one: Tokenized, rounds: int) -> Timings:
    sessions = {name: (open_session(p), _feed(p, one)) for name, p in files.items()}
    calls = {name: (lambda s=s, f=f: s.run(None, f)) for name, (s, f) in sessions.items()}
    return interleaved(calls, rounds, runs_for(calls, BLOCK_S, MOST_RUNS), warmup=3)


def _rows(model: Model, quick: bool, search: bool) -> tuple[list[list[str]], list[str]]:
    calib, val = _sentences(model, quick)
    ref = _embeddings(model.onnx, val)
    dynamic = workdir() / "figure16" / f"{model.name.split()[0]}-dynamic.onnx"
    dynamic.parent.mkdir(parents=True, exist_ok=True)
    with quiet():
        job = QuantJob(model.onnx, dynamic, _feed(model.onnx, calib), dynamic.parent)
        QUANTIZERS[Int8Dynamic](Int8Dynamic(per_channel=True), job)
    made = {
        (scheme, scope is not None): _made(model, method, scope, calib, val, ref)
        for scheme, method in SCHEMES.items() for scope in (None, WEIGHT_BEARING_OPS)
    }
    files = {"fp32": model.onnx, "dynamic": dynamic, **{f"{s} {'wb' if w else 'all'}": m.path for (s, w), m in made.items()}}
    timings = _latencies(files, _one(val), QUICK_ROUNDS if quick else ROUNDS)
    rows, lines = [], []
    for scheme, method in SCHEMES.items():
        every, wb = made[(scheme, False)], made[(scheme, True)]
        rows.append([
            model.name, scheme, f"{every.cosine:.4f}", f"{wb.cosine:.4f}", f"{(wb.cosine - every.cosine) * 100:+.1f}",
            f"{wb.path.stat().st_size / 2**20:.1f} MiB",
            *(f"{timings.p50_ms(name):.2f}" for name in ("fp32", f"{scheme} all", f"{scheme} wb", "dynamic")),
        ])
        if search:
            shipped = _shipped(model, method, calib, val, ref)
            r = shipped.result
            lines.append(
                f"- {model.name}, {scheme}: `quantize()` shipped cosine {r.score:.4f} with "
                f"{', '.join(r.float_ops) or 'no op type'} in float and {len(r.kept_float)} weighted layer(s) kept in float, "
                f"{r.bytes / 2**20:.1f} MiB, in {shipped.seconds:.0f} s: {r.reason}."
            )
    return rows, [*lines, f"- {model.name} timing: {timings.method}."]


def run(quick: bool = False) -> str:
    rows, lines = [], []
    for n, model in enumerate(_models()):
        # quantize()'s layer search grows with the layers (70 s on the 3-layer student here): students only
        more_rows, more_lines = _rows(model, quick, search=n > 0 and not quick)
        rows += more_rows
        lines += more_lines
    n_calib, n_val = map(len, minilm.split_texts(quick))
    return "\n".join([
        "What: the MiniLM-L6 teacher and the two students of `edgedistill run --example minilm`, as the run exported them, "
        "each quantized by onnxruntime's static QDQ quantizer (`compress.quantize`'s registered handlers, MinMax "
        "calibration, per-channel weights) in two activation schemes: with every op onnxruntime quantizes in int8, and with "
        "only the weight-bearing ops (Conv, ConvTranspose, Gemm, MatMul, Gather) in int8, LayerNormalization and the rest "
        "in float — the first thing `quantize()`'s fallback now tries. Dynamic int8 (what the run ships on CPUs) is timed "
        "beside them.",
        "",
        "How: score = mean cosine of each file's sentence embeddings to the same model's fp32 ONNX, on "
        f"{n_val} held-out pydoc sentences; calibration on {n_calib} others (`benchmarks.minilm`'s "
        "order, each model's own tokenizer). Latency: batch 1, the held-out sentence of median length, unpadded, onnxruntime "
        f"CPU, interleaved rounds (medians of per-round p50s), on {cores()} cores. Then `quantize()` itself with one static "
        f"method and a tolerance of {MAX_DROP} cosine on each student: what the fallback ships.",
        "",
        table(["model", "activations", "every op int8", "weight-bearing only", "gain, pt", "int8 bytes", "fp32 ms",
               "every op ms", "weight-bearing ms", "dynamic ms"], rows,
              right=[False, False, True, True, True, True, True, True, True, True]),
        "",
        *lines,
    ])


FIGURE = Figure("transformer_int8", HEADING, run)

if __name__ == "__main__":
    main(FIGURE)
