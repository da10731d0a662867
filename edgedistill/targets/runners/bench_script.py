"""The benchmark that runs ON the device (a Raspberry Pi, a Jetson): self-contained by design.

The ssh runner sends this file's text to the device's `python3` on standard input
(`python3 - MODEL ...`), so it must need nothing but the standard library, numpy and
onnxruntime there, and must run on older Pythons (3.8, as on Raspberry Pi OS bullseye): no
imports from edgedistill, no `X | Y` annotations, no `match`. The host reads it with
`script_text()`; it is an ordinary module of the package, so no package-data entry is needed.

Output on stdout: optional `progress DONE TOTAL` lines, then ONE JSON line:
  {"p50_ms", "p90_ms", "p99_ms", "runs", "batch", "throughput_batch", "throughput_per_s",
   "runtime", "provider", "threads", "device", "seq_len", "load"}
`runs` is the count actually timed: at least --runs, more where those last under --min-time.
Failures print one line `edgedistill-bench: ...` on stderr and exit with one of the codes below,
which the host turns into a message naming the fix.
"""

import argparse
import json
import os
import platform
import sys
import threading
import time

EXIT_MISSING_PACKAGE = 3  # numpy or onnxruntime is not importable on the device
EXIT_BAD_MODEL = 4  # the model does not load, or its inputs cannot be fed
EXIT_NO_PROVIDER = 5  # none of the requested execution providers is available
EXIT_TIME_LIMIT = 6  # --time-limit passed: the benchmark stops itself, even if the host is gone

# ONNX tensor types as onnxruntime names them -> numpy dtype names.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def script_text():
    """This file's source, as sent to the device (called on the host)."""
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        return f.read()


def _fail(code, message):
    sys.stderr.write("edgedistill-bench: " + message + "\n")
    sys.exit(code)


def device_name():
    """The board (device tree model: Raspberry Pi, Jetson), else the CPU model, else platform."""
    try:
        with open("/proc/device-tree/model", "rb") as f:
            model = f.read().replace(b"\x00", b"").decode("utf-8", "replace").strip()
        if model:
            return model
    except OSError:
        pass  # not a device-tree board
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")) and ":" in line:
                    value = line.split(":", 1)[1].strip()
                    if value:
                        return value
    except OSError:
        pass  # not Linux
    return platform.processor() or platform.machine() or "unknown CPU"


def _percentiles(samples_ms, np):
    p50, p90, p99 = np.percentile(np.asarray(samples_ms, dtype=np.float64), [50, 90, 99])
    return float(p50), float(p90), float(p99)


