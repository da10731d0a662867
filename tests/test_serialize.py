from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edgedistill.compress.budget import Budget
from edgedistill.serialize import from_jsonable, to_jsonable
from edgedistill.teachers import FactoryTeacher, TeacherConfig


@dataclass(frozen=True)
class Leaf:
    name: str
    score: float
    file: Path


@dataclass(frozen=True)
class Tree:
    root: Path
    leaves: tuple[Leaf, ...]
    by_name: dict[str, Leaf]
    best: Optional[Leaf]
    note: str | None
    budget: Budget
    teacher: TeacherConfig
    names: list[str] = field(default_factory=list)
    ratio: float = 1.0


def _tree(**overrides) -> Tree:
    a = Leaf("a", 0.5, Path("out/a.onnx"))
    b = Leaf("b", 0.25, Path("/abs/b.onnx"))
    values = dict(
        root=Path("runs/x"),
        leaves=(a, b),
        by_name={"a": a, "b": b},
        best=a,
        note=None,
        budget=Budget(params="20%", bytes="16KB"),
        teacher=FactoryTeacher(factory="conftest:tiny_cnn"),
        names=["x", "y"],
        ratio=2,
    )
    values.update(overrides)
    return Tree(**values)


def test_to_jsonable_gives_plain_json():
    data = to_jsonable(_tree())
    json.dumps(data)  # no custom types left
    assert data["root"] == "runs/x"
    assert data["leaves"][1] == {"name": "b", "score": 0.25, "file": "/abs/b.onnx"}
    assert data["by_name"]["a"]["file"] == "out/a.onnx"
    assert data["note"] is None
    assert data["budget"]["params"] == "20%"
    assert data["teacher"] == {"kind": "factory", "factory": "conftest:tiny_cnn", "train": False}


def test_round_trip_through_json_is_equal():
    tree = _tree()
    back = from_jsonable(Tree, json.loads(json.dumps(to_jsonable(tree))))
    assert back == tree
    assert isinstance(back.root, Path) and isinstance(back.leaves, tuple)
    assert isinstance(back.leaves[0], Leaf) and isinstance(back.leaves[0].file, Path)
    assert isinstance(back.by_name["b"], Leaf)
    assert isinstance(back.budget, Budget) and isinstance(back.teacher, FactoryTeacher)
    assert isinstance(back.ratio, float)


def test_round_trip_with_optionals_absent():
    tree = _tree(best=None, note="hi", leaves=(), by_name={})
    back = from_jsonable(Tree, json.loads(json.dumps(to_jsonable(tree))))
    assert back == tree
    assert back.best is None and back.note == "hi"


def test_typed_containers_at_top_level():
    leaves = (Leaf("a", 1.0, Path("p")),)
    assert from_jsonable(tuple[Leaf, ...], to_jsonable(leaves)) == leaves
    assert from_jsonable(dict[str, Path], to_jsonable({"k": Path("q")})) == {"k": Path("q")}
    assert from_jsonable(list[Path], ["a", "b"]) == [Path("a"), Path("b")]


def test_nan_becomes_none():
    assert to_jsonable(float("nan")) is None
    data = to_jsonable({"x": [1.0, math.nan], "leaf": Leaf("n", math.nan, Path("f"))})
    assert data == {"x": [1.0, None], "leaf": {"name": "n", "score": None, "file": "f"}}
    json.dumps(data, allow_nan=False)  # strict JSON
    assert from_jsonable(Leaf, data["leaf"]).score is None


def test_dict_keys_become_strings_and_tuples_lists():
    assert to_jsonable({1: (1, 2), Path("p"): None}) == {"1": [1, 2], "p": None}
