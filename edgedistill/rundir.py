"""The run directory: atomic writes, a manifest of finished stages, resume and a lock.

A stage is recorded with a hash of its inputs; a rerun whose inputs hash the same, and whose
outputs are all still on disk, takes the recorded result instead of redoing the work.
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
from edgedistill.fileio import atomic_path
from edgedistill.progress import Progress
from edgedistill.serialize import from_jsonable, to_jsonable

MANIFEST = "manifest.json"
# /2: stage results of the one run (typed stage ids, parity values); /1 records are not resumed.
MANIFEST_SCHEMA = "edgedistill.manifest/2"


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
        self.root = root
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
        self._manifest = {"schema": MANIFEST_SCHEMA, "stages": {}} if force else self._read_manifest()

    def close(self) -> None:
        """Release the lock."""
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

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
        and its outputs remain (saying `resumed` on `progress`), else `make()`'s, recorded."""
        done = self.finished(str(sid), key)
        if done is not None:
            try:
                result = from_jsonable(kind, done)
            except (TypeError, KeyError, ValueError):
                # A record of another shape (an older edgedistill) is redone, never half-read.
                progress.stage(f"{sid}: the run directory's record is of another version; redoing it")
            else:
                progress.stage(resumed)
                return result
        made = make()
        self.finish(str(sid), key, made.result, made.outputs)
        return made.result

    def finished(self, stage: str, key: str) -> dict | None:
        """The recorded result of `stage` if it finished with the same inputs and its outputs remain."""
        record = self._manifest["stages"].get(stage)
        if record is None or record["key"] != key:
            return None
        if not all(self.path(p).exists() for p in record["outputs"]):
            return None
        return record["result"]

    def finish(self, stage: str, key: str, result: Any, outputs: Iterable[Path] = ()) -> dict:
        """Record `stage` as finished with `result` (JSON-able) and the files it wrote."""
        rels = [self.relative(p) for p in outputs]
        record = {
            "key": key,
            "outputs": rels,
            "result": to_jsonable(result),
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
        manifest["stages"] = {name: r for name, r in stages.items() if isinstance(r, dict) and keep <= r.keys()}
        return manifest