def _feed(session, batch, np, seq_len=0):
    """Random inputs of each input's declared shape and dtype, batch axis set to `batch` and any
    other dynamic axis to `seq_len` (a transformer's sequence length)."""
    rng = np.random.default_rng(0)
    feed = {}
    for inp in session.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else seq_len for d in inp.shape[1:]]
        if not all(d > 0 for d in dims):
            _fail(EXIT_BAD_MODEL, f"input {inp.name!r} has shape {inp.shape}: give --seq-len for its dynamic axes")
        if inp.type not in _DTYPES:
            _fail(EXIT_BAD_MODEL, f"input {inp.name!r} has type {inp.type}, which the benchmark cannot feed")
        dtype = np.dtype(_DTYPES[inp.type])
        shape = tuple([batch] + dims)
        if np.issubdtype(dtype, np.floating):
            feed[inp.name] = rng.random(shape).astype(dtype)
        else:
            feed[inp.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feed


# Timed runs stop here even before the minimum time, so a microsecond model does not fill memory
# with samples (the host's MAX_RUNS, repeated: this file imports nothing from the host).
MAX_RUNS = 10000


def _time(fn, warmup, runs, min_time_s, on_run=None):
    """Samples in ms of at least `runs` timed calls lasting at least `min_time_s` seconds in all
    (at most max(runs, MAX_RUNS) calls): a fast model's hundred runs last milliseconds, too short
    to see a busy moment of the device. `on_run(done)` follows each of the first `runs` calls."""
    for _ in range(warmup):
        fn()
    most = max(runs, MAX_RUNS)
    samples = []
    first = end = time.perf_counter()
    while len(samples) < runs or (end - first < min_time_s and len(samples) < most):
        start = time.perf_counter()
        fn()
        end = time.perf_counter()
        samples.append((end - start) * 1000.0)
        if on_run is not None and len(samples) <= runs:
            on_run(len(samples))
    return samples


def load_per_core():
    """The device's 1-minute load average per CPU it lets this process use; None without one."""
    try:
        one_minute = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows, or no /proc/loadavg
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return one_minute / max(1, cpus)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="edgedistill-bench")
    parser.add_argument("model")
    parser.add_argument(
        "--providers", default="CPUExecutionProvider", help="comma-separated, in order of preference"
    )
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = onnxruntime's default")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100, help="the least count of timed runs")
    parser.add_argument("--min-time", type=float, default=0.2, help="the least seconds of timed runs")
    parser.add_argument("--throughput-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=0, help="size of dynamic axes after the batch; 0 = none")
    parser.add_argument("--progress", type=int, default=0, help="print a progress line every N timed runs")
    parser.add_argument("--time-limit", type=float, default=0, help="exit after this many seconds; 0 = never")
    args = parser.parse_args(argv)

    if args.time_limit > 0:
        # A dropped SSH connection does not signal a command without a terminal: stop on our own.
        def stop():
            sys.stderr.write(f"edgedistill-bench: stopped after the {args.time_limit:g} s time limit\n")
            sys.stderr.flush()
            os._exit(EXIT_TIME_LIMIT)

        watchdog = threading.Timer(args.time_limit, stop)
        watchdog.daemon = True
        watchdog.start()

    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        _fail(
            EXIT_MISSING_PACKAGE,
            f"cannot import {getattr(exc, 'name', None) or 'a package'} on this device ({exc})",
        )

    wanted = [p for p in args.providers.split(",") if p]
    available = ort.get_available_providers()
    providers = [p for p in wanted if p in available]
    if not providers:
        _fail(
            EXIT_NO_PROVIDER,
            f"none of {','.join(wanted)} is available here; available: {','.join(available)}",
        )

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if args.threads:
        opts.intra_op_num_threads = args.threads
    try:
        session = ort.InferenceSession(args.model, sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _fail(EXIT_BAD_MODEL, f"cannot load {os.path.basename(args.model)} ({detail})")

    shape = session.get_inputs()[0].shape
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        batch = tp_batch = shape[0]  # a fixed batch is used for both
    else:
        batch, tp_batch = 1, args.throughput_batch

    every = max(0, args.progress)

    def report(done):
        if every and (done % every == 0 or done == args.runs):
            sys.stdout.write(f"progress {done} {args.runs}\n")
            sys.stdout.flush()

    feed = _feed(session, batch, np, args.seq_len)
    latency = _time(lambda: session.run(None, feed), args.warmup, args.runs, args.min_time, report)
    tp_feed = _feed(session, tp_batch, np, args.seq_len)
    # Batched runs are long and steady, so fewer of them give a stable median.
    batched = _time(lambda: session.run(None, tp_feed), max(1, args.warmup // 5), max(5, args.runs // 5), args.min_time)
    p50, p90, p99 = _percentiles(latency, np)
    tp_p50 = _percentiles(batched, np)[0]
    result = {
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "runs": len(latency),
        "batch": batch,
        "throughput_batch": tp_batch,
        "throughput_per_s": tp_batch * 1000.0 / tp_p50,
        "runtime": "onnxruntime " + ort.__version__,
        "provider": session.get_providers()[0],
        "threads": args.threads,
        "device": device_name(),
        "seq_len": args.seq_len or None,
        "load": load_per_core(),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
