"""Measure on a Linux device reached over SSH (a Raspberry Pi, a Jetson) with the system `ssh`.

An ONNX or .ort file is copied to the device and timed there by `bench_script.py`, sent to the
device's Python on standard input; the device needs python3, numpy and onnxruntime, and nothing
of edgedistill. A TensorRT engine (`.engine`) is timed with the device's `trtexec --loadEngine`,
whose `--exportTimes` JSON gives the percentiles.

Copies go through `ssh ... 'cat > file'` rather than scp: modern scp speaks SFTP, which needs
an sftp-server on the device that minimal images (dropbear, some Yocto builds) lack.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.errors import UserError
from edgedistill.targets.runners import bench_script
from edgedistill.targets.runners.base import Measurement, Reach, register_runner

# JetPack installs trtexec here, and not on PATH.
_JETPACK_TRTEXEC_DIR = "/usr/src/tensorrt/bin"
_SSH_FAILED = 255  # ssh's own exit status for a connection or authentication failure
_NOT_FOUND = 127  # the remote shell's status for a missing command


@register_runner("ssh")
@dataclass(frozen=True)
class SshRunner:
    """A device reached with the system `ssh` client, in batch mode (keys only, never a prompt).

    `options` are extra ssh options, e.g. ("-o", "StrictHostKeyChecking=accept-new");
    `providers` are onnxruntime execution providers in order of preference (a Jetson:
    ("CUDAExecutionProvider", "CPUExecutionProvider")). `timeout_s` bounds each remote command.
    """

    host: str
    user: str | None = None
    port: int = 22
    identity: Path | None = None
    python: str = "python3"
    workdir: str = "/tmp/edgedistill"
    threads: int = 0
    warmup: int = 10
    runs: int = 100
    throughput_batch: int = 8
    options: tuple[str, ...] = ()
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    connect_timeout_s: int = 10
    timeout_s: float = 600.0
    seq_len: int | None = None

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host) or self.host.startswith("-"):
            raise UserError(f"ssh runner: host {self.host!r} is not a host name or address")
        if not 1 <= self.port <= 65535:
            raise UserError(f"ssh runner: port {self.port} is out of range 1..65535")
        if self.threads < 0 or self.warmup < 0 or self.runs < 1 or self.throughput_batch < 1:
            raise UserError("ssh runner needs threads >= 0, warmup >= 0, runs >= 1 and throughput_batch >= 1")
        if not self.providers or self.connect_timeout_s < 1 or self.timeout_s <= 0:
            raise UserError("ssh runner needs at least one provider, connect_timeout_s >= 1 and timeout_s > 0")
        object.__setattr__(self, "options", tuple(self.options))
        object.__setattr__(self, "providers", tuple(self.providers))

    @classmethod
    def from_address(cls, address: str, **settings: object) -> SshRunner:
        """A runner for `[user@]host[:port]` (IPv6 as `[::1]:2222`); `settings` are the other fields."""
        user, host, port = parse_address(address)
        for name, value in (("host", host), ("user", user), ("port", port)):
            if value is not None and name in settings:
                raise UserError(f"ssh address {address!r} already gives the {name}: drop the {name} setting")
        fields: dict[str, object] = {"host": host, "user": user, "port": 22 if port is None else port}
        return cls(**{**fields, **settings})  # type: ignore[arg-type]

    @classmethod
    def accepts(cls, reach: Reach) -> tuple[str, ...]:
        """What the benchmark script times with onnxruntime, and TensorRT engines with trtexec."""
        return (".onnx", ".ort", ".engine")

    @classmethod
    def open(cls, reach: Reach) -> SshRunner:
        """The runner for the device at `reach.address` (`[user@]host[:port]`)."""
        if not reach.address:
            raise UserError("the ssh runner needs an address: pass --address NAME=[USER@]HOST[:PORT]")
        return cls.from_address(
            reach.address, threads=reach.threads, warmup=reach.warmup, runs=reach.runs,
            throughput_batch=reach.throughput_batch, seq_len=reach.seq_len, python=reach.python,
            identity=reach.identity, options=reach.options, workdir=reach.workdir,
        )

    @property
    def address(self) -> str:
        """`user@host:port`, as messages show it."""
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def measure(
        self,
        model_path: Path,
        target: str = "ssh",
        progress: Callable[[int, int], None] | None = None,
    ) -> Measurement:
        """Copy `model_path` to the device and time it there: batch-1 latency and batched throughput.

        `progress(done, total)` is called as the device reports timed runs (every ~5 %).
        """
        model_path = Path(model_path)
        if not model_path.is_file():
            raise UserError(f"{model_path} does not exist: check the path or export the model first")
        remote_model = self._upload(model_path)
        if model_path.suffix == ".engine":
            return self._measure_engine(remote_model, target)
        return self._measure_onnx(remote_model, target, progress)

    # -- ONNX / .ort with onnxruntime ------------------------------------------------------------

    def _measure_onnx(
        self, remote_model: str, target: str, progress: Callable[[int, int], None] | None
    ) -> Measurement:
        args = [
            self.python,
            "-",
            remote_model,
            f"--providers={','.join(self.providers)}",
            f"--threads={self.threads}",
            f"--warmup={self.warmup}",
            f"--runs={self.runs}",
            f"--throughput-batch={self.throughput_batch}",
            f"--seq-len={self.seq_len or 0}",
            f"--progress={max(1, self.runs // 20) if progress else 0}",
            f"--time-limit={self.timeout_s:g}",
        ]
        lines: list[str] = []

        def on_line(line: str) -> None:
            parts = line.split()
            if progress is not None and len(parts) == 3 and parts[0] == "progress":
                progress(int(parts[1]), int(parts[2]))
            else:
                lines.append(line)

        status, stderr = self._ssh(shlex.join(args), stdin=bench_script.script_text().encode(), on_line=on_line)
        if status != 0:
            raise self._remote_error(status, stderr, what="the benchmark")
        result = _last_json(lines)
        if result is None:
            raise UserError(
                f"the benchmark on {self.address} printed no result ({_last_line(stderr) or 'no output'}): "
                f"run `{self.python} -c 'import onnxruntime'` there to check its install"
            )
        try:
            return Measurement(
                target=target,
                source="measured",
                runner="ssh",
                runtime=str(result["runtime"]),
                provider=str(result["provider"]),
                threads=int(result["threads"]),
                device=str(result["device"]),
                batch=int(result.get("batch", 1)),
                runs=int(result["runs"]),
                p50_ms=float(result["p50_ms"]),
                p90_ms=float(result["p90_ms"]),
                p99_ms=float(result["p99_ms"]),
                throughput_batch=int(result.get("throughput_batch", self.throughput_batch)),
                throughput_per_s=float(result["throughput_per_s"]),
                seq_len=self.seq_len,
                load=None if result.get("load") is None else float(result["load"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"the benchmark on {self.address} printed a result without {exc}: "
                "the device runs another version of edgedistill's script; rerun"
            ) from exc

    # -- TensorRT engine with trtexec -------------------------------------------------------------

    def _measure_engine(self, remote_engine: str, target: str) -> Measurement:
        times = remote_engine + ".times.json"
        warmup_ms = 200  # trtexec's default warm-up; passed explicitly to drop those runs from the JSON
        trtexec = shlex.join(
            [
                "trtexec",
                f"--loadEngine={remote_engine}",
                f"--warmUp={warmup_ms}",
                f"--iterations={self.runs}",
                "--duration=0",
                f"--exportTimes={times}",
            ]
        )
        # `timeout` stops trtexec on the device too: a dropped connection does not signal it.
        limit = f"$(command -v timeout >/dev/null 2>&1 && echo timeout {int(self.timeout_s) + 1})"
        command = (
            f'PATH="$PATH:{_JETPACK_TRTEXEC_DIR}"; {limit} {trtexec} '
            f"&& echo {_TIMES_MARK} && cat {shlex.quote(times)}"
        )
        lines: list[str] = []
        status, stderr = self._ssh(command, on_line=lines.append)
        if status != 0:
            detail = _last_line("\n".join(lines)) if status != _NOT_FOUND else ""
            raise self._remote_error(status, stderr + ("\n" + detail if detail else ""), what="trtexec")
        return parse_trtexec("\n".join(lines), target=target, warmup_ms=warmup_ms, address=self.address)

    # -- ssh plumbing -----------------------------------------------------------------------------

    def _upload(self, local: Path) -> str:
        """Copy `local` into the work directory, named by its content (an unchanged file is not
        sent again); returns its remote path."""
        digest = hashlib.sha256(local.read_bytes()).hexdigest()[:16]
        remote = f"{self.workdir.rstrip('/')}/{digest}-{local.name}"
        q, qdir = shlex.quote(remote), shlex.quote(self.workdir)
        # Written to a temporary name and renamed, so an interrupted copy never looks finished.
        command = f"mkdir -p {qdir} && {{ test -s {q} || {{ cat > {q}.part && mv {q}.part {q}; }}; }}"
        status, stderr = self._ssh(command, stdin=local.read_bytes())
        if status != 0:
            raise self._remote_error(status, stderr, what=f"the copy of {local.name} to {self.workdir}")
        return remote

    def _ssh_argv(self, command: str) -> list[str]:
        argv = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout_s}",
            "-o",
            "ServerAliveInterval=15",
            "-p",
            str(self.port),
        ]
        if self.identity is not None:
            argv += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.user:
            argv += ["-l", self.user]
        return [*argv, *self.options, "--", self.host, command]

    def _ssh(
        self, command: str, stdin: bytes | None = None, on_line: Callable[[str], None] | None = None
    ) -> tuple[int, str]:
        """Run `command` on the device: (exit status, stderr). Stdout goes line by line to `on_line`."""
        argv = self._ssh_argv(command)
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                )
            except FileNotFoundError as exc:
                raise UserError("no `ssh` client here: install OpenSSH (apt-get install openssh-client)") from exc
            timed_out = threading.Event()

            def kill() -> None:
                timed_out.set()
                proc.kill()

            # The remote side stops itself after timeout_s; this also covers connecting and copying.
            timer = threading.Timer(self.timeout_s + self.connect_timeout_s, kill)
            timer.start()
            try:
                if stdin is not None:
                    feeder = threading.Thread(target=_feed_stdin, args=(proc, stdin), daemon=True)
                    feeder.start()
                assert proc.stdout is not None
                for raw in proc.stdout:
                    if on_line is not None:
                        on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
                status = proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
        if timed_out.is_set():
            raise UserError(
                f"{self.address} did not finish within {self.timeout_s + self.connect_timeout_s:g} s: "
                "raise timeout_s, lower runs, "
                "or check that the device is not overloaded"
            )
        return status, stderr

    def _remote_error(self, status: int, stderr: str, what: str) -> UserError:
        """One line naming the device and the fix, from ssh's exit status and its stderr."""
        detail = _last_line(stderr) or f"exit status {status}"
        where = self.address
        if status == _SSH_FAILED:
            text = stderr.lower()
            if "permission denied" in text or "too many authentication failures" in text:
                key = f" -i {self.identity}" if self.identity else ""
                return UserError(
                    f"{where} refused the key ({detail}): install your public key there "
                    f"(ssh-copy-id{key} -p {self.port} {self.user + '@' if self.user else ''}{self.host}) "
                    "or set identity"
                )
            if "host key verification failed" in text or "remote host identification has changed" in text:
                return UserError(
                    f"{where}: host key verification failed: connect once with "
                    f"`ssh -p {self.port} {self.host}` to accept its key, or pass "
                    "options=('-o', 'StrictHostKeyChecking=accept-new')"
                )
            if any(
                s in text for s in ("could not resolve", "name or service not known", "temporary failure in name")
            ):
                return UserError(
                    f"cannot resolve {self.host} ({detail}): check the device's name or use its IP address"
                )
            if any(
                s in text
                for s in (
                    "connection refused",
                    "timed out",
                    "no route to host",
                    "network is unreachable",
                    "connection closed",
                    "connection reset",
                )
            ):
                return UserError(
                    f"cannot reach {where} ({detail}): check that the device is on, on the network, and "
                    "runs an SSH server on that port"
                )
            return UserError(f"ssh to {where} failed ({detail}): try `ssh -p {self.port} {self.host}` by hand")
        if status == _NOT_FOUND:
            return UserError(
                f"{what} could not start on {where} ({detail}): install it there "
                f"(python3 with `pip install numpy onnxruntime`; trtexec comes with JetPack) or set python"
            )
        if status == bench_script.EXIT_TIME_LIMIT or (what == "trtexec" and status == 124):
            return UserError(
                f"{what} on {where} did not finish within {self.timeout_s:g} s: raise timeout_s or lower runs"
            )
        if status == bench_script.EXIT_MISSING_PACKAGE:
            return UserError(
                f"{where}: {detail.removeprefix('edgedistill-bench: ')}: run "
                f"`{self.python} -m pip install numpy onnxruntime` on the device"
            )
        if status == bench_script.EXIT_NO_PROVIDER:
            return UserError(f"{where}: {detail.removeprefix('edgedistill-bench: ')}: set providers to one it has")
        if status == bench_script.EXIT_BAD_MODEL:
            return UserError(
                f"{where}: {detail.removeprefix('edgedistill-bench: ')}: re-export the model "
                "with a fixed input size and a supported input type"
            )
        return UserError(f"{what} failed on {where} ({detail}): run it there by hand to see the whole error")


