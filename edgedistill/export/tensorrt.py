"""ONNX -> TensorRT engine for NVIDIA GPUs (Jetson).

Every build writes a small trtexec script that builds the engine on the device itself; where the
`tensorrt` package and a CUDA GPU are present here, the engine is also built with TensorRT's
Python API and timed. `tensorrt` is an optional extra: it is imported only inside functions.

How a build is typed (checked against the trtexec sources of TensorRT 10.3, 10.16 and 11.1):
- int8 comes from a static Q/DQ model (explicit quantization) in a strongly typed network:
  `--stronglyTyped`. NVIDIA's explicit-quantization guide says precision flags "are not required
  and should not be specified"; trtexec 10.x turns `--int8` off under `--stronglyTyped`, and 11.x
  no longer knows `--int8`/`--fp16`/`--best` (strong typing is always on there).
- fp16 from an fp32 model: weak typing with `--fp16` (BuilderFlag.FP16). That is TensorRT 10.x
  only (deprecated since 10.12, removed in 11); JetPack 6 ships 10.3.
- fp16 from an fp16 model (edgedistill.export.fp16.to_fp16): `--stronglyTyped`, any version.
- fp16 from a Q/DQ model: weak typing with `--int8 --fp16`, so the layers left in float may run
  in fp16 (TensorRT 10.x only).
"""

from __future__ import annotations

import ctypes
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx
from onnx import numpy_helper

from edgedistill.compress.budget import Precision
from edgedistill.errors import UserError
from edgedistill.export.fp16 import quantized_ops
from edgedistill.export.onnx import load_onnx_checked
from edgedistill.fileio import atomic_path
from edgedistill.timing import time_calls

# The precisions an engine is built at (the builds typed in the module docstring).
PRECISIONS: tuple[Precision, ...] = ("fp16", "int8")
# One timing cache per engine folder: tactic timings are per device, and reused across models.
TIMING_CACHE_NAME = "timing.cache"
# JetPack installs trtexec here, and not on PATH.
_JETPACK_TRTEXEC_DIR = "/usr/src/tensorrt/bin"
_TIMING_WARMUP = 10
_TIMING_RUNS = 100


@dataclass(frozen=True)
class TrtBuild:
    """What to build: an ONNX file, a precision and the batch range of its optimization profile.

    The inputs' other dimensions come from the ONNX graph and must be fixed there, except the
    sequence axis (axis 1) of a transformer's token inputs, which `seq` (min, opt, max) spans.
    """

    onnx: Path
    precision: Precision
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 32
    seq: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"TensorRT precision {self.precision!r} is unknown: use {' or '.join(map(repr, PRECISIONS))}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserError(
                "TensorRT batch sizes must satisfy 1 <= min_batch <= opt_batch <= max_batch, got "
                f"{self.min_batch} / {self.opt_batch} / {self.max_batch}"
            )
        if self.seq is not None and not 1 <= self.seq[0] <= self.seq[1] <= self.seq[2]:
            got = " / ".join(map(str, self.seq))
            raise UserError(f"TensorRT sequence lengths must satisfy 1 <= min <= opt <= max, got {got}")


@dataclass(frozen=True)
class TrtArtifact:
    """The trtexec script (always) and the engine (where it could be built here).

    `command` is the trtexec line of the script, with paths relative to the script's folder.
    `p50_ms` is the median latency at the profile's smallest batch (1 by default).
    """

    onnx: Path
    precision: str
    command_path: Path
    command: str
    engine: Path | None
    built: bool
    reason: str
    p50_ms: float | None
    build_seconds: float | None


@dataclass(frozen=True)
class _Input:
    """A graph input: its name, its non-batch dimensions (None: the dynamic sequence axis), and
    its batch (None when dynamic)."""

    name: str
    batch: int | None
    dims: tuple[int | None, ...]

    @property
    def dynamic(self) -> bool:
        """Whether the optimization profile must give it shapes."""
        return self.batch is None or None in self.dims

    def shape(self, batch: int, seq: int | None) -> tuple[int, ...]:
        """Its shape at `batch` (where its batch is dynamic) and sequence length `seq`."""
        rest = tuple(seq if d is None else d for d in self.dims)
        return (batch if self.batch is None else self.batch, *rest)


@dataclass(frozen=True)
class _Plan:
    """How one build is typed, for trtexec and for the Python API alike."""

    cli_flags: tuple[str, ...]
    strongly_typed: bool
    builder_flags: tuple[str, ...]  # names of trt.BuilderFlag members (weak typing only)
    inputs: tuple[_Input, ...]


class _NoCuda(Exception):
    """The CUDA driver is missing or reports no usable device."""


