"""Writing files so that no reader ever sees half of one, and quieting libraries that print."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationInfo

from edgedistill.errors import UserError


# Every scratch file and folder of a run ends in this, so the next run can tell a stale one (left
# by a kill) from the user's files and remove it.
TMP_SUFFIX = ".tmp"


def _umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread starts.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; what a run publishes gets the modes `open` would give (0644 under
# the usual umask 022), so a CI job running as another user can read the report.
_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; when the block succeeds it is renamed over `final`
    in one step (same folder, so one filesystem). On failure `final` keeps its old content."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=TMP_SUFFIX)
    # Before the block, so a writer that sets a mode of its own (an executable script) keeps it.
    os.fchmod(fd, FILE_MODE)
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


def scratch_dir(parent: Path, prefix: str) -> tempfile.TemporaryDirectory:
    """A scratch folder in `parent`, removed when its block ends however it ends; one a kill
    leaves behind is removed by `remove_stale` on the next run."""
    return tempfile.TemporaryDirectory(prefix=prefix, suffix=TMP_SUFFIX, dir=parent)


def remove_stale(root: Path) -> list[Path]:
    """Remove the scratch files and folders (hidden, ending in TMP_SUFFIX) a killed run left under
    `root`; the caller holds the run's lock, so none of them belongs to a live run."""
    stale = sorted(p for p in root.rglob(f".*{TMP_SUFFIX}") if not _inside_stale(p, root))
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def _inside_stale(path: Path, root: Path) -> bool:
    return any(p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) for p in path.relative_to(root).parents if p.name)


def publish_folder(folder: Path) -> None:
    """Give a folder and everything in it the modes `open` and `mkdir` would (FILE_MODE, DIR_MODE),
    for a writer that makes some private (coremltools saves a package's model spec 0600)."""
    for path in (folder, *folder.rglob("*")):
        if not path.is_symlink():
            path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)


def file_bytes(path: Path) -> int:
    """The size of a file, or the sum of the sizes of a folder's files at any depth (a Core ML
    `.mlpackage` is a folder): what a device stores, so what a bytes budget judges."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


# Digests already computed by this process, by what identifies one version of a file: a write
# changes its size, mtime or ctime (which no tool sets back), a replacement its inode.
_DIGESTS: dict[tuple, str] = {}
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's content, or of a folder's files (names and contents, in order);
    "" when nothing is there. Each version of a file is read once per process."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}\0{file_digest(f)}\0".encode())
        return h.hexdigest()
    try:
        st = path.stat()
    except OSError:
        return ""
    if not stat.S_ISREG(st.st_mode):
        return ""
    version = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if version not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _DIGESTS[version] = h.hexdigest()
    return _DIGESTS[version]
