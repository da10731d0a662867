"""The Android binaries the adb runner times a file with, one per runtime, and the `--perf-test`
values that name them.

Each runtime's tool is one entry of `TOOLS`: the files it times, the name it goes by on the phone,
its command line, how its output is read and how its figures are labelled. This module holds no
heavy import: the CLI reads it for its help. The command lines and the output read come from each
tool's own sources:

onnxruntime_perf_test, for `.onnx` and `.ort` (onnxruntime/test/perftest/):
- command_args_parser.cc: `perf_test [options...] model_path [result_file]`; `-m times` with
  `-r N` repeats N times; `-x N` intra-op threads (0 = onnxruntime's default); `-e` the provider
  (cpu, nnapi, xnnpack, qnn, ...); `-I` generates the inputs (free dimensions, the batch
  included, become 1); `-s` prints the percentiles even when a result file is given. Both the
  getopt parser and the Abseil-flags parser that replaced it accept these single-dash forms.
- performance_runner.cc: `Run()` makes one warm-up run of its own and prints "Total inference
  requests: N", "Average inference time cost: X ms" and "Number of inferences per second: X";
  `PerformanceResult::DumpToFile` prints "P50 Latency: X s", "P90 Latency: X s", "P99 Latency:
  X s" (in seconds, the element at index int(n * p) of the sorted times) and appends one CSV row
  per run to the result file.
So p50, p90 and p99 are its own percentiles of the timed runs.

benchmark_model, for `.tflite` (google-ai-edge/LiteRT at f67457790c9c2ab67347d6fe53270e8d3df20868):
- tflite/tools/benchmark/benchmark_model.cc: `--num_runs` (default 50) and `--min_secs` (1.0):
  timed runs go on until both are reached, `--max_secs` (150) stops them; `--warmup_runs` (1)
  and `--warmup_min_secs` (0.5) likewise for the warm-up; `--num_threads` (-1: the interpreter's
  default). `Run()` times each run and logs its `StatWithPercentiles`, in microseconds, once for
  the warm-up and once for the timed runs; `BenchmarkLoggingListener::OnBenchmarkEnd` then logs
  "Inference timings in us: Init: X, First inference: X, Warmup (avg): X, Inference (avg): X".
- tflite/tools/benchmark/benchmark_tflite_model.cc: `--graph` the model; `--result_file_path`
  writes the same statistics as a proto (avg, min, max, std, median, p5, p95). No mode writes
  the time of each run.
- tflite/tools/delegates/xnnpack_delegate_provider.cc: `--use_xnnpack` (default false).
- tflite/tools/logging.h: `TFLITE_LOG(INFO)` goes to stdout as "INFO: ..." (and to logcat).
- The statistics line is `tsl::Stat::OutputToStream` and `StatWithPercentiles::OutputToStream`
  (xla/tsl/util/stats_calculator.h; read in tensorflow/tensorflow at
  2b746b8f4fb2a9e0bdf482c5fc9ccef8939a6bcc, third_party/xla/): "count=N first=F curr=C min=A
  max=B avg=M std=S", or "count=N curr=C(all same)" when every run took as long, then
  " p5=X median=X p95=X", each the element at index n * p / 100 of the sorted runs. TensorFlow's
  older benchmark_model logs a plain `Stat`, without them (tensorflow/lite/tools/benchmark/).
So benchmark_model gives a true p50 (its median) but no p90 or p99. p90 is filled with its p95
and p99 with its max: both bound the true figures from above (by its own index rule the p99 of
at most 100 runs is their max), and every such figure says so (`Timed.stand_ins`).

executor_runner, for `.pte` (pytorch/executorch: examples/portable/executor_runner/
executor_runner.cpp at v1.4.1, e4d02f41f7909e8ed5bf4a14ffc520d733453d9f, unchanged on main at
cff6f4dd32e630945b7188512c1f2b4f102b05ad):
- `--model_path`, `--num_executions` (1), `--cpu_threads` (-1: the phone's performant cores),
  `--print_output` (none, summary or all; added in 1.4 with the per-iteration log, so an older
  runner refuses it). Inputs are all ones. Each execution is timed alone and logged with
  `ET_LOG` as "Iteration i of N: X ms", then "Model executed successfully N time(s) in X ms.".
  There is no warm-up flag: the first `warmup` executions are run and left out.
- runtime/platform/default/android.cpp: the Android platform layer (`EXECUTORCH_PAL_DEFAULT
  android`, set by the android-arm64-v8a preset) logs to logcat under the tag "ExecuTorch", not
  to stdout; posix.cpp logs to stderr ("I 00:00:01.234567 executorch:executor_runner.cpp:781]
  ..."). Both are read.
- devtools/scripts/benchmark_android.sh, ExecuTorch's own Android benchmark, builds this runner
  (`cmake --preset android-arm64-v8a -DEXECUTORCH_BUILD_EXECUTOR_RUNNER=ON
  -DEXECUTORCH_BUILD_XNNPACK=ON ...`, target executor_runner) and reads these lines from logcat;
  `xnn_executor_runner` is the Buck name of the same source linked with XNNPACK. ExecuTorch has
  no other command-line benchmark (extension/benchmark is an Android app).
So p50, p90 and p99 are true percentiles of the executions kept, summarised as every timing here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import UserError

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

# onnxruntime_perf_test's -e names -> the execution provider names onnxruntime reports.
ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "snpe": "SNPEExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
}
_PERF_TEST_RESULT = "perf_test_result.csv"
_LITERT_STAND_INS = "p90 is benchmark_model's p95 and p99 its max (upper bounds: it prints neither)"


@dataclass(frozen=True)
class ToolRun:
    """One timing on the phone: the binary's and the model's paths there, the work directory, and
    how to time. `threads` 0 is the runtime's default; `provider` is onnxruntime_perf_test's `-e`
    name (the other tools run XNNPACK)."""

    binary: str
    model: str
    workdir: str
    threads: int = 0
    warmup: int = 10
    runs: int = 100
    min_time_s: float = 0.0
    provider: str = "cpu"


@dataclass(frozen=True)
class Timed:
    """What a tool's output says of its timed runs, in milliseconds. `runs` and
    `throughput_per_s` are None where it does not say; `stand_ins` names the figures that are not
    the percentile they fill and what fills them ("" when all three are)."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    runs: int | None = None
    throughput_per_s: float | None = None
    stand_ins: str = ""