def trtexec_command(build: TrtBuild, engine: Path, base: Path | None = None) -> str:
    """The trtexec line that builds `engine` from `build` on the device, shell-quoted.

    Paths are written as given, or relative to `base` (the folder the line will run in). The
    timing cache is `timing.cache` beside the engine; trtexec's timings go to the engine's path
    with the suffix `.times.json`.
    """
    return _command(build, _plan(build), Path(engine), base)


def tensorrt_status() -> tuple[bool, str]:
    """(True, what was found) when `tensorrt` imports and the CUDA driver sees a GPU; else
    (False, the one-line reason). Needs no CUDA build of torch."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: the package is there, its libraries are not
        return False, (
            f"tensorrt is not importable ({_first_line(exc)}): install TensorRT, or build on the "
            "device with the trtexec script"
        )
    try:
        device = _Cuda().device_name()
    except _NoCuda as exc:
        return False, f"no CUDA GPU is visible ({exc}): build on the device with the trtexec script"
    return True, f"tensorrt {trt.__version__} on {device}"


def build_tensorrt(build: TrtBuild, out_dir: Path, timing_cache: Path | None = None) -> TrtArtifact:
    """Write `<stem>.<precision>.trtexec.sh` in `out_dir` and, where TensorRT and a GPU are
    present, build `<stem>.<precision>.engine` beside it and time it.

    `timing_cache`, when given, is loaded before the build (if it exists) and saved after it.
    An engine that cannot be built here gives built=False and the reason; a model TensorRT can
    never take (e.g. int8 without symmetric Q/DQ) raises UserError before anything is written.
    """
    out_dir = Path(out_dir)
    plan = _plan(build)
    stem = f"{Path(build.onnx).stem}.{build.precision}"
    engine = out_dir / f"{stem}.engine"
    script = out_dir / f"{stem}.trtexec.sh"
    command = _command(build, plan, engine, base=out_dir)
    _write_script(script, command)
    ok, status = tensorrt_status()
    if not ok:
        return TrtArtifact(
            onnx=Path(build.onnx),
            precision=build.precision,
            command_path=script,
            command=command,
            engine=None,
            built=False,
            reason=status,
            p50_ms=None,
            build_seconds=None,
        )
    built, reason, p50_ms, seconds = _build_and_time(build, plan, engine, timing_cache)
    return TrtArtifact(
        onnx=Path(build.onnx),
        precision=build.precision,
        command_path=script,
        command=command,
        engine=engine if built else None,
        built=built,
        reason=f"{status}: {reason}",
        p50_ms=p50_ms,
        build_seconds=seconds,
    )


def _plan(build: TrtBuild) -> _Plan:
    """Check the model against TensorRT's rules and decide how the build is typed."""
    path = Path(build.onnx)
    graph = load_onnx_checked(path).graph
    quantized = quantized_ops(graph)
    qdq = {"QuantizeLinear", "DequantizeLinear"}
    if quantized - qdq:
        raise UserError(
            f"{path.name} uses {', '.join(sorted(quantized - qdq))}, which TensorRT cannot run: "
            "give it the fp32 model or a static Q/DQ int8 model"
        )
    if quantized:
        _check_symmetric_int8(graph, path.name)
    if build.precision == "int8":
        if not quantized:
            raise UserError(
                f"{path.name} has no Q/DQ nodes: a TensorRT int8 engine is built from a static "
                "int8 Q/DQ model (TensorRT's own calibration is deprecated); quantize it first"
            )
        typing = (("--stronglyTyped",), True, ())
    elif quantized:
        typing = (("--int8", "--fp16"), False, ("INT8", "FP16"))
    elif any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer):
        typing = (("--stronglyTyped",), True, ())
    else:
        typing = (("--fp16",), False, ("FP16",))
    return _Plan(*typing, inputs=_inputs(graph, path.name, build.seq is not None))


def _check_symmetric_int8(graph: onnx.GraphProto, name: str) -> None:
    """TensorRT takes only signed int8 Q/DQ with zero points of 0 (onnx-tensorrt operators.md);
    onnxruntime's default static quantization makes uint8 activations and int32 biases."""
    inits = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero_point = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        quantized_input = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        tensors = [t for t in (zero_point, quantized_input) if t is not None]
        signed = all(t.data_type == onnx.TensorProto.INT8 for t in tensors)
        if not signed or (zero_point is not None and numpy_helper.to_array(zero_point).any()):
            raise UserError(
                f"{name} is not symmetric int8 Q/DQ ({node.op_type} {node.name or node.output[0]} "
                "is uint8, int32 or has a nonzero zero point), which TensorRT requires: quantize with "
                "int8 activations and extra_options ActivationSymmetric=True, QuantizeBias=False"
            )


