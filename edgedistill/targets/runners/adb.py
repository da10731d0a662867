"""Measure on an Android phone over adb with the user's own Android builds of each runtime's timing
binary: onnxruntime_perf_test for `.onnx`/`.ort`, LiteRT's benchmark_model for `.tflite`,
ExecuTorch's executor_runner (with XNNPACK) for `.pte`.

None of them is published for Android: the user builds each and passes it with `--perf-test`
(`edgedistill.targets.android_tools` holds the table of tools: their command lines, how their
output is read and the sources each format was read from). A shared onnxruntime build also needs
`libonnxruntime.so`, passed in `libraries`, which go beside the binary on the phone. The runner
accepts only the files of the binaries it was given, so a file of another runtime is predicted;
with none given it accepts those of a bare `--perf-test`, so that measuring one says what to pass.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.targets.android_tools import (
    DEFAULT, ORT_PROVIDERS, TOOLS, AndroidTool, PerfTests, ToolRun, last_line, tool_for,
)
from edgedistill.targets.runners.base import Measurement, Reach, register_runner
from edgedistill.timing import MIN_TIME_S

_STATUS_MARK = "edgedistill-status="


@register_runner("adb")
@dataclass(frozen=True, kw_only=True)
class AdbRunner:
    """An Android device reached with `adb`; `serial` None means the only device attached.

    `perf_test` holds the timing binaries, built for the phone's ABI, by runtime; `libraries` are
    shared libraries they need (libonnxruntime.so of a shared build). `provider` is
    onnxruntime_perf_test's `-e` name (LiteRT and ExecuTorch run XNNPACK). `warmup` untimed runs
    precede the timed ones where the tool takes a count (onnxruntime_perf_test makes one of its own;
    benchmark_model also warms up for its default half second).
    """

    perf_test: PerfTests = PerfTests()
    serial: str | None = None
    workdir: str = "/data/local/tmp/edgedistill"
    threads: int = 0
    warmup: int = 10
    runs: int = 100
    provider: str = "cpu"
    libraries: tuple[Path, ...] = ()
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.threads < 0 or self.warmup < 0 or self.runs < 1 or self.timeout_s <= 0:
            raise UserError("adb runner needs threads >= 0, warmup >= 0, runs >= 1 and timeout_s > 0")
        if self.provider not in ORT_PROVIDERS:
            raise UserError(
                f"adb runner: provider {self.provider!r} is unknown: use one of {', '.join(ORT_PROVIDERS)}"
            )
        object.__setattr__(self, "libraries", tuple(Path(p) for p in self.libraries))

    @classmethod
    def accepts(cls, reach: Reach) -> tuple[str, ...]:
        """The files the binaries in `reach` time. With none given, those of a bare `--perf-test`,
        so that measuring such a file says what to pass rather than predicting it unasked."""
        return reach.perf_test.suffixes or TOOLS[DEFAULT].suffixes

    @classmethod
    def open(cls, reach: Reach) -> AdbRunner:
        """The runner for the phone with serial `reach.address` ("" or None: the only one attached)."""
        return cls(
            perf_test=reach.perf_test, serial=reach.address or None, threads=reach.threads, warmup=reach.warmup,
            runs=reach.runs,
        )

    @property
    def device_label(self) -> str:
        return f"device {self.serial}" if self.serial else "the Android device"

    def measure(
        self,
        model_path: Path,
        target: str = "android",
        progress: Callable[[int, int], None] | None = None,
    ) -> Measurement:
        """Push the model and its runtime's binary, time it `runs` times on the phone, read the figures.

        The binaries report no progress while they run: `progress` is called once, at the end.
        """
        model_path = Path(model_path)
        if not model_path.is_file():
            raise UserError(f"{model_path} does not exist: check the path or export the model first")
        tool, binary = self._tool(model_path)
        for path in (binary, *self.libraries):
            if not path.is_file():
                raise UserError(f"{path} does not exist: build {tool.binary} for Android ({tool.build}) and pass its path")
        self._check_device()
        run = self.tool_run(tool, self._push(tool, binary, model_path))
        out = self._adb(["shell", self.shell_command(tool, run)], what=tool.binary)
        status = re.search(re.escape(_STATUS_MARK) + r"(\d+)", out)
        if status is None or status.group(1) != "0":
            detail = last_line(out.split(_STATUS_MARK)[0]) or "no output"
            raise UserError(f"{tool.binary} failed on {self.device_label} ({detail}): {tool.check}")
        timed = tool.parse(out, run, self.device_label)
        if progress is not None:
            progress(self.runs, self.runs)
        return Measurement(
            target=target, source="measured", runner="adb", runtime=tool.label, provider=tool.provider(run),
            threads=self.threads, device=self._device_name(), batch=1, runs=timed.runs or self.runs,
            p50_ms=timed.p50_ms, p90_ms=timed.p90_ms, p99_ms=timed.p99_ms, throughput_batch=1,
            throughput_per_s=timed.throughput_per_s or 1000.0 / timed.mean_ms, stand_ins=timed.stand_ins,
        )

    def tool_run(self, tool: AndroidTool, remote_model: str) -> ToolRun:
        """The timing asked of `tool` on the model at `remote_model` on the phone."""
        wd = self.workdir.rstrip("/")
        return ToolRun(
            binary=f"{wd}/{tool.binary}", model=remote_model, workdir=wd, threads=self.threads, warmup=self.warmup,
            runs=self.runs, min_time_s=MIN_TIME_S, provider=self.provider,
        )

    def shell_command(self, tool: AndroidTool, run: ToolRun) -> str:
        """The one `adb shell` line: libraries beside the binary, fresh files for those it appends
        to, and the exit status echoed (old adb does not pass it back). A tool that logs to logcat
        runs in the background so that its process id picks its lines out of the log."""
        wd = shlex.quote(run.workdir)
        prepare = f"cd {wd} && chmod 755 {tool.binary}" + (f" && rm -f {shlex.join(tool.fresh)}" if tool.fresh else "")
        command = f"LD_LIBRARY_PATH={wd}:$LD_LIBRARY_PATH {shlex.join(tool.args(run))} 2>&1"
        if tool.logcat_tag is None:
            return f"{prepare} && {command}; echo {_STATUS_MARK}$?"
        return (
            f"{prepare} || exit 1; {command} & pid=$!; wait $pid; status=$?; "
            f"logcat -d --pid=$pid -s {tool.logcat_tag}:I; echo {_STATUS_MARK}$status"
        )

    def _tool(self, model_path: Path) -> tuple[AndroidTool, Path]:
        """The tool that times `model_path` and the binary given for it."""
        tool = tool_for(model_path)
        if tool is None:
            known = ", ".join(s for t in TOOLS.values() for s in t.suffixes)
            raise UserError(f"{model_path.name}: the adb runner times {known} files: give one of those")
        binary = self.perf_test.binary(tool.runtime)
        if binary is None:
            raise UserError(
                f"timing {model_path.name} over adb needs {tool.binary} built for Android: pass {tool.flag} ({tool.build})"
            )
        return tool, binary

    def _push(self, tool: AndroidTool, binary: Path, model_path: Path) -> str:
        """Copy the model, the binary (under its tool's name) and the libraries to the work
        directory; the model's path there."""
        wd = self.workdir.rstrip("/")
        self._adb(["shell", f"mkdir -p {shlex.quote(wd)}"], what="creating the work directory")
        remote_model = f"{wd}/{model_path.name}"
        self._adb(["push", str(model_path), remote_model], what=f"pushing {model_path.name}")
        self._adb(["push", str(binary), f"{wd}/{tool.binary}"], what=f"pushing {tool.binary}")
        for lib in self.libraries:
            self._adb(["push", str(lib), f"{wd}/{lib.name}"], what=f"pushing {lib.name}")
        return remote_model

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
        detail = last_line(proc.stderr) or state or f"exit status {proc.returncode}"
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
            detail = last_line(proc.stderr) or last_line(proc.stdout) or f"exit status {proc.returncode}"
            raise UserError(f"{what} failed on {self.device_label} ({detail}): check `adb devices` and free space")
        return proc.stdout
