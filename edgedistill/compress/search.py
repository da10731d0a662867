"""Fit a generator's knob to a budget: the largest student for which every limit holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from pydantic import BaseModel
from torch import nn

from edgedistill.compress.budget import (
    LATENCY_PREFIX,
    BudgetCheck,
    Footprint,
    ResolvedBudget,
    check,
    check_value,
    latency_name,
    measure,
)
from edgedistill.compress.students import StudentHandler, handler_for
from edgedistill.errors import UserError


@dataclass(frozen=True)
class Candidate:
    """A student the search chose, with its footprint, its budget checks and the students it built."""

    model: nn.Module
    knob: float
    footprint: Footprint
    checks: tuple[BudgetCheck, ...]
    evaluations: int

    @property
    def within_budget(self) -> bool:
        """Whether every limit holds."""
        return all(c.ok for c in self.checks)

    @property
    def binding(self) -> BudgetCheck:
        """The check with the least headroom: the budget that sized this student, and by how much."""
        return min(self.checks, key=lambda c: c.margin)


def search(
    spec: BaseModel,
    teacher: nn.Module,
    input_shape: tuple[int, ...],
    budget: ResolvedBudget,
    tolerance: float = 0.01,
    max_steps: int = 20,
    file_bytes: Callable[[nn.Module], int] | None = None,
    max_rounds: int = 4,
    latency: Callable[[nn.Module], dict[str, float]] | None = None,
    input_dtype: torch.dtype = torch.float32,
) -> Candidate:
    """The largest student that meets every limit of `budget`; `input_dtype` is the input's type
    (torch.int64 for token ids).

    Without `file_bytes`, the `bytes` limit is judged on the weights alone (`Footprint.bytes_at`).
    With it, `file_bytes(model)` gives the real size of the deployed file (weights plus format,
    scales and graph); while that breaks the limit, the overhead it shows is taken off the weights'
    share and the knob searched again, up to `max_rounds` times.

    Latency limits are judged with `latency(model)`: target name -> predicted p50 ms. MACs alone
    never stand in for latency: a student with fewer MACs is not always faster on a device.
    """
    found = _bisect(spec, teacher, input_shape, budget, tolerance, max_steps, latency, input_dtype)
    if file_bytes is None or "bytes" not in budget.limits:
        return found
    limit, evaluations = budget.limits["bytes"], found.evaluations
    for _ in range(max_rounds):
        real = file_bytes(found.model)
        if real <= limit:
            checks = tuple(check_value(budget, "bytes", real) if c.name == "bytes" else c for c in found.checks)
            return replace(found, checks=checks, evaluations=evaluations)
        overhead = real - found.footprint.bytes_at(budget.precision)
        if overhead >= limit:
            raise UserError(
                f"budget bytes <= {limit:,.0f} cannot be met: the {budget.precision} file's format alone takes "
                f"about {overhead:,.0f} bytes; raise the budget"
            )
        tighter = replace(budget, limits={**budget.limits, "bytes": min(limit - overhead, found.footprint.bytes_at(budget.precision) - 1)})
        found = _bisect(spec, teacher, input_shape, tighter, tolerance, max_steps, latency, input_dtype)
        evaluations += found.evaluations
    raise UserError(
        f"budget bytes <= {limit:,.0f} was still broken by the real {budget.precision} file after {max_rounds} "
        f"rounds of search: raise the budget"
    )


def _bisect(
    spec: BaseModel,
    teacher: nn.Module,
    input_shape: tuple[int, ...],
    budget: ResolvedBudget,
    tolerance: float,
    max_steps: int,
    latency: Callable[[nn.Module], dict[str, float]] | None,
    input_dtype: torch.dtype,
) -> Candidate:
    """Bisect the generator's knob for the largest student that meets every limit of `budget`.

    The footprint grows with the knob (in steps, as channels are whole), so "fits" is a monotone
    predicate and bisection finds its edge within `tolerance` of the knob, or after `max_steps`
    bisection steps. Raises UserError when even the smallest knob breaks a limit.
    """
    handler = handler_for(spec)
    low, high = handler.knob_range(spec)
    evaluations = 0

    def build(knob: float) -> Candidate:
        nonlocal evaluations
        evaluations += 1
        model = handler.make(spec, teacher, knob, input_shape)
        fp = measure(model, input_shape, input_dtype)
        checks = check(fp, budget)
        if latency is not None and any(name.startswith(LATENCY_PREFIX) for name in budget.limits):
            checks += tuple(check_value(budget, latency_name(t), ms) for t, ms in latency(model).items())
        return Candidate(model=model, knob=knob, footprint=fp, checks=checks, evaluations=evaluations)

    largest = build(high)
    if largest.within_budget:
        return largest
    best = build(low) if low < high else largest
    if not best.within_budget:
        raise _unreachable(best, spec, handler, budget)
    too_big = high
    for _ in range(max_steps):
        if too_big - best.knob <= tolerance:
            break
        trial = build((best.knob + too_big) / 2)
        if trial.within_budget:
            best = trial
        else:
            too_big = trial.knob
    return Candidate(best.model, best.knob, best.footprint, best.checks, evaluations)


_UNITS = {"params": "params", "macs": "MACs", "peak_memory": "bytes of peak activation memory"}


def _unreachable(smallest: Candidate, spec: BaseModel, handler: StudentHandler, budget: ResolvedBudget) -> UserError:
    broken = min((c for c in smallest.checks if not c.ok), key=lambda c: c.margin)
    if broken.name.startswith(LATENCY_PREFIX):
        target = broken.name.removeprefix(LATENCY_PREFIX)
        return UserError(
            f"budget latency on {target} <= {broken.limit:g} ms cannot be met: the smallest student the {spec.kind} "
            f"generator makes is predicted at {broken.value:.3g} ms there; raise the budget or {handler.shrink_hint}"
        )
    unit = _UNITS.get(broken.name, f"bytes at {budget.precision}")
    # Bytes read with their unit on both sides, and what they count: at int8 a byte is a parameter.
    limit = f"{broken.limit:,.0f} B" if broken.name in ("bytes", "peak_memory") else f"{broken.limit:,.0f}"
    has = f"{broken.value:,.0f} {unit}"
    if broken.name == "bytes":
        has += f" ({smallest.footprint.params:,} parameters)"
    return UserError(
        f"budget {broken.name} <= {limit} cannot be met: the smallest student the {spec.kind} generator "
        f"makes has {has}; raise the budget or {handler.shrink_hint}"
    )
