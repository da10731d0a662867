"""Mixed precision: which weighted layers of an int8 model stay in float when all-int8 loses the
score. Each layer's sensitivity is the output error when it alone is int8. Its cost in float is
the weight bytes it keeps (3 bytes per weight more than int8). Two orders are searched:
- the most sensitive first (what edgedistill did before);
- the most sensitive per byte kept.

Each search keeps layers in float, one more at a time in its order, until the score holds. It
then drops again every layer the score holds without, costliest first. Every assignment is
quantized and scored for real. The smallest file that holds the score wins; when none holds,
the most accurate one does.

Per-layer fp16 is not among the choices: onnxruntime's CPU provider has no fp16 Conv or Gemm
kernels on x86, so a mixed int8/fp16 graph cannot be scored or timed as a device would run it
here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

FP32_BYTES_PER_WEIGHT_OVER_INT8 = 3


@dataclass(frozen=True)
class Layer:
    """One weighted node: its output error when only it is int8, and its weights."""

    name: str
    error: float
    weights: int

    @property
    def float_cost(self) -> int:
        """Bytes its weights take in float beyond their int8 form."""
        return FP32_BYTES_PER_WEIGHT_OVER_INT8 * self.weights


@dataclass(frozen=True)
class Trial:
    """One assignment quantized and scored: the layers kept in float, its score and file size."""

    kept_float: tuple[str, ...]
    score: float
    bytes: int
    path: Path


@dataclass(frozen=True)
class Assignment:
    """A search's outcome, as the report keeps it (without the scratch file)."""

    order: str
    kept_float: tuple[str, ...]
    score: float
    bytes: int
    holds: bool


# kept-in-float names -> the model quantized with them kept, scored
Quantizer = Callable[[tuple[str, ...]], Trial]

ORDERS: dict[str, Callable[[Layer], tuple[float, str]]] = {
    # Ties broken by name so the search is the same on every run.
    "most sensitive first": lambda layer: (-layer.error, layer.name),
    "most sensitive per byte kept": lambda layer: (-layer.error / max(1, layer.float_cost), layer.name),
}


def assign(layers: Sequence[Layer], quantized: Quantizer, holds: Callable[[float], bool]) -> tuple[Trial, tuple[Assignment, ...]]:
    """The cheapest assignment found that holds (by `holds(score)`), or the most accurate one
    when none does, and the outcome of each order's search."""
    outcomes: list[tuple[str, Trial]] = []
    seen: dict[tuple[str, ...], Trial] = {}

    def tried(kept: tuple[str, ...]) -> Trial:
        key = tuple(sorted(kept))
        if key not in seen:
            seen[key] = quantized(kept)
        return seen[key]

    for order, rank in ORDERS.items():
        ranked = sorted(layers, key=rank)
        outcomes.append((order, _search(ranked, tried, holds)))
    holding = [t for _, t in outcomes if holds(t.score)]
    best = min(holding, key=lambda t: (t.bytes, len(t.kept_float))) if holding else max((t for _, t in outcomes), key=lambda t: t.score)
    return best, tuple(Assignment(o, t.kept_float, t.score, t.bytes, holds(t.score)) for o, t in outcomes)


def _search(ranked: list[Layer], tried: Callable[[tuple[str, ...]], Trial], holds: Callable[[float], bool]) -> Trial:
    """Keep layers in float in `ranked` order until the score holds, then drop again each one the
    score holds without, costliest first. Without a holding assignment, the most accurate seen."""
    best: Trial | None = None
    kept: tuple[str, ...] = ()
    for layer in ranked:
        kept = (*kept, layer.name)
        trial = tried(kept)
        if best is None or trial.score > best.score:
            best = trial
        if holds(trial.score):
            return _pruned(trial, ranked, tried, holds)
    assert best is not None, "no weighted layers to keep in float"
    return best


def _pruned(trial: Trial, ranked: list[Layer], tried: Callable[[tuple[str, ...]], Trial], holds: Callable[[float], bool]) -> Trial:
    cost = {layer.name: layer.float_cost for layer in ranked}
    for name in sorted(trial.kept_float, key=lambda n: (-cost[n], n)):
        if len(trial.kept_float) == 1:
            break
        fewer = tried(tuple(n for n in trial.kept_float if n != name))
        if holds(fewer.score):
            trial = fewer
    return trial
