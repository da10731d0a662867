"""Budgets a student must meet, and measure(model): params, MACs, bytes at a precision, peak memory."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgedistill.errors import UserError

Precision = Literal["fp32", "fp16", "int8"]

# Decimal (SI) prefixes are powers of 1000, binary (IEC) ones powers of 1024: "256KB" is 256,000
# bytes and "256KiB" is 262,144 bytes, as storage vendors and the IEC define them.
_COUNT_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_BYTE_SUFFIXES = {
    "": 1.0,
    "b": 1.0,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "kib": 1024.0,
    "mib": 1024.0**2,
    "gib": 1024.0**3,
}
_FORMS = {
    "count": '200000, "200k", "1.5M", "2G" or "20%" of the teacher',
    "bytes": '2048 or "2048B" (bytes), "256KB" (1000 B), "256KiB" (1024 B), "1.5MB", "2MiB" or "20%" of the teacher',
}
# Said when a suffix is wrong for the kind: "7B" parameters is a billion in papers, while "B" is
# the byte of a bytes budget, so a count refuses it rather than guess.
_SUFFIXES_TAKEN = {
    "count": 'a count takes k, M or G (a billion is "1G"; B, KB and KiB are byte units)',
    "bytes": "bytes take B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024)",
}
_QUANTITY = re.compile(r"^\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z%]*)\s*$")
_BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass(frozen=True)
class Limit:
    """An upper bound: absolute (`relative=False`) or a share of the teacher's value (0.2 = 20 %)."""

    value: float
    relative: bool

    def resolve(self, teacher_value: float) -> float:
        """The absolute bound, given the teacher's value of the same quantity."""
        return self.value * teacher_value if self.relative else self.value