@dataclass(frozen=True)
class AndroidTool:
    """One runtime's timing binary: `runtime` is its `--perf-test` key, `binary` its name on the
    phone, `suffixes` the files it times, `label` its figures' runtime, `build` how to build it for
    Android (one line), `check` what to check when it fails there. `args` is its command line,
    `parse` reads its output (the runner's `where` names the phone in errors), `provider` names
    what executes the model. `fresh` are files it appends to, removed before each run;
    `logcat_tag` is a tag whose logcat lines are part of its output."""

    runtime: str
    binary: str
    suffixes: tuple[str, ...]
    label: str
    build: str
    check: str
    args: Callable[[ToolRun], list[str]]
    parse: Callable[[str, ToolRun, str], Timed]
    provider: Callable[[ToolRun], str]
    fresh: tuple[str, ...] = ()
    logcat_tag: str | None = None

    @property
    def flag(self) -> str:
        """How `--perf-test` names this tool's binary: `--perf-test PATH` for the default one."""
        return f"--perf-test {self.value('PATH')}"

    def value(self, path: str | Path) -> str:
        """The `--perf-test` value that gives `path` as this tool's binary."""
        return str(path) if self.runtime == DEFAULT else f"{self.runtime}={path}"


def _perf_test_args(run: ToolRun) -> list[str]:
    return [
        run.binary, "-m", "times", "-r", str(run.runs), "-x", str(run.threads), "-e", run.provider, "-I", "-s",
        run.model, f"{run.workdir}/{_PERF_TEST_RESULT}",
    ]


def _benchmark_model_args(run: ToolRun) -> list[str]:
    # The flags take only the --name=value form (tflite/tools/command_line_flags.cc).
    return [
        run.binary, f"--graph={run.model}", f"--num_threads={run.threads or -1}", f"--warmup_runs={run.warmup}",
        f"--num_runs={run.runs}", f"--min_secs={run.min_time_s:g}", "--use_xnnpack=true",
    ]


def _executor_runner_args(run: ToolRun) -> list[str]:
    return [
        run.binary, f"--model_path={run.model}", f"--num_executions={run.warmup + run.runs}",
        f"--cpu_threads={run.threads or -1}", "--print_output=none",
    ]


def _number(text: str, label: str) -> float | None:
    match = re.search(r"^\s*" + re.escape(label) + r":\s*" + _NUMBER, text, re.MULTILINE)
    return float(match.group(1)) if match else None


