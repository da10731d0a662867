"""The run directory: atomic writes, a manifest of finished stages, resume and a lock.

A stage is recorded with a hash of its inputs (their content, never where they lie or when they
were written) and the digest of every file it wrote; a rerun whose inputs hash the same, and whose
outputs are all on disk with the same content, takes the recorded result instead of redoing the
work. Paths in the manifest are relative to the run directory, so a moved or copied one resumes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from edgedistill.errors import UserError
from edgedistill.fileio import atomic_path, file_digest, remove_stale
from edgedistill.progress import Progress
from edgedistill.serialize import from_jsonable, to_jsonable

MANIFEST = "manifest.json"
# /3: outputs recorded with their content digests, paths relative to the run directory.
MANIFEST_SCHEMA = "edgedistill.manifest/3"


T = TypeVar("T")


@dataclass(frozen=True)
class StageId:
    """A stage of a run: its kind ("baseline", "student", "export", ...) and the tier it belongs
    to, if any. Its text form names it in the manifest."""

    kind: str
    tier: str | None = None

    def __str__(self) -> str:
        return self.kind if self.tier is None else f"{self.kind}:{self.tier}"


@dataclass(frozen=True)
class Made(Generic[T]):
    """What a stage's `make` returns: its result (JSON-able, typed) and the files it wrote."""

    result: T
    outputs: tuple[Path, ...] = ()


def input_key(*inputs: Any) -> str:
    """A stable hash of a stage's inputs (configs, upstream keys, file digests)."""
    text = json.dumps(to_jsonable(list(inputs)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunDir:
    """One run's directory. Holds a lock on it for the lifetime of the object (until `close`)."""

    def __init__(self, root: Path, force: bool = False) -> None:
        # Absolute, so a library that changes the working directory cannot move where we write.
        self.root = root.absolute()
        self._created = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(root / ".lock", "a")
        except OSError as exc:
            raise UserError(f"cannot write to the run directory {root} ({exc.strerror}): choose another with --out") from exc
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise UserError(f"another edgedistill run is writing to {root}: wait for it to finish or use another --out") from exc
        remove_stale(self.root)
        self._manifest = {"schema": MANIFEST_SCHEMA, "stages": {}} if force else self._read_manifest()

    def close(self) -> None:
        """Release the lock; a directory this run created and wrote nothing into is removed."""
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
        if self._created and [p.name for p in self.root.iterdir()] == [".lock"]:
            (self.root / ".lock").unlink()
            self.root.rmdir()

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, rel: str | Path) -> Path:
        """Absolute path of a file in the run directory."""
        return self.root / rel

    def relative(self, path: Path) -> str:
        """`path` (inside the run directory) as the report and manifest name it: relative to the root."""
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def atomic(self, rel: str | Path) -> contextlib.AbstractContextManager[Path]:
        """A temporary path beside `rel`, renamed over it when the block succeeds."""
        return atomic_path(self.path(rel))

    def write_bytes(self, rel: str | Path, data: bytes) -> Path:
        with self.atomic(rel) as tmp:
            tmp.write_bytes(data)
        return self.path(rel)

    def write_text(self, rel: str | Path, text: str) -> Path:
        return self.write_bytes(rel, text.encode())

    def write_json(self, rel: str | Path, obj: Any) -> Path:
        return self.write_text(rel, json.dumps(to_jsonable(obj), indent=2) + "\n")

    def save_torch(self, rel: str | Path, obj: Any) -> Path:
        with self.atomic(rel) as tmp:
            torch.save(obj, tmp)
        return self.path(rel)

    def stage(
        self, sid: StageId, key: str, kind: type[T], make: Callable[[], Made[T]], progress: Progress, resumed: str
    ) -> T:
        """The one resume path: the recorded result of `sid` when it finished with inputs `key`
        and its outputs remain as written (saying `resumed` on `progress`), else `make()`'s,
        recorded. A redo says why."""
        record, why = self._resumable(str(sid), key)
        if record is not None:
            try:
                result = from_jsonable(kind, record["result"], self.root)
            except (TypeError, KeyError, ValueError):
                # A record of another shape (an older edgedistill) is redone, never half-read.
                why = "the run directory's record is of another version"
            else:
                progress.stage(resumed)
                return result
        if why:
            progress.stage(f"{sid}: {why}; redoing it")
        made = make()
        self.finish(str(sid), key, made.result, made.outputs)
        return made.result

    def made_key(self, sid: StageId) -> str:
        """The key of what a finished stage made: its inputs' key and its outputs' digests, for
        the stages that read those files (so they are redone when a redo changes them)."""
        record = self._manifest["stages"][str(sid)]
        return input_key(record["key"], record["outputs"])

    def finished(self, stage: str, key: str) -> Any:
        """The recorded (JSON) result of `stage` if it finished with inputs `key` and its outputs
        remain as written, else None."""
        record, _ = self._resumable(stage, key)
        return None if record is None else record["result"]

    def _resumable(self, stage: str, key: str) -> tuple[dict | None, str]:
        """The record of `stage` when it can be taken as done, else why not ("" for never done)."""
        record = self._manifest["stages"].get(stage)
        if record is None:
            return None, ""
        if record["key"] != key:
            return None, "its inputs changed since it ran"
        for rel, digest in record["outputs"].items():
            now = file_digest(self.path(rel))
            if not now:
                return None, f"{rel} is missing"
            if now != digest:
                return None, f"{rel} changed since it was written"
        return record, ""

    def finish(self, stage: str, key: str, result: Any, outputs: Iterable[Path] = ()) -> dict:
        """Record `stage` as finished with `result` (JSON-able) and the files it wrote, each
        with its content digest."""
        record = {
            "key": key,
            "outputs": {self.relative(p): file_digest(Path(p)) for p in outputs},
            "result": to_jsonable(result, self.root),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self._manifest["stages"][stage] = record
        self.write_json(MANIFEST, self._manifest)
        return record["result"]

    def _read_manifest(self) -> dict:
        path = self.path(MANIFEST)
        if not path.exists():
            return {"schema": MANIFEST_SCHEMA, "stages": {}}
        empty = {"schema": MANIFEST_SCHEMA, "stages": {}}
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A damaged manifest only costs the resume; the artifacts themselves stay.
            return empty
        if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
            return empty
        stages = manifest.get("stages")
        if not isinstance(stages, dict):
            return empty
        keep = {"key", "outputs", "result"}
        manifest["stages"] = {
            name: r for name, r in stages.items()
            if isinstance(r, dict) and keep <= r.keys() and isinstance(r["outputs"], dict)
            and all(isinstance(d, str) for d in r["outputs"].values())
        }
        return manifest
