"""The query-only teacher: a model behind a command that may only be asked, where each question costs.

edgedistill starts the command (``teacher.command``), sends it batches of inputs on its stdin and
reads the teacher's outputs from its stdout. Every answer is stored the moment it arrives, keyed by
the content of its input, so no input is ever asked twice (not within one call, not across reruns),
and a ledger holds the number of queries used so that ``max_queries`` is never exceeded.

Protocol ``edgedistill.query/1`` (docs/query-protocol.md has it in full, with a worked example):

1. edgedistill starts the command once per `query_teacher` call, with binary pipes on stdin and
   stdout; stderr is for the client's logs (edgedistill keeps its tail for error messages).
2. Handshake. edgedistill writes one JSON line::

       {"protocol": "edgedistill.query/1", "input_shape": [1, 8, 8], "input_dtype": "float32", "max_batch": 256}

   ``input_shape`` is the shape of one input (no batch axis). The client answers one JSON line:
   ``{"protocol": "edgedistill.query/1", "outputs": C}`` with C the number of outputs per input,
   or ``{"error": "why it cannot serve"}``. Unknown keys are ignored on both sides.
3. Requests. A frame is an 8-byte little-endian unsigned length, then that many bytes of a .npy
   file (numpy.lib.format, no pickles). A request holds a (B, *input_shape) array, B <= max_batch;
   the response is one frame holding a (B, C) float array of finite values, row i answering input i.
4. End. edgedistill closes the client's stdin; the client exits with status 0.

The client writes nothing but the handshake line and frames to stdout. `serve` implements the
client's half, so a client is a few lines around the user's model.

Budget accounting: a query is one input sent. It is counted as used when it is *sent*, and the
count is written to the ledger (atomically, synced) *before* the request leaves, so a crash between
sending and answering can never let a rerun exceed the budget: such queries count as spent even
though their answers never arrived.
"""


from __future__ import annotations

import hashlib
import json
import os
import select
import shlex
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgedistill.errors import UserError
from edgedistill.fileio import atomic_path
from edgedistill.query.protocol import LENGTH, PROTOCOL, decode_payload, encode_frame

_CHUNK = 1 << 20  # bytes per pipe read or write
_STDERR_TAIL = 8192  # bytes of the command's stderr kept for error messages
_MAX_LINE = 1 << 16  # a handshake answer longer than this is not one
_EXIT_GRACE_S = 5.0  # after stdin closes, how long the command may take to exit by itself
_ASK_AGAIN = "delete the file and rerun to ask for its inputs again"
LEDGER = "ledger.json"


class QueryTeacherConfig(BaseModel):
    """A teacher that is a command answering queries over the `edgedistill.query/1` protocol."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: tuple[str, ...] = Field(min_length=1, description='The client command, e.g. ["python", "my_client.py"].')
    max_queries: int = Field(ge=1, description="Most inputs ever sent to the command, over all runs of this run directory.")
    batch_size: int = Field(256, ge=1, description="Most inputs per request.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds the command may take to answer one request.")
    startup_timeout_s: float = Field(
        300.0, gt=0, description="Seconds the command may take to start and answer the handshake (loading a model)."
    )
    cwd: str | None = Field(None, description="Working directory of the command (relative to the config's folder).")


@dataclass(frozen=True)
class QueryResult:
    """The teacher's outputs for the inputs of one `query_teacher` call."""

    outputs: np.ndarray  # (N, C) float32, aligned with the inputs; rows not answered are NaN
    answered: np.ndarray  # (N,) bool
    sent_now: int  # queries sent in this call
    used_total: int  # queries used by this cache over all calls and runs (<= max_queries)
    stopped_by_budget: bool  # some inputs were left unanswered because the budget ran out
    message: str  # one line for the report or the progress display


# --- the store of answers -----------------------------------------------------------------------


def input_keys(x: np.ndarray) -> list[str]:
    """The content key of each input: sha256 of its dtype, shape and bytes, as hex."""
    base = hashlib.sha256(f"{x.dtype.str}{x.shape[1:]}".encode())
    keys = []
    for row in np.ascontiguousarray(x):
        h = base.copy()
        h.update(row.tobytes())
        keys.append(h.hexdigest())
    return keys


