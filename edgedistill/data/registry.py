"""The inputs registry: one entry per kind of input; a teacher's kind says which it needs."""

from __future__ import annotations

from edgedistill.data.array_inputs import ARRAYS
from edgedistill.data.base import Inputs
from edgedistill.data.text_inputs import TEXT
from edgedistill.teachers import TeacherConfig

INPUTS: dict[str, Inputs] = {entry.name: entry for entry in (ARRAYS, TEXT)}


def inputs_for(teacher: TeacherConfig) -> Inputs:
    """The inputs entry the teacher takes: text for a Hugging Face folder, arrays otherwise."""
    return INPUTS[teacher.inputs]