def parse_perf_test(text: str, run: ToolRun, where: str) -> Timed:
    """onnxruntime_perf_test's percentiles, mean and, where printed, runs and throughput."""
    p50, p90, p99 = (_number(text, f"P{p} Latency") for p in (50, 90, 99))
    if p50 is None or p90 is None or p99 is None:
        raise UserError(
            f"onnxruntime_perf_test on {where} printed no P50/P90/P99 latency ({last_line(text) or 'no output'}): "
            "build onnxruntime_perf_test from a recent onnxruntime release"
        )
    mean_ms = _number(text, "Average inference time cost")
    runs, per_s = _number(text, "Total inference requests"), _number(text, "Number of inferences per second")
    return Timed(
        p50_ms=p50 * 1000.0, p90_ms=p90 * 1000.0, p99_ms=p99 * 1000.0,
        mean_ms=mean_ms if mean_ms is not None else p50 * 1000.0,
        runs=None if runs is None else int(runs), throughput_per_s=per_s if per_s is not None and per_s > 0 else None,
    )


def parse_benchmark_model(text: str, run: ToolRun, where: str) -> Timed:
    """benchmark_model's timed runs: the last statistics line it logs (the warm-up's comes first)."""
    lines = [line for line in text.splitlines() if re.search(r"\bcount=[0-9]", line)]
    if not lines:
        raise UserError(
            f"benchmark_model on {where} printed no timings ({last_line(text) or 'no output'}): "
            f"check that it was built for this phone's ABI ({LITERT.build})"
        )
    stats = {key: float(value) for key, value in re.findall(r"\b(\w+)=" + _NUMBER, lines[-1])}
    if "median" not in stats or "p95" not in stats:
        raise UserError(
            f"benchmark_model on {where} printed no median ({lines[-1].strip()}): build it from LiteRT, "
            f"whose statistics give p5, median and p95 ({LITERT.build})"
        )
    # "count=N curr=C(all same)": every run took C, and min, max and avg are not printed.
    mean_us = stats.get("avg", stats["curr"])
    return Timed(
        p50_ms=stats["median"] / 1000.0, p90_ms=stats["p95"] / 1000.0, p99_ms=stats.get("max", stats["curr"]) / 1000.0,
        mean_ms=mean_us / 1000.0, runs=int(stats["count"]),
        throughput_per_s=1e6 / mean_us if mean_us > 0 else None, stand_ins=_LITERT_STAND_INS,
    )


def parse_executor_runner(text: str, run: ToolRun, where: str) -> Timed:
    """The times of executor_runner's executions after the `run.warmup` first, by their number
    (a line read both from stdout and from logcat counts once)."""
    times = {int(m.group(1)): float(m.group(3)) for m in re.finditer(r"Iteration (\d+) of (\d+): " + _NUMBER + " ms", text)}
    kept = [ms for number, ms in sorted(times.items()) if number > run.warmup]
    if not kept:
        raise UserError(
            f"executor_runner on {where} printed no time per execution ({last_line(text) or 'no output'}): "
            f"build it from ExecuTorch 1.4 or later with logging on ({EXECUTORCH.build})"
        )
    # edgedistill.timing brings numpy, which the CLI should not load to print its help.
    from edgedistill.timing import summarise

    stats = summarise(kept)
    return Timed(
        p50_ms=stats.p50_ms, p90_ms=stats.p90_ms, p99_ms=stats.p99_ms, mean_ms=stats.mean_ms, runs=stats.runs,
        throughput_per_s=1000.0 / stats.mean_ms if stats.mean_ms > 0 else None,
    )


ONNXRUNTIME = AndroidTool(
    runtime="onnxruntime", binary="onnxruntime_perf_test", suffixes=(".onnx", ".ort"),
    label="onnxruntime (onnxruntime_perf_test)",
    build="onnxruntime's ./build.sh --android --android_abi arm64-v8a ...; a shared build also needs libonnxruntime.so",
    check="check that it was built for this phone's ABI with the execution provider asked (-e), and that "
    "libraries holds the libonnxruntime.so of a shared build",
    args=_perf_test_args, parse=parse_perf_test, provider=lambda run: ORT_PROVIDERS[run.provider],
    fresh=(_PERF_TEST_RESULT,),
)
LITERT = AndroidTool(
    runtime="litert", binary="benchmark_model", suffixes=(".tflite",), label="LiteRT (benchmark_model)",
    build="in google-ai-edge/LiteRT: bazel build -c opt --config=android_arm64 //tflite/tools/benchmark:benchmark_model",
    check="check that it was built for this phone's ABI and that the file uses only LiteRT's builtin operators",
    args=_benchmark_model_args, parse=parse_benchmark_model, provider=lambda run: "XNNPACK",
)
EXECUTORCH = AndroidTool(
    runtime="executorch", binary="executor_runner", suffixes=(".pte",), label="ExecuTorch (executor_runner)",
    build="in pytorch/executorch, at the release that made the .pte, as devtools/scripts/benchmark_android.sh does: "
    "cmake --preset android-arm64-v8a -DEXECUTORCH_BUILD_EXECUTOR_RUNNER=ON -DEXECUTORCH_BUILD_XNNPACK=ON ..., "
    "target executor_runner",
    check="check that it was built for this phone's ABI with XNNPACK, from the ExecuTorch release the .pte was made with",
    args=_executor_runner_args, parse=parse_executor_runner, provider=lambda run: "XNNPACK", logcat_tag="ExecuTorch",
)
# The one table of runtimes timed on a phone, by `--perf-test` key.
TOOLS: dict[str, AndroidTool] = {tool.runtime: tool for tool in (ONNXRUNTIME, LITERT, EXECUTORCH)}
# The runtime a bare `--perf-test PATH` names: it was the only one once.
DEFAULT = ONNXRUNTIME.runtime


