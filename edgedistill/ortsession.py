"""Run an ONNX file with onnxruntime on the CPU."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgedistill.errors import UserError
from edgedistill.tasks.heads import join_arrays

# ONNX tensor type strings as onnxruntime reports them, to the numpy dtype to feed.
ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
}


def open_session(path: Path, threads: int = 0, provider: str = "CPUExecutionProvider") -> ort.InferenceSession:
    """Open `path` on `provider` (the CPU by default) with every graph optimization on.

    `threads` 0 keeps onnxruntime's default intra-op thread count. A GPU provider (CUDA,
    TensorRT) must be in this onnxruntime build; the CPU stays as the fallback for ops it lacks.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist: check the path or export the model first")
    if threads < 0:
        raise UserError(f"threads must be >= 0 (0 = onnxruntime default), got {threads}")
    available = ort.get_available_providers()
    if provider not in available:
        raise UserError(
            f"execution provider {provider} is not in this onnxruntime ({', '.join(available)}): "
            "install onnxruntime-gpu on a machine with a GPU, or measure on the CPU"
        )
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path.name} is not a valid ONNX file ({detail}): re-export it") from exc


def input_dtype(session: ort.InferenceSession) -> np.dtype:
    """The numpy dtype the session's first input declares."""
    declared = session.get_inputs()[0].type
    if declared not in ORT_DTYPES:
        raise UserError(f"input type {declared} is not supported: export the model with a float input")
    return ORT_DTYPES[declared]


Feed = np.ndarray | Mapping[str, np.ndarray]
"""Model inputs: one array for a single-input graph, or arrays by input name (a tokenizer's
input_ids and attention_mask); the first axis is the batch in every array."""


def feed_len(x: Feed) -> int:
    """Number of samples in a feed."""
    return len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)


def feed_slice(x: Feed, start: int, stop: int) -> Feed:
    """Samples start..stop of a feed, of the same kind."""
    return {k: v[start:stop] for k, v in x.items()} if isinstance(x, Mapping) else x[start:stop]


def session_feed(session: ort.InferenceSession, x: Feed) -> dict[str, np.ndarray]:
    """The input dict `session.run` takes: a single array goes to the first input, cast to its
    declared dtype; named arrays go to the inputs of those names."""
    if not isinstance(x, Mapping):
        return {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=input_dtype(session))}
    missing = [i.name for i in session.get_inputs() if i.name not in x]
    if missing:
        raise UserError(f"the model needs input(s) {', '.join(missing)}, which the data lacks: give them")
    return {
        i.name: np.ascontiguousarray(x[i.name], dtype=ORT_DTYPES.get(i.type, x[i.name].dtype))
        for i in session.get_inputs()
    }


def run_batched(session: ort.InferenceSession, x: Feed, batch_size: int = 256) -> np.ndarray:
    """Run the session on `x` in batches and return its output, concatenated (several outputs
    joined per sample as `tasks.heads.join_arrays` joins them)."""
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    n = feed_len(x)
    if n == 0:
        raise UserError("no inputs to run: the data split is empty")
    outputs = [
        join_arrays(session.run(None, session_feed(session, feed_slice(x, i, i + batch_size)))) for i in range(0, n, batch_size)
    ]
    return np.concatenate(outputs, axis=0)
