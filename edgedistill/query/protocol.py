"""The wire format of protocol ``edgedistill.query/1`` and the client's half of it (`serve`).

edgedistill's half (starting the command, the store of answers, the budget) is in
`edgedistill.query.teacher`; docs/query-protocol.md has the protocol in full, with a worked example.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

PROTOCOL = "edgedistill.query/1"
LENGTH = struct.Struct("<Q")  # the frame length prefix


# --- frames, shared by both halves --------------------------------------------------------------


def encode_frame(array: np.ndarray) -> bytes:
    """One protocol frame: the 8-byte little-endian length, then `array` as a .npy file."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    payload = buf.getvalue()
    return LENGTH.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> np.ndarray:
    """The array in a frame's payload (raises ValueError when it is not a pickle-free .npy)."""
    try:
        return np.lib.format.read_array(io.BytesIO(payload), allow_pickle=False)
    except EOFError as exc:
        raise ValueError(str(exc)) from exc


# --- the client's half --------------------------------------------------------------------------


def serve(
    answer: Callable[[np.ndarray], np.ndarray],
    outputs: int,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
) -> None:
    """Serve `answer` to edgedistill over the protocol until it closes stdin, then return.

    `answer` takes a (B, *input_shape) array and returns B rows of `outputs` floats. With the
    default `stdout`, the process's real stdout carries frames only and anything else written to
    it (a stray print(), a library banner) goes to stderr instead, where it cannot break a frame.
    """
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else _protocol_stdout()
    line = stdin.readline()
    if not line:
        return
    asked = json.loads(line).get("protocol")
    if asked != PROTOCOL:
        _write_line(stdout, {"error": f"this client speaks {PROTOCOL}, not {asked}"})
        return
    _write_line(stdout, {"protocol": PROTOCOL, "outputs": outputs})
    while (x := _read_frame(stdin)) is not None:
        stdout.write(encode_frame(np.asarray(answer(x), dtype=np.float32)))
        stdout.flush()


def _protocol_stdout() -> BinaryIO:
    """A private handle on fd 1 for frames; fd 1 itself (and so sys.stdout) then points at stderr."""
    sys.stdout.flush()
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return frames


def _write_line(stream: BinaryIO, obj: dict) -> None:
    stream.write(json.dumps(obj).encode() + b"\n")
    stream.flush()


def _read_frame(stream: BinaryIO) -> np.ndarray | None:
    """The next frame's array, or None when the stream ends between frames (the protocol's end).
    A stream cut inside a frame (edgedistill itself gone) raises struct.error or ValueError."""
    head = stream.read(LENGTH.size)
    if not head:
        return None
    return decode_payload(stream.read(LENGTH.unpack(head)[0]))
