"""The inputs registry's sweep: every entry is registered under its name and provides what the run calls."""

import inspect

import pytest

from edgedistill.data.base import Inputs
from edgedistill.data.registry import INPUTS, inputs_for
from edgedistill.teachers import parse_teacher

_METHODS = [name for name, _ in inspect.getmembers(Inputs, inspect.isfunction) if not name.startswith("_")]


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_every_entry_provides_the_whole_protocol(name):
    entry = INPUTS[name]
    assert entry.name == name
    for method in _METHODS:
        theirs, ours = inspect.signature(getattr(type(entry), method)), inspect.signature(getattr(Inputs, method))
        assert list(theirs.parameters) == list(ours.parameters), f"{name}.{method}"


def test_a_teacher_says_which_inputs_it_takes():
    assert inputs_for(parse_teacher({"hf": "models/encoder"})).name == "text"
    assert inputs_for(parse_teacher("pkg.mod:build")).name == "arrays"
    assert inputs_for(parse_teacher("teacher.onnx")).name == "arrays"
