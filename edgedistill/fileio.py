"""Writing files so that no reader ever sees half of one, and quieting libraries that print."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationInfo

from edgedistill.errors import UserError


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; when the block succeeds it is renamed over `final`
    in one step (same folder, so one filesystem). On failure `final` keeps its old content."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(f"the disk is full while writing {final}: free space and rerun; finished artifacts are kept") from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def quiet(logger: str = "") -> Iterator[None]:
    """Silence stdout prints, warnings and log records below ERROR of `logger` ("" = root)."""
    log = logging.getLogger(logger or None)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run the block with `path` as the working directory (for libraries that write beside it)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def config_relative(value: str | None, info: ValidationInfo) -> str | None:
    """A path of a config (a pydantic field validator): relative to the config's folder, the
    validation context's `base`, made absolute once, when the config loads; as given where no
    folder is known."""
    base = (info.context or {}).get("base")
    if value is None or base is None or Path(value).is_absolute():
        return value
    return str(Path(base) / value)


def file_digest(path: Path) -> str:
    """Size and mtime of an input file: a cheap stand-in for its content in stage keys ("" when
    it is not a file)."""
    return f"{path.stat().st_size}:{path.stat().st_mtime_ns}" if path.is_file() else ""