def _inputs(graph: onnx.GraphProto, name: str, ranged_seq: bool) -> tuple[_Input, ...]:
    """The graph's real inputs (not initializers) with their batch and other dimensions: fixed, or
    with `ranged_seq` the sequence axis of a 2-D token input dynamic too."""
    inits = {init.name for init in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in inits:
            continue
        if "," in value.name:
            # trtexec splits its shape lists on commas before it reads the names.
            raise UserError(f"{name}: input name {value.name!r} has a comma, which trtexec cannot take: rename it")
        dims = value.type.tensor_type.shape.dim
        if not dims:
            continue  # a scalar has no batch to give a profile
        rest = tuple(d.dim_value if d.dim_value > 0 else None for d in dims[1:])
        sequence = ranged_seq and len(rest) == 1  # (batch, tokens): the profile spans the tokens
        if None in rest and not sequence:
            raise UserError(
                f"{name}: input {value.name} has a dynamic dimension besides the batch: TensorRT "
                "needs the others fixed; export with a fixed input size"
            )
        batch = dims[0].dim_value if dims[0].dim_value > 0 else None
        inputs.append(_Input(value.name, batch, rest))
    return tuple(inputs)


def _command(build: TrtBuild, plan: _Plan, engine: Path, base: Path | None) -> str:
    def where(path: Path) -> str:
        return os.path.relpath(path, base) if base is not None else str(path)

    args = ["trtexec", f"--onnx={where(Path(build.onnx))}", f"--saveEngine={where(engine)}", *plan.cli_flags]
    dynamic = [i for i in plan.inputs if i.dynamic]
    if dynamic:  # an input of fixed shape needs no profile
        for flag, batch, seq in zip(("--minShapes", "--optShapes", "--maxShapes"), _batches(build), _seqs(build)):
            args.append(f"{flag}=" + ",".join(f"{i.name}:{'x'.join(map(str, i.shape(batch, seq)))}" for i in dynamic))
    args.append(f"--exportTimes={where(engine.with_suffix('.times.json'))}")
    args.append(f"--timingCacheFile={where(engine.parent / TIMING_CACHE_NAME)}")
    return shlex.join(args)


def _batches(build: TrtBuild) -> tuple[int, int, int]:
    return build.min_batch, build.opt_batch, build.max_batch


def _seqs(build: TrtBuild) -> tuple[int | None, int | None, int | None]:
    return build.seq if build.seq is not None else (None, None, None)


def _write_script(path: Path, command: str) -> None:
    """An executable sh script that runs `command` from its own folder (paths are relative)."""
    text = (
        "#!/bin/sh\n"
        "# Builds the TensorRT engine on the device itself. Written by edgedistill.\n"
        "set -e\n"
        'cd "$(dirname "$0")"\n'
        f'PATH="$PATH:{_JETPACK_TRTEXEC_DIR}"\n'
        f"exec {command}\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        tmp.chmod(0o755)


def _build_and_time(
    build: TrtBuild, plan: _Plan, engine: Path, timing_cache: Path | None
) -> tuple[bool, str, float | None, float | None]:
    """Build with TensorRT's Python API, write the engine, time it: (built, reason, p50, seconds)."""
    import tensorrt as trt

    class _Logger(trt.ILogger):
        """Keeps TensorRT's errors for the one-line reason; drops the rest."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(_first_line(msg))

    missing = [flag for flag in plan.builder_flags if not hasattr(trt.BuilderFlag, flag)]
    if missing:
        return False, (
            f"this TensorRT has no BuilderFlag.{missing[0]} (weak typing is gone since TensorRT 11): "
            "build from the fp16 ONNX of edgedistill.export.fp16.to_fp16 instead"
        ), None, None
    logger = _Logger()
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(build.onnx)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        detail = "; ".join(
            f"node {e.node_name() or e.node()} ({e.node_operator()}): {_first_line(e.desc())}" for e in errors
        )
        return False, f"TensorRT cannot parse {Path(build.onnx).name}: {detail}", None, None
    config = builder.create_builder_config()
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    dynamic = [i for i in plan.inputs if i.dynamic]
    if dynamic:
        profile = builder.create_optimization_profile()
        for i in dynamic:
            profile.set_shape(i.name, *(i.shape(batch, seq) for batch, seq in zip(_batches(build), _seqs(build))))
        config.add_optimization_profile(profile)
    cached = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cached), ignore_mismatch=False):
        # A cache from another GPU or TensorRT version is rejected: start a fresh one.
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        detail = logger.errors[-1] if logger.errors else "no error message"
        return False, f"TensorRT could not build the engine ({detail})", None, seconds
    with atomic_path(engine) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if timing_cache is not None:
        with atomic_path(timing_cache) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    try:
        p50_ms = _time_engine(trt, logger, serialized, build.min_batch, _seqs(build)[1])
    except _NoCuda as exc:
        return True, f"built in {seconds:.1f} s; timing skipped ({exc})", None, seconds
    at = f"batch {build.min_batch}" + (f", {build.seq[1]} tokens" if build.seq is not None else "")
    return True, f"built in {seconds:.1f} s; p50 {p50_ms:.3f} ms at {at}", p50_ms, seconds


def _time_engine(trt: ModuleType, logger: Any, serialized: Any, batch: int, seq: int | None) -> float:
    """Median latency of one execution (enqueue + synchronize) on zero-filled device buffers,
    with `batch` as the batch of every input whose batch is dynamic and `seq` its sequence length."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    for name in names:
        shape = tuple(engine.get_tensor_shape(name))
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and -1 in shape:
            fill = (batch, *(seq or 1 for _ in shape[1:]))
            context.set_input_shape(name, tuple(f if d == -1 else d for d, f in zip(shape, fill)))
    cuda = _Cuda()
    cuda.use_primary_context()
    buffers: list[int] = []
    stream = None
    try:
        for name in names:
            size = trt.volume(context.get_tensor_shape(name)) * engine.get_tensor_dtype(name).itemsize
            buffers.append(cuda.alloc_zeros(size))
            context.set_tensor_address(name, buffers[-1])
        stream = cuda.create_stream()

        def run() -> None:
            if not context.execute_async_v3(stream):
                raise _NoCuda("TensorRT could not enqueue the engine")
            cuda.synchronize(stream)

        return time_calls(run, warmup=_TIMING_WARMUP, runs=_TIMING_RUNS).p50_ms
    finally:
        if stream is not None:
            cuda.destroy_stream(stream)
        for pointer in buffers:
            cuda.free(pointer)
        cuda.release_primary_context()


class _Cuda:
    """The few CUDA driver calls this module needs, through ctypes, so that neither cuda-python
    nor a CUDA build of torch is required. Uses the device's primary context, the one TensorRT's
    CUDA runtime uses too."""

    def __init__(self) -> None:
        try:
            self._lib = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:
            raise _NoCuda("libcuda.so.1 of the NVIDIA driver is not installed") from exc
        lib = self._lib
        # Declared so that 64-bit pointers and handles are not truncated to C ints.
        lib.cuDeviceGet.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        lib.cuDeviceGetName.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        lib.cuDevicePrimaryCtxRetain.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        lib.cuDevicePrimaryCtxRelease_v2.argtypes = [ctypes.c_int]
        lib.cuCtxSetCurrent.argtypes = [ctypes.c_void_p]
        lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        lib.cuMemsetD8_v2.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t]
        lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        lib.cuStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]
        lib.cuStreamSynchronize.argtypes = [ctypes.c_void_p]
        lib.cuStreamDestroy_v2.argtypes = [ctypes.c_void_p]
        self._call("cuInit", 0)
        count = ctypes.c_int()
        self._call("cuDeviceGetCount", ctypes.byref(count))
        if count.value < 1:
            raise _NoCuda("the NVIDIA driver sees no CUDA device")
        device = ctypes.c_int()
        self._call("cuDeviceGet", ctypes.byref(device), 0)
        self._device = device.value

    def _call(self, function: str, *args: object) -> None:
        status = getattr(self._lib, function)(*args)
        if status != 0:
            raise _NoCuda(f"{function} failed with CUDA error {status}")

    def device_name(self) -> str:
        name = ctypes.create_string_buffer(256)
        self._call("cuDeviceGetName", name, len(name), self._device)
        return name.value.decode(errors="replace")

    def use_primary_context(self) -> None:
        handle = ctypes.c_void_p()
        self._call("cuDevicePrimaryCtxRetain", ctypes.byref(handle), self._device)
        self._call("cuCtxSetCurrent", handle)

    def release_primary_context(self) -> None:
        self._call("cuDevicePrimaryCtxRelease_v2", self._device)

    def alloc_zeros(self, size: int) -> int:
        pointer = ctypes.c_uint64()
        self._call("cuMemAlloc_v2", ctypes.byref(pointer), max(size, 1))
        self._call("cuMemsetD8_v2", pointer.value, 0, max(size, 1))
        return pointer.value

    def free(self, pointer: int) -> None:
        self._call("cuMemFree_v2", pointer)

    def create_stream(self) -> int:
        stream = ctypes.c_void_p()
        self._call("cuStreamCreate", ctypes.byref(stream), 0)
        return stream.value

    def synchronize(self, stream: int) -> None:
        self._call("cuStreamSynchronize", stream)

    def destroy_stream(self, stream: int) -> None:
        self._call("cuStreamDestroy_v2", stream)


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
