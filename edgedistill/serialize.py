"""Dataclasses to JSON-able values and back, so stage results survive in the run manifest."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter

T = TypeVar("T")


def to_jsonable(obj: Any, root: Path | None = None) -> Any:
    """Dataclasses become dicts, paths strings, tuples lists; pydantic models their JSON dump.
    Paths inside `root` are written relative to it, so a record survives the folder's move."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name), root) for f in dataclasses.fields(obj)}
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=True)
    if isinstance(obj, Path):
        return _path_text(obj, root)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, root) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _path_text(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return str(path.absolute())


def from_jsonable(cls: type[T], data: Any, root: Path | None = None) -> T:
    """Rebuild a value of type `cls` (a dataclass or a typed container) from `to_jsonable` output;
    relative paths are taken as inside `root` when one is given."""
    return _decode(cls, data, root)


def _decode(tp: Any, data: Any, root: Path | None = None) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        # A pydantic union told apart by a discriminator (a teacher or student config): pydantic decodes it.
        return TypeAdapter(tp).validate_python(data)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _decode(non_none[0], data, root) if len(non_none) == 1 else data
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return tp(**{f.name: _decode(hints[f.name], data[f.name], root) for f in dataclasses.fields(tp) if f.init and f.name in data})
    if hasattr(tp, "model_validate"):
        return tp.model_validate(data)
    if tp is Path:
        return Path(data) if root is None else root / data
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, root) for v in data)
        return tuple(_decode(t, v, root) for t, v in zip(args, data)) if args else tuple(data)
    if origin is list:
        return [_decode(args[0], v, root) for v in data]
    if origin is dict:
        return {k: _decode(args[1], v, root) for k, v in data.items()}
    if tp is float:
        return float(data)
    return data