class _Cache:
    """Answers kept in `folder`: one `batch-*.npz` (keys, outputs) per answered request, and the
    ledger (queries used, outputs per input). Files are written whole or not at all."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used, self.outputs = self._read_ledger()
        self.rows: dict[str, int] = {}  # key -> row of the answer table
        self._parts: list[np.ndarray] = []
        self._size = 0  # rows in _parts
        for path in sorted(folder.glob("batch-*.npz")):  # temp files start with "." and are skipped
            self._load(path)
        # A lost ledger cannot have counted fewer queries than there are answers.
        self.used = max(self.used, len(self.rows))

    def table(self) -> np.ndarray:
        """Every stored answer, one row per key in `rows`."""
        if not self._parts:
            return np.empty((0, self.outputs or 0), np.float32)
        return np.concatenate(self._parts)

    def expect_outputs(self, outputs: int, command: str) -> None:
        """Record the command's outputs per input; answers of another width cannot be mixed in."""
        if self.outputs is not None and self.outputs != outputs:
            raise UserError(
                f"the teacher command {command} answers {outputs} outputs per input, but the answers stored in "
                f"{self.folder} have {self.outputs}: the teacher changed, so use a new run directory (or delete that "
                "folder, which also resets its count of queries used)"
            )
        self.outputs = outputs

    def spend(self, n: int) -> None:
        """Count `n` queries as used, on disk, before they are sent."""
        self.used += n
        ledger = {"protocol": PROTOCOL, "queries_used": self.used, "outputs": self.outputs}
        _write_synced(self.folder / LEDGER, lambda f: f.write(json.dumps(ledger).encode() + b"\n"))

    def store(self, keys: list[str], outputs: np.ndarray) -> None:
        """Keep one request's answers: on disk first, then in memory."""
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:20]
        _write_synced(self.folder / f"batch-{name}.npz", lambda f: np.savez(f, keys=np.array(keys), outputs=outputs))
        self._add(keys, outputs)

    def _add(self, keys: list[str], outputs: np.ndarray) -> None:
        for i, key in enumerate(keys):
            self.rows.setdefault(key, self._size + i)
        self._parts.append(outputs)
        self._size += len(outputs)

    def _load(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys, outputs = [str(k) for k in npz["keys"]], npz["outputs"].astype(np.float32)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(f"stored answers {path} are damaged ({exc}): {_ASK_AGAIN}") from exc
        if outputs.ndim != 2 or len(outputs) != len(keys):
            raise UserError(f"stored answers {path} are damaged (shape {outputs.shape}): {_ASK_AGAIN}")
        if self.outputs is None:
            self.outputs = outputs.shape[1]
        if outputs.shape[1] != self.outputs:
            raise UserError(
                f"stored answers in {self.folder} disagree on outputs per input ({self.outputs} vs {outputs.shape[1]} in "
                f"{path.name}): use a new run directory (or delete that folder, which also resets its count of queries used)"
            )
        self._add(keys, outputs)

    def _read_ledger(self) -> tuple[int, int | None]:
        path = self.folder / LEDGER
        if not path.exists():
            return 0, None
        try:
            ledger = json.loads(path.read_text())
            used, outputs = int(ledger["queries_used"]), ledger["outputs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"the query ledger {path} is damaged ({exc}): restore it, or delete it to count only the stored "
                "answers as used"
            ) from exc
        return used, outputs


def _write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` atomically and flush it to the disk, so a crash cannot undo a counted query."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


# --- the command --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Deadline:
    """When one exchange with the command must be over, and how to word it when it is not."""

    at: float  # time.monotonic() value
    what: str  # the exchange, e.g. "request 3 (256 inputs)"
    seconds: float
    setting: str  # the config field that sets `seconds`

    @classmethod
    def after(cls, seconds: float, what: str, setting: str) -> _Deadline:
        return cls(time.monotonic() + seconds, what, seconds, setting)


class _Command:
    """The running client: the protocol's server half with deadlines, and the child's clean end.

    All pipe I/O is non-blocking behind select(), which also drains stderr into a bounded tail, so
    a chatty client never blocks on a full stderr pipe and a silent one times out.
    """

    def __init__(self, cfg: QueryTeacherConfig, cwd: Path) -> None:
        self.cfg = cfg
        self.text = shlex.join(cfg.command)
        self.outputs = 0
        self._out = bytearray()  # stdout bytes read but not yet consumed
        self._err = bytearray()  # the tail of stderr
        self._err_open = True
        self.proc = self._start(cwd)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)

    def __enter__(self) -> _Command:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(graceful=exc_type is None)

    def handshake(self, input_shape: tuple[int, ...], dtype: np.dtype) -> int:
        """Send the header, check the answer, and return the outputs per input."""
        deadline = _Deadline.after(self.cfg.startup_timeout_s, "the handshake", "teacher.startup_timeout_s")
        header = {"protocol": PROTOCOL, "input_shape": list(input_shape), "input_dtype": dtype.name}
        header["max_batch"] = self.cfg.batch_size
        self._send(json.dumps(header).encode() + b"\n", deadline)
        self.outputs = self._parse_handshake(self._read_line(deadline))
        return self.outputs

    def ask(self, x: np.ndarray, number: int) -> np.ndarray:
        """Send one request and return its validated (B, C) float32 answer."""
        deadline = _Deadline.after(self.cfg.timeout_s, f"request {number} ({len(x)} inputs)", "teacher.timeout_s")
        self._send(encode_frame(x), deadline)
        (length,) = LENGTH.unpack(self._read(LENGTH.size, deadline))
        # A (B, C) float array is at most 8 bytes a value plus a small header; more means the
        # client wrote something other than frames to stdout.
        if length > len(x) * self.outputs * 8 + 4096:
            raise self._error(
                f"answered {deadline.what} with a frame of {length:,} bytes, too long for ({len(x)}, {self.outputs}) "
                "floats: it must write nothing but protocol frames to stdout (log to stderr)"
            )
        return self._check_answer(self._read(length, deadline), len(x), deadline.what)

    def close(self, graceful: bool) -> None:
        """End the child: close its stdin (the protocol's end) and, when all went well, let it exit
        by itself for a moment; then stop its whole process group and reap it."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass  # a child that is gone already cannot read the end anyway
        if graceful:
            try:
                self.proc.wait(_EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def _start(self, cwd: Path) -> subprocess.Popen:
        # A session of its own: Ctrl-C in the terminal reaches edgedistill only (which then ends
        # the child), and the child's own children can be stopped with it as one group.
        program = self.cfg.command[0]
        try:
            return subprocess.Popen(
                list(self.cfg.command), cwd=cwd, start_new_session=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise UserError(
                f"teacher command {program!r} was not found: give teacher.command an installed program or a path "
                f"(relative to {cwd})"
            ) from exc
        except PermissionError as exc:
            raise UserError(
                f"teacher command {program!r} is not executable: chmod +x it, or run it through its interpreter"
            ) from exc
        except OSError as exc:
            raise UserError(f"teacher command {self.text} cannot be started ({exc.strerror}): check teacher.command") from exc

    def _parse_handshake(self, line: bytes) -> int:
        try:
            reply = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            reply = None
        if not isinstance(reply, dict):
            shown = line[:80].decode("utf-8", "replace")
            raise self._error(
                f"answered the handshake with {shown!r}, not a JSON line: it must write only the protocol to stdout "
                "(log to stderr)"
            )
        if "error" in reply:
            raise self._error(f"cannot serve these inputs: {reply['error']}")
        if reply.get("protocol") != PROTOCOL:
            raise self._error(
                f"speaks protocol {reply.get('protocol')!r} but edgedistill speaks {PROTOCOL!r}: update the client or "
                "edgedistill so both speak the same version"
            )
        outputs = reply.get("outputs")
        if not isinstance(outputs, int) or isinstance(outputs, bool) or outputs < 1:
            raise self._error(
                f'answered the handshake with outputs={outputs!r}: it must be the number of outputs per input, e.g. 10'
            )
        return outputs

    def _check_answer(self, payload: bytes, batch: int, what: str) -> np.ndarray:
        try:
            y = decode_payload(payload)
        except ValueError as exc:
            raise self._error(f"answered {what} with a frame that is not a .npy array ({exc})") from exc
        if y.shape != (batch, self.outputs):
            raise self._error(
                f"answered {what} with an array of shape {y.shape}, expected ({batch}, {self.outputs}): "
                "one row of outputs per input, in order"
            )
        if y.dtype.kind != "f":
            raise self._error(f"answered {what} with {y.dtype} values, expected floats")
        bad = int((~np.isfinite(y)).any(axis=1).sum())
        if bad:
            raise self._error(f"answered {what} with non-finite values (NaN or inf) in {bad} rows")
        return y.astype(np.float32)

    # Pipe I/O, each step under the deadline of the exchange it belongs to.

    def _send(self, data: bytes, deadline: _Deadline) -> None:
        view = memoryview(data)
        while view:
            self._wait(deadline, write=True)
            try:
                view = view[os.write(self.proc.stdin.fileno(), view[:_CHUNK]) :]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise self._gone(deadline.what) from None

    def _read(self, n: int, deadline: _Deadline) -> bytes:
        while len(self._out) < n:
            self._fill(deadline)
        data = bytes(self._out[:n])
        del self._out[:n]
        return data

    def _read_line(self, deadline: _Deadline) -> bytes:
        while (end := self._out.find(b"\n")) < 0:
            if len(self._out) > _MAX_LINE:
                raise self._error(
                    f"answered {deadline.what} with more than {_MAX_LINE:,} bytes and no newline: "
                    "it must write only the protocol to stdout"
                )
            self._fill(deadline)
        line = bytes(self._out[:end])
        del self._out[: end + 1]
        return line

    def _fill(self, deadline: _Deadline) -> None:
        self._wait(deadline, write=False)
        try:
            chunk = os.read(self.proc.stdout.fileno(), _CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            raise self._gone(deadline.what)
        self._out += chunk

    def _wait(self, deadline: _Deadline, write: bool) -> None:
        """Until stdin takes bytes (`write`) or stdout has some, draining stderr meanwhile."""
        stdout, stderr, stdin = self.proc.stdout, self.proc.stderr, self.proc.stdin
        while True:
            left = deadline.at - time.monotonic()
            if left <= 0:
                raise self._error(
                    f"gave no answer to {deadline.what} within {deadline.seconds:g} s: check that it flushes stdout "
                    f"after each answer, or raise {deadline.setting}"
                )
            readers = ([] if write else [stdout]) + ([stderr] if self._err_open else [])
            ready_r, ready_w, _ = select.select(readers, [stdin] if write else [], [], left)
            if stderr in ready_r:
                self._drain_stderr()
            if ready_w or stdout in ready_r:
                return

    def _drain_stderr(self) -> None:
        try:
            chunk = os.read(self.proc.stderr.fileno(), _CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self._err_open = False
        self._err = (self._err + chunk)[-_STDERR_TAIL:]

    def _gone(self, what: str) -> UserError:
        """The error for a child that stopped reading or writing: its exit status and last words."""
        try:
            code = self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            code = None
        until = time.monotonic() + 1.0
        while self._err_open and time.monotonic() < until:
            if select.select([self.proc.stderr], [], [], max(0.0, until - time.monotonic()))[0]:
                self._drain_stderr()
        if code is None:
            status = "closed its stdout"
        elif code < 0:
            status = f"was stopped by signal {-code} ({signal.strsignal(-code)})"
        else:
            status = f"exited with status {code}"
        return self._error(f"{status} before answering {what}")

    def _error(self, text: str) -> UserError:
        """One line: the command, what went wrong, and the last line it wrote to stderr."""
        lines = self._err.decode("utf-8", "replace").strip().splitlines()
        tail = f"; its stderr ends: {lines[-1].strip()[:300]}" if lines else ""
        return UserError(f"teacher command {self.text} {text}{tail}")

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass  # the group is gone already


# --- the call -----------------------------------------------------------------------------------


def query_teacher(
    cfg: QueryTeacherConfig,
    x: np.ndarray,
    cache_dir: Path,
    base: Path = Path("."),
    progress: Callable[[int, int], None] | None = None,
) -> QueryResult:
    """The teacher's outputs for `x`, asking the command only for inputs not answered before.

    Answers are read from and stored in `cache_dir` (inside the run directory). The command runs
    in `base / cfg.cwd` (`base` when cwd is unset; `base` is the config's folder) and is started
    only when there is something to ask and budget left. When the budget runs out, the inputs it
    cannot pay for are left unanswered (NaN rows, `stopped_by_budget`) rather than raising. A
    failing, hanging or misbehaving command raises one-line UserError; every answer that arrived
    before it stays stored. `progress(done, total)` follows the inputs sent in this call.

    Queries count as used when sent: the ledger in `cache_dir` is updated on disk before each
    request leaves, so a crash between a request and its answer can never let a rerun exceed
    `cfg.max_queries` (those queries stay spent, unanswered).
    """
    x = _check_inputs(x)
    keys = input_keys(x)
    cache = _Cache(Path(cache_dir))
    first: dict[str, int] = {}  # each unanswered key -> its first row in x, so duplicates go once
    for i, key in enumerate(keys):
        if key not in cache.rows:
            first.setdefault(key, i)
    allowed = max(0, cfg.max_queries - cache.used)
    todo = list(first.values())[:allowed]
    sent_now = 0
    if todo:
        try:
            sent_now = _ask(cfg, x, keys, todo, cache, _workdir(cfg, base), progress)
        except UserError as exc:
            if cache.rows:
                kept = f"{len(cache.rows):,} answers are kept in {cache.folder}; a rerun asks only for the rest"
                raise UserError(f"{exc} ({kept})") from exc
            raise
    return _result(cfg, keys, cache, sent_now, stopped=len(first) > allowed)


def _ask(
    cfg: QueryTeacherConfig,
    x: np.ndarray,
    keys: list[str],
    todo: list[int],
    cache: _Cache,
    cwd: Path,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Ask the command for the rows `todo` of `x`, storing each answer as it comes; the count sent."""
    sent = 0
    with _Command(cfg, cwd) as command:
        cache.expect_outputs(command.handshake(x.shape[1:], x.dtype), command.text)
        for number, start in enumerate(range(0, len(todo), cfg.batch_size), 1):
            rows = todo[start : start + cfg.batch_size]
            cache.spend(len(rows))
            sent += len(rows)
            cache.store([keys[i] for i in rows], command.ask(x[rows], number))
            if progress is not None:
                progress(sent, len(todo))
    return sent


def _check_inputs(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 1 or x.dtype.kind not in "biuf":
        raise UserError(f"query inputs must be a numeric array with a batch axis, got {x.dtype} of shape {x.shape}")
    return np.ascontiguousarray(x)


def _workdir(cfg: QueryTeacherConfig, base: Path) -> Path:
    cwd = Path(base) / cfg.cwd if cfg.cwd else Path(base)
    if not cwd.is_dir():
        raise UserError(f"teacher.cwd {cwd} is not a folder: give the folder the teacher command runs in")
    return cwd


def _result(cfg: QueryTeacherConfig, keys: list[str], cache: _Cache, sent_now: int, stopped: bool) -> QueryResult:
    table = cache.table()
    rows = np.array([cache.rows.get(k, -1) for k in keys], dtype=np.int64)
    answered = rows >= 0
    outputs = np.full((len(keys), table.shape[1]), np.nan, np.float32)
    outputs[answered] = table[rows[answered]]
    used = f"{cache.used:,} of {cfg.max_queries:,} queries used"
    if stopped:
        left = int((~answered).sum())
        message = f"{used}; {left:,} inputs left unanswered: query budget reached (raise teacher.max_queries to ask for them)"
    else:
        message = f"{len(keys):,} inputs answered, {sent_now:,} queries sent now; {used}"
    return QueryResult(outputs, answered, sent_now, cache.used, stopped, message)