def tool_for(path: Path) -> AndroidTool | None:
    """The tool that times files ending as `path` does; None where no tool times them."""
    return next((tool for tool in TOOLS.values() if Path(path).suffix in tool.suffixes), None)


def usage() -> str:
    """What each `--perf-test` value gives, for help texts."""
    return "; ".join(f"{tool.value('PATH')}: {tool.binary} ({', '.join(tool.suffixes)})" for tool in TOOLS.values())


@dataclass(frozen=True)
class PerfTests:
    """The Android binaries given with `--perf-test`: (runtime, path) pairs, at most one per runtime
    of `TOOLS`."""

    binaries: tuple[tuple[str, Path], ...] = ()

    def __post_init__(self) -> None:
        runtimes = [runtime for runtime, _ in self.binaries]
        unknown = [r for r in runtimes if r not in TOOLS]
        if unknown:
            raise UserError(f"--perf-test {unknown[0]}=PATH: {unknown[0]!r} is not a runtime: give {usage()}")
        twice = [r for r in TOOLS if runtimes.count(r) > 1]
        if twice:
            raise UserError(f"--perf-test gives two binaries for {twice[0]} ({TOOLS[twice[0]].flag}): give one")
        object.__setattr__(self, "binaries", tuple((runtime, Path(path)) for runtime, path in self.binaries))

    def binary(self, runtime: str) -> Path | None:
        """The binary given for `runtime`, or None."""
        return next((path for r, path in self.binaries if r == runtime), None)

    @property
    def suffixes(self) -> tuple[str, ...]:
        """The files the given binaries time."""
        return tuple(s for runtime, _ in self.binaries for s in TOOLS[runtime].suffixes)

    def idle(self, suffixes: Collection[str]) -> tuple[AndroidTool, Path] | None:
        """The first binary given (its tool and path) that times none of the files ending in
        `suffixes`; None when each times one."""
        return next(
            ((TOOLS[r], path) for r, path in self.binaries if not set(TOOLS[r].suffixes) & set(suffixes)), None
        )


def idle_text(tool: AndroidTool, path: Path) -> str:
    """The start of the error about a binary that times nothing: what was given and what it times."""
    return f"--perf-test {tool.value(path)} times {', '.join(tool.suffixes)} files"


def parse_perf_tests(values: Sequence[str]) -> PerfTests:
    """`--perf-test` values: `PATH` (onnxruntime_perf_test, as before other runtimes had one) or
    `RUNTIME=PATH`, each binary an existing file; one line on an unknown runtime, a second binary
    for one, or a missing file.

    A value is keyed when what comes before its first `=` is a plain name (letters, digits, `_`,
    `-`), so `./build=1/perf_test` is a bare path and `build=1/perf_test` a runtime `build`."""
    pairs = []
    for text in values:
        key, sep, rest = text.partition("=")
        runtime, path = (key, rest) if sep and re.fullmatch(r"[A-Za-z0-9_-]+", key) else (DEFAULT, text)
        if not path:
            raise UserError(f"--perf-test {text!r} names no file: give --perf-test [RUNTIME=]PATH ({usage()})")
        pairs.append((runtime, Path(path)))
    given = PerfTests(tuple(pairs))
    for runtime, path in given.binaries:
        if not path.is_file():
            tool = TOOLS[runtime]
            raise UserError(f"--perf-test {tool.value(path)}: {path} does not exist: build {tool.binary} for Android ({tool.build}) and pass its path")
    return given


def last_line(text: str) -> str:
    """The last line of `text` that is not blank, stripped."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
