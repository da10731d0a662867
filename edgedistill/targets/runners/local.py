"""Measure an ONNX file with onnxruntime on this machine's CPU."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgedistill.errors import UserError
from edgedistill.export.formats import FORMATS, HereRuntime, here_runtime
from edgedistill.ortsession import ORT_DTYPES, open_session
from edgedistill.targets.runners.base import Measurement, Reach, register_runner
from edgedistill.timing import MIN_TIME_S, load_per_core, time_calls


@register_runner("local")
@dataclass(frozen=True)
class LocalRunner:
    """onnxruntime on this machine: the CPU, or a GPU through the CUDA or TensorRT execution
    provider where this onnxruntime has it (`provider`). `threads` 0 keeps onnxruntime's default."""

    threads: int = 0
    warmup: int = 10
    runs: int = 100
    throughput_batch: int = 32
    provider: str = "CPUExecutionProvider"
    # The size of every dynamic axis after the batch (a transformer's sequence length).
    seq_len: int | None = None

    @classmethod
    def accepts(cls, reach: Reach) -> tuple[str, ...]:
        """onnxruntime's files, and those of every format with a runtime of its own here."""
        return (".onnx", ".ort", *(f.here.suffix for f in FORMATS.values() if f.here))

    @classmethod
    def open(cls, reach: Reach) -> LocalRunner:
        """onnxruntime on this machine's CPU, timed as `reach` says."""
        return cls(
            threads=reach.threads, warmup=reach.warmup, runs=reach.runs,
            throughput_batch=reach.throughput_batch, seq_len=reach.seq_len,
        )

    def __post_init__(self) -> None:
        if self.threads < 0 or self.warmup < 0 or self.runs < 1 or self.throughput_batch < 1:
            raise UserError(
                "local runner needs threads >= 0, warmup >= 0, runs >= 1 and throughput_batch >= 1"
            )
        if self.seq_len is not None and self.seq_len < 1:
            raise UserError(f"local runner needs seq_len >= 1, got {self.seq_len}")

    def measure(
        self,
        model_path: Path,
        target: str = "host-cpu",
        progress: Callable[[int, int], None] | None = None,
    ) -> Measurement:
        """Time batch-1 latency (at least `runs` runs, and at least the minimum time of
        `time_calls`) and batched throughput of `model_path`, and read the machine's load.

        `progress(done, total)` is called after each timed latency run.
        """
        runtime = here_runtime(Path(model_path))
        if runtime is not None:
            return self._measure_with(runtime, Path(model_path), target, progress)
        session = open_session(Path(model_path), threads=self.threads, provider=self.provider)
        batch, tp_batch = _batches(session, self.throughput_batch)
        latency_feed = _random_feed(session, batch, self.seq_len)
        latency = time_calls(
            lambda: session.run(None, latency_feed), warmup=self.warmup, runs=self.runs, progress=progress,
            min_time_s=MIN_TIME_S,
        )
        tp_feed = _random_feed(session, tp_batch, self.seq_len)
        # Batched runs are long and steady, so fewer of them give a stable median.
        batched = time_calls(
            lambda: session.run(None, tp_feed), warmup=max(1, self.warmup // 5), runs=max(5, self.runs // 5)
        )
        return Measurement(
            target=target,
            source="measured",
            runner="local",
            runtime=f"onnxruntime {ort.__version__}",
            provider=session.get_providers()[0],
            threads=self.threads,
            device=cpu_name(),
            batch=batch,
            runs=latency.runs,
            p50_ms=latency.p50_ms,
            p90_ms=latency.p90_ms,
            p99_ms=latency.p99_ms,
            throughput_batch=tp_batch,
            throughput_per_s=tp_batch * 1000.0 / batched.p50_ms,
            seq_len=self.seq_len,
            load=load_per_core(),
        )


    def _measure_with(
        self, runtime: HereRuntime, path: Path, target: str, progress: Callable[[int, int], None] | None
    ) -> Measurement:
        """Time a file of a format with its own runtime here (an ExecuTorch program). Its batch is
        fixed at 1, so throughput is one sample per latency; its threads are the runtime's own."""
        x = np.random.default_rng(0).random(runtime.input_shape(path)).astype(np.float32)
        latency = time_calls(runtime.timed(path, x), warmup=self.warmup, runs=self.runs, progress=progress, min_time_s=MIN_TIME_S)
        return Measurement(
            target=target, source="measured", runner="local", runtime=runtime.name, provider=runtime.name,
            threads=0, device=cpu_name(), batch=1, runs=latency.runs, p50_ms=latency.p50_ms, p90_ms=latency.p90_ms,
            p99_ms=latency.p99_ms, throughput_batch=1, throughput_per_s=1000.0 / latency.p50_ms, seq_len=None,
            load=load_per_core(),
        )


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: fall through to platform
    return platform.processor() or platform.machine() or "unknown CPU"


def _batches(session: ort.InferenceSession, throughput_batch: int) -> tuple[int, int]:
    """(latency batch, throughput batch): 1 and `throughput_batch` for a dynamic batch axis, else
    the fixed batch for both."""
    shape = session.get_inputs()[0].shape
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return shape[0], shape[0]
    return 1, throughput_batch


def _random_feed(session: ort.InferenceSession, batch: int, seq_len: int | None) -> dict[str, np.ndarray]:
    """Random inputs of each input's declared shape and dtype, with the batch axis set to `batch`
    and any other dynamic axis to `seq_len`."""
    rng = np.random.default_rng(0)
    feed = {}
    for inp in session.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else seq_len for d in inp.shape[1:]]
        if None in dims:
            raise UserError(
                f"input {inp.name!r} has shape {inp.shape}: give a sequence length for its dynamic axes "
                "(--seq-len) or export with fixed sizes after the batch axis"
            )
        if inp.type not in ORT_DTYPES:
            raise UserError(f"input {inp.name!r} has type {inp.type}, which the local runner cannot feed")
        dtype = ORT_DTYPES[inp.type]
        shape = (batch, *dims)
        # Floats are uniform noise. Integer inputs are token ids, masks and token types: ones are a
        # valid id in any vocabulary and a full attention mask, so every position is attended.
        if np.issubdtype(dtype, np.floating):
            feed[inp.name] = rng.random(shape).astype(dtype)
        elif "type" in inp.name:
            feed[inp.name] = np.zeros(shape, dtype=dtype)
        else:
            feed[inp.name] = np.ones(shape, dtype=dtype)
    return feed