def parse_quantity(value: int | float | str, kind: Literal["count", "bytes"]) -> Limit:
    """Parse a budget quantity: a positive number, a number with a suffix, or "N%" of the teacher.

    Counts take k/M/G (powers of 1000, case-insensitive). Bytes take B, KB/MB/GB (powers of 1000)
    and KiB/MiB/GiB (powers of 1024), case-insensitive; a bare number is bytes.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserError(f"{value!r} is not a valid {kind} limit: give {_FORMS[kind]}")
    try:
        number, suffix = (float(value), "") if isinstance(value, (int, float)) else _split(value, kind)
    except OverflowError:  # an int past float's range
        number, suffix = math.inf, ""
    if suffix == "%":
        number /= 100.0
    elif suffix:
        number *= (_COUNT_SUFFIXES if kind == "count" else _BYTE_SUFFIXES)[suffix]
    if not (number > 0 and math.isfinite(number)):
        raise UserError(f"{value!r} is not a valid {kind} limit: it must be positive and finite; give {_FORMS[kind]}")
    return Limit(number, relative=suffix == "%")


def _split(value: str, kind: Literal["count", "bytes"]) -> tuple[float, str]:
    """Split "1.5MB" into (1.5, "mb"), checking the suffix suits `kind`."""
    match = _QUANTITY.match(value)
    suffixes = _COUNT_SUFFIXES if kind == "count" else _BYTE_SUFFIXES
    if match is None:
        raise UserError(f"{value!r} is not a valid {kind} limit: give {_FORMS[kind]}")
    if match.group(2) != "%" and match.group(2).lower() not in suffixes:
        raise UserError(f"{value!r} is not a valid {kind} limit: {_SUFFIXES_TAKEN[kind]}; give {_FORMS[kind]}")
    return float(match.group(1)), match.group(2).lower()


class Budget(BaseModel):
    """The limits one student must meet; a limit left out (None) is not checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    params: Limit | None = Field(None, description='Parameter count: 200000, "200k", "1.5M" or "20%" of the teacher.')
    macs: Limit | None = Field(
        None, description='Multiply-accumulates of one forward pass at batch 1: "5M" or "20%" of the teacher.'
    )
    bytes: Limit | None = Field(
        None,
        description='Weight bytes at `precision`: "256KB" (1000 B), "256KiB" (1024 B), or "20%" of the '
        "teacher's fp32 bytes.",
    )
    peak_memory: Limit | None = Field(
        None, description='Peak activation memory at batch 1, fp32: "64KiB" or "20%" of the teacher.'
    )
    precision: Precision = Field(
        "int8", description="Precision the search sizes the `bytes` budget at; the report judges it on the largest deployed file."
    )
    latency_ms: dict[str, float] | None = Field(
        None,
        description="Largest p50 latency at batch 1 on each named target, ms: {pixel-8 = 4.0}. "
        "Predicted during the search; judged measured where a runner reaches the target.",
    )

    @field_validator("latency_ms")
    @classmethod
    def _positive(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        # NaN fails every comparison, so `v <= 0` let it through; `not v > 0` refuses it.
        if value is not None and any(not (v > 0 and math.isfinite(v)) for v in value.values()):
            raise ValueError("latency limits must be positive, finite milliseconds")
        return value

    @field_validator("params", "macs", mode="before")
    @classmethod
    def _count(cls, value: object) -> object:
        return _to_limit(value, "count")

    @field_validator("bytes", "peak_memory", mode="before")
    @classmethod
    def _bytes(cls, value: object) -> object:
        return _to_limit(value, "bytes")

    @field_serializer("params", "macs", "bytes", "peak_memory")
    def _dump(self, limit: Limit | None) -> int | float | str | None:
        # Dump as written in TOML ("20%" or a number), so configs and reports read as the user wrote them.
        if limit is None:
            return None
        if limit.relative:
            return f"{limit.value * 100:g}%"
        return int(limit.value) if limit.value.is_integer() else limit.value

    def relative_limits(self) -> tuple[str, ...]:
        """The names of the limits given as a share of the teacher's value."""
        return tuple(n for n in _LIMIT_NAMES if (limit := getattr(self, n)) is not None and limit.relative)

    @model_validator(mode="after")
    def _some_limit(self) -> "Budget":
        if all(getattr(self, name) is None for name in _LIMIT_NAMES) and not self.latency_ms:
            raise ValueError("set at least one of params, macs, bytes, peak_memory and latency_ms")
        return self


_LIMIT_NAMES = ("params", "macs", "bytes", "peak_memory")


def _to_limit(value: object, kind: Literal["count", "bytes"]) -> object:
    # a dict is a dumped Limit (model_dump), so a saved budget validates back unchanged
    if value is None or isinstance(value, (Limit, dict)):
        return value
    try:
        return parse_quantity(value, kind)  # type: ignore[arg-type]
    except UserError as exc:
        # pydantic wraps ValueError into a ValidationError that names the field
        raise ValueError(str(exc)) from exc


@dataclass(frozen=True)
class Footprint:
    """What a model costs: parameters, MACs and peak activation bytes at batch 1, weight bytes at fp32."""

    params: int
    macs: int
    bytes_fp32: int
    peak_activation_bytes: int

    def bytes_at(self, precision: Precision) -> int:
        """Estimated weight bytes at `precision` (4, 2 or 1 byte per parameter).

        An estimate: it ignores file overhead and layers kept in float. `search` corrects it with
        the real file size when given a probe, and the report judges the real artifact.
        """
        return self.bytes_fp32 * _BYTES_PER_PARAM[precision] // _BYTES_PER_PARAM["fp32"]


def measure(model: nn.Module, input_shape: tuple[int, ...], input_dtype: torch.dtype = torch.float32) -> Footprint:
    """Measure a model on one input of `input_shape` (no batch axis; batch 1 is used): zeros for a
    float input, ones (a valid token id, not padding) for an integer one such as token ids.

    params: parameter elements; bytes_fp32: 4 bytes each (buffers such as batch-norm running
    statistics are left out: export folds them into the convolutions). MACs: FLOPs / 2 from torch's FlopCounterMode
    (convolutions, matmuls, sdpa). Peak activation memory: the largest, over every call of a leaf
    module, of the bytes of that call's tensor inputs plus its outputs, floats counted at 4 bytes
    and an output that is a view of an input (flatten, in-place ReLU) counted once: a lower bound
    of what a runtime that frees each tensor after its last use needs.
    The model is left as it was: evaluated in eval mode without grad, training flags restored.
    """
    params = sum(p.numel() for p in model.parameters())
    x = torch.zeros((1, *input_shape)) if input_dtype.is_floating_point else torch.ones((1, *input_shape), dtype=input_dtype)
    flags = [(m, m.training) for m in model.modules()]
    peak = 0

    def record(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        nonlocal peak
        peak = max(peak, _tensor_bytes(args, kwargs, output))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(record, with_kwargs=True) for m in leaves]
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in flags:
            module.training = training
    return Footprint(
        params=params,
        macs=counter.get_total_flops() // 2,
        bytes_fp32=4 * params,
        peak_activation_bytes=peak,
    )


def _tensor_bytes(*objs: object) -> int:
    """Bytes of the distinct tensors in `objs`; a view of a tensor already counted adds nothing."""
    storages: dict[int, int] = {}
    for tensor in _tensors(objs):
        size = tensor.untyped_storage().nbytes()
        if tensor.is_floating_point():
            size = size // tensor.element_size() * 4
        storages[tensor.untyped_storage().data_ptr()] = size
    return sum(storages.values())


def _tensors(obj: object) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


@dataclass(frozen=True)
class BudgetCheck:
    """One budget judged: `value` against `limit`."""

    name: str
    limit: float
    value: float
    ok: bool

    @property
    def margin(self) -> float:
        """Share of the limit left as headroom: 0.1 = 10 % under it; negative when broken."""
        return (self.limit - self.value) / self.limit


@dataclass(frozen=True)
class ResolvedBudget:
    """A budget with every limit absolute: name ("params", "macs", "bytes", "peak_memory") -> bound."""

    limits: dict[str, float]
    precision: Precision


def resolve(budget: Budget, teacher: Footprint) -> ResolvedBudget:
    """Turn relative limits into absolute ones against the teacher's footprint.

    A relative `bytes` limit is a share of the teacher's fp32 weight bytes, whatever `precision`
    the student is judged at: "25%" at int8 allows a student as large as the teacher.
    """
    teacher_values = {
        "params": teacher.params,
        "macs": teacher.macs,
        "bytes": teacher.bytes_fp32,
        "peak_memory": teacher.peak_activation_bytes,
    }
    limits: dict[str, float] = {}
    for name in _LIMIT_NAMES:
        limit: Limit | None = getattr(budget, name)
        if limit is None:
            continue
        if limit.relative and teacher_values[name] == 0:
            raise UserError(f"budget {name} is relative to the teacher's {name}, which is 0: give an absolute value")
        limits[name] = limit.resolve(teacher_values[name])
    for target, ms in (budget.latency_ms or {}).items():
        limits[latency_name(target)] = ms
    return ResolvedBudget(limits=limits, precision=budget.precision)


LATENCY_PREFIX = "latency_ms:"


def latency_name(target: str) -> str:
    """The name of a latency limit in a resolved budget and its checks, e.g. "latency_ms:pixel-8"."""
    return f"{LATENCY_PREFIX}{target}"


def check_value(rb: ResolvedBudget, name: str, value: float) -> BudgetCheck:
    """Judge one value (e.g. the real file bytes of an artifact) against the budget's `name` limit."""
    limit = rb.limits[name]
    return BudgetCheck(name=name, limit=limit, value=value, ok=value <= limit)


def check(fp: Footprint, rb: ResolvedBudget) -> tuple[BudgetCheck, ...]:
    """Judge a footprint against every size limit of the budget; `bytes` is judged at `rb.precision`.
    Latency limits need a latency, not a footprint: `search` judges them with its predictor."""
    values = {
        "params": fp.params,
        "macs": fp.macs,
        "bytes": fp.bytes_at(rb.precision),
        "peak_memory": fp.peak_activation_bytes,
    }
    return tuple(check_value(rb, name, values[name]) for name in rb.limits if name in values)
