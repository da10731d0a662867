"""Measure on an Android phone over adb with the user's own `onnxruntime_perf_test` build.

onnxruntime publishes no perf_test binary for Android: build it with onnxruntime's
`build.sh --android ... --build_shared_lib` (or a static build) and pass its path; a shared build
also needs `libonnxruntime.so`, passed in `libraries`, which go beside the binary on the phone.

The command line and the output read here come from onnxruntime's sources
(onnxruntime/test/perftest/):
- command_args_parser.cc: `perf_test [options...] model_path [result_file]`; `-m times` with
  `-r N` repeats N times; `-x N` intra-op threads (0 = onnxruntime's default); `-e` the provider
  (cpu, nnapi, xnnpack, qnn, ...); `-I` generates the inputs (free dimensions, the batch
  included, become 1); `-s` prints the percentiles even when a result file is given. Both the
  getopt parser and the Abseil-flags parser that replaced it accept these single-dash forms.
- performance_runner.cc: `Run()` prints "Total inference requests: N", "Average inference time
  cost: X ms" and "Number of inferences per second: X"; `PerformanceResult::DumpToFile` prints
  "P50 Latency: X s", "P90 Latency: X s", "P99 Latency: X s" (in seconds, the element at
  index int(n * p) of the sorted times) and appends one CSV row per run to the result file.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.targets.runners.base import Measurement, Reach, register_runner

# perf_test's -e names -> the execution provider names onnxruntime reports.
_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "snpe": "SNPEExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
}
_BINARY = "onnxruntime_perf_test"
_RESULT_FILE = "perf_test_result.csv"
_STATUS_MARK = "edgedistill-status="
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


@register_runner("adb")
@dataclass(frozen=True, kw_only=True)
class AdbRunner:
    """An Android device reached with `adb`; `serial` None means the only device attached.

    `perf_test` is an onnxruntime_perf_test built for the phone's ABI; `libraries` are shared
    libraries it needs (libonnxruntime.so of a shared build). `provider` is perf_test's `-e` name.
    """

    perf_test: Path
    serial: str | None = None
    workdir: str = "/data/local/tmp/edgedistill"
    threads: int = 0
    runs: int = 100
    provider: str = "cpu"
    libraries: tuple[Path, ...] = ()
    timeout_s: float = 600.0

    accepts: ClassVar[tuple[str, ...]] = (".onnx", ".ort")

    def __post_init__(self) -> None:
        if self.threads < 0 or self.runs < 1 or self.timeout_s <= 0:
            raise UserError("adb runner needs threads >= 0, runs >= 1 and timeout_s > 0")
        if self.provider not in _PROVIDERS:
            raise UserError(
                f"adb runner: provider {self.provider!r} is unknown: use one of {', '.join(_PROVIDERS)}"
            )
        object.__setattr__(self, "perf_test", Path(self.perf_test))
        object.__setattr__(self, "libraries", tuple(Path(p) for p in self.libraries))

    @classmethod
    def open(cls, reach: Reach) -> AdbRunner:
        """The runner for the phone with serial `reach.address` ("" or None: the only one attached)."""
        if reach.perf_test is None:
            raise UserError("measuring over adb needs onnxruntime_perf_test built for Android: pass --perf-test PATH")
        return cls(perf_test=reach.perf_test, serial=reach.address or None, threads=reach.threads, runs=reach.runs)

    @property
    def device_label(self) -> str:
        return f"device {self.serial}" if self.serial else "the Android device"

    def measure(
        self,
        model_path: Path,
        target: str = "android",
        progress: Callable[[int, int], None] | None = None,
    ) -> Measurement:
        """Push the model and perf_test, run it `runs` times on the phone, read its percentiles.

        perf_test reports no progress while it runs: `progress` is called once, at the end.
        """
        model_path = Path(model_path)
        if not model_path.is_file():
            raise UserError(f"{model_path} does not exist: check the path or export the model first")
        for binary in (self.perf_test, *self.libraries):
            if not binary.is_file():
                raise UserError(
                    f"{binary} does not exist: build onnxruntime_perf_test for Android "
                    "(onnxruntime's build.sh --android) and pass its path"
                )
        self._check_device()
        wd = self.workdir.rstrip("/")
        self._adb(["shell", f"mkdir -p {shlex.quote(wd)}"], what="creating the work directory")
        remote_model = f"{wd}/{model_path.name}"
        self._adb(["push", str(model_path), remote_model], what=f"pushing {model_path.name}")
        self._adb(["push", str(self.perf_test), f"{wd}/{_BINARY}"], what="pushing onnxruntime_perf_test")
        for lib in self.libraries:
            self._adb(["push", str(lib), f"{wd}/{lib.name}"], what=f"pushing {lib.name}")
        out = self._adb(["shell", self.shell_command(remote_model)], what="onnxruntime_perf_test")
        status = re.search(re.escape(_STATUS_MARK) + r"(\d+)", out)
        if status is None or status.group(1) != "0":
            detail = _last_line(out.split(_STATUS_MARK)[0]) or "no output"
            raise UserError(
                f"onnxruntime_perf_test failed on {self.device_label} ({detail}): check that it was built "
                f"for this phone's ABI with the '{self.provider}' provider, and that libraries holds the "
                "libonnxruntime.so it needs"
            )
        stats = parse_perf_test_output(out, where=self.device_label)
        if progress is not None:
            progress(self.runs, self.runs)
        return Measurement(
            target=target,
            source="measured",
            runner="adb",
            runtime="onnxruntime (onnxruntime_perf_test)",
            provider=_PROVIDERS[self.provider],
            threads=self.threads,
            device=self._device_name(),
            batch=1,
            runs=int(stats.get("runs", self.runs)),
            p50_ms=stats["p50_ms"],
            p90_ms=stats["p90_ms"],
            p99_ms=stats["p99_ms"],
            throughput_batch=1,
            throughput_per_s=stats.get("throughput_per_s", 1000.0 / stats["mean_ms"]),
        )

    def perf_test_args(self, remote_model: str) -> list[str]:
        """perf_test's argument list (see the module docstring for each flag's source)."""
        wd = self.workdir.rstrip("/")
        return [
            f"{wd}/{_BINARY}",
            "-m",
            "times",
            "-r",
            str(self.runs),
            "-x",
            str(self.threads),
            "-e",
            self.provider,
            "-I",
            "-s",
            remote_model,
            f"{wd}/{_RESULT_FILE}",
        ]

    def shell_command(self, remote_model: str) -> str:
        """The one `adb shell` line: libraries beside the binary, a fresh result file (perf_test
        appends to it), and the exit status echoed (old adb does not pass it back)."""
        wd = shlex.quote(self.workdir.rstrip("/"))
        return (
            f"cd {wd} && chmod 755 {_BINARY} && rm -f {_RESULT_FILE} && "
            f"LD_LIBRARY_PATH={wd}:$LD_LIBRARY_PATH {shlex.join(self.perf_test_args(remote_model))} 2>&1; "
            f"echo {_STATUS_MARK}$?"
        )

    def _serial_args(self) -> list[str]:
        return ["-s", self.serial] if self.serial else []

    def _check_device(self) -> None:
        if shutil.which("adb") is None:
            raise UserError("no `adb` here: install Android's platform tools (apt-get install adb)")
        proc = self._run(["get-state"])
        state = proc.stdout.strip()
        if proc.returncode == 0 and state == "device":
            return
        text = (proc.stderr + proc.stdout).lower()
        detail = _last_line(proc.stderr) or state or f"exit status {proc.returncode}"
        if "more than one" in text:
            raise UserError(f"adb sees more than one device ({detail}): set serial to one of `adb devices`")
        if "unauthorized" in text:
            raise UserError(
                f"{self.device_label} has not authorized this computer ({detail}): accept the USB "
                "debugging prompt on the phone"
            )
        if "not found" in text or "no devices" in text or "offline" in text:
            raise UserError(
                f"{self.device_label} is not attached ({detail}): connect it with USB debugging on "
                "and check `adb devices`"
            )
        raise UserError(f"adb cannot use {self.device_label} ({detail}): check `adb devices`")

    def _device_name(self) -> str:
        parts = []
        for prop in ("ro.product.manufacturer", "ro.product.model", "ro.soc.model"):
            proc = self._run(["shell", f"getprop {prop}"])
            value = proc.stdout.strip() if proc.returncode == 0 else ""
            if value and value not in parts:
                parts.append(value)
        return " ".join(parts) or "Android device"

    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                ["adb", *self._serial_args(), *args],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise UserError("no `adb` here: install Android's platform tools (apt-get install adb)") from exc
        except subprocess.TimeoutExpired as exc:
            raise UserError(
                f"adb on {self.device_label} did not finish within {self.timeout_s:g} s: raise timeout_s or "
                "lower runs"
            ) from exc

    def _adb(self, args: list[str], what: str) -> str:
        proc = self._run(args)
        if proc.returncode != 0 and not (args[0] == "shell" and _STATUS_MARK in proc.stdout):
            detail = _last_line(proc.stderr) or _last_line(proc.stdout) or f"exit status {proc.returncode}"
            raise UserError(f"{what} failed on {self.device_label} ({detail}): check `adb devices` and free space")
        return proc.stdout


def parse_perf_test_output(text: str, where: str = "the device") -> dict[str, float]:
    """p50_ms, p90_ms, p99_ms, mean_ms and, where printed, runs and throughput_per_s, from
    onnxruntime_perf_test's stdout (formats: see the module docstring)."""

    def number(label: str) -> float | None:
        match = re.search(r"^\s*" + re.escape(label) + r":\s*" + _NUMBER, text, re.MULTILINE)
        return float(match.group(1)) if match else None

    p50, p90, p99 = number("P50 Latency"), number("P90 Latency"), number("P99 Latency")
    if p50 is None or p90 is None or p99 is None:
        raise UserError(
            f"onnxruntime_perf_test on {where} printed no P50/P90/P99 latency "
            f"({_last_line(text) or 'no output'}): "
            "build onnxruntime_perf_test from a recent onnxruntime release"
        )
    mean_ms = number("Average inference time cost")
    stats = {"p50_ms": p50 * 1000.0, "p90_ms": p90 * 1000.0, "p99_ms": p99 * 1000.0}
    stats["mean_ms"] = mean_ms if mean_ms is not None else stats["p50_ms"]
    runs = number("Total inference requests")
    if runs is not None:
        stats["runs"] = runs
    per_s = number("Number of inferences per second")
    if per_s is not None and per_s > 0:
        stats["throughput_per_s"] = per_s
    return stats


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