def parse_address(address: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` -> (user, host, port); an IPv6 host goes in brackets: `[fe80::1]:22`."""
    match = re.fullmatch(
        r"(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[^\]\s]+)\]|(?P<host>[^@:\s\[\]]+))(?::(?P<port>\d+))?",
        address.strip(),
    )
    if match is None:
        raise UserError(f"ssh address {address!r} is not [user@]host[:port]: e.g. pi@raspberrypi.local:22")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise UserError(f"ssh address {address!r}: port {port} is out of range 1..65535")
    return match["user"], match["v6"] or match["host"], port


# -- trtexec output ---------------------------------------------------------------------------------

_TIMES_MARK = "edgedistill-times-json"
_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"


def parse_trtexec(output: str, target: str, warmup_ms: float, address: str = "the device") -> Measurement:
    """A Measurement from trtexec's log followed by `_TIMES_MARK` and its `--exportTimes` JSON.

    The JSON holds one record per inference, warm-up included, with `startComputeMs` counted from
    the start of the run and `latencyMs` = H2D + compute + D2H (TensorRT's
    samples/common/sampleReporting.cpp, exportJSONTrace); trtexec itself drops the records that
    start computing before `warmup_ms`, and so does this. Throughput is the summary's
    `Throughput: X qps` line, else the records' count over their wall time.
    """
    log, _, times_text = output.partition(_TIMES_MARK)
    try:
        records = json.loads(times_text) if times_text.strip() else []
    except json.JSONDecodeError as exc:
        raise UserError(f"trtexec on {address} wrote an unreadable --exportTimes file ({exc}): rerun") from exc
    timed = [r for r in records if isinstance(r, dict) and float(r.get("startComputeMs", 0.0)) >= warmup_ms]
    timed = timed or [r for r in records if isinstance(r, dict)]
    latencies = [float(r["latencyMs"]) for r in timed if "latencyMs" in r]
    if not latencies:
        raise UserError(
            f"trtexec on {address} reported no timed inference ({_last_line(log) or 'no output'}): "
            "run the engine's trtexec command there by hand"
        )
    p50, p90, p99 = (float(v) for v in np.percentile(latencies, [50, 90, 99]))
    qps = re.search(r"Throughput:\s*" + _NUMBER + r"\s*qps", log)
    if qps:
        throughput = float(qps.group(1))
    else:
        span = float(timed[-1].get("endD2hMs", 0.0)) - float(timed[0].get("startH2dMs", 0.0))
        throughput = len(timed) * 1000.0 / span if span > 0 else 1000.0 / p50
    version = re.search(r"TensorRT version:\s*([0-9][0-9.]*)", log)
    device = re.search(r"(?:Selected Device|Device):\s*(.+)", log)
    return Measurement(
        target=target,
        source="measured",
        runner="ssh",
        runtime=f"tensorrt {version.group(1)}" if version else "tensorrt",
        provider="TensorRT engine (trtexec)",
        threads=0,
        device=device.group(1).strip() if device else "NVIDIA GPU",
        batch=1,
        runs=len(latencies),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        throughput_batch=1,
        throughput_per_s=throughput,
    )


def _feed_stdin(proc: subprocess.Popen, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # the remote command ended without reading it all; its status says why


def _last_json(lines: Sequence[str]) -> dict | None:
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _last_line(text: str) -> str:
    """The last non-empty line, without ssh's warnings about known hosts."""
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently added")
    ]
    return lines[-1] if lines else ""
