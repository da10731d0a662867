"""Property: whatever dict a TOML file could give, `parse_config` validates it or raises a
UserError of one line; never another exception."""

from __future__ import annotations

import copy
from itertools import pairwise
from pathlib import Path

from conftest import tiny_run_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from edgedistill.compress.budget import Budget
from edgedistill.config import RunConfig, TierConfig, parse_config
from edgedistill.errors import UserError
from edgedistill.teachers import TEACHER_KINDS

# The config's folder: relative paths are joined to it, never read, while the config loads.
BASE = Path(__file__).parent

# Values of every kind a TOML file holds, and a few it cannot (None), at any depth.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "50%", "1B", "-3", "1e400", "../../x", ".hidden", "x:y", "t.onnx", "kind"])
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def _fields(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _sections() -> list[tuple]:
    """Where a value can go in the tiny config: every field of every section, and a new key."""
    paths = [(name,) for name in _fields(RunConfig)]
    for name, info in RunConfig.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            paths += [(name, field) for field in _fields(info.annotation)]
    paths += [("tiers", 0, field) for field in _fields(TierConfig)]
    paths += [("tiers", 0, "budget", field) for field in _fields(Budget)]
    paths += [("tiers", 0, "student", field) for field in ("kind", "min_keep", "importance", "family", "max_width")]
    paths += [("teacher", field) for kind in TEACHER_KINDS for field in _fields(kind)]
    return sorted(set(paths), key=str) + [("unknown-key",), ("distill", "no-such-field")]


PATHS = _sections()


def _set(config: dict, path: tuple, value: object) -> dict:
    """`config` with `value` at `path`; what lies on the way and is not the table or list the
    path goes through (an earlier change may have put a number there) becomes one."""
    config = copy.deepcopy(config)
    node = config
    for key, following in pairwise(path):
        child = node[key] if isinstance(node, list) else node.get(key)
        if isinstance(following, int) and not (isinstance(child, list) and len(child) > following):
            child = [{} for _ in range(following + 1)]
        elif isinstance(following, str) and not isinstance(child, dict):
            child = {}
        node[key] = child
        node = child
    node[path[-1]] = value
    return config


def _validates_or_says_one_line(raw: object) -> None:
    try:
        cfg = parse_config(raw, "prop.toml", BASE)
    except UserError as exc:
        message = str(exc)
        assert message.startswith("prop.toml: ") and "\n" not in message and "\r" not in message, message
    else:
        assert isinstance(cfg, RunConfig)


PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3))
def test_a_valid_config_with_values_changed_validates_or_says_one_line(changes):
    raw = tiny_run_config()
    for path, value in changes:
        raw = _set(raw, path, value)
    _validates_or_says_one_line(raw)


@PROPERTY
@given(st.dictionaries(st.sampled_from([*_fields(RunConfig), "extra"]) | st.text(max_size=6), VALUES, max_size=6))
def test_any_dict_validates_or_says_one_line(raw):
    _validates_or_says_one_line(raw)
