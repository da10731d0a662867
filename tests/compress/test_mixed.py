"""The mixed-precision search: the cheapest set of layers kept in float that holds the score."""

from __future__ import annotations

from pathlib import Path

from edgedistill.compress.mixed import Layer, Trial, assign

# A is the most sensitive layer but large; B and C together do as much for the score, far cheaper.
LAYERS = (Layer("A", 1.0, 1000), Layer("B", 0.9, 10), Layer("C", 0.8, 10))
WEIGHTS = {layer.name: layer.weights for layer in LAYERS}


def _quantized(calls: list) -> callable:
    def quantized(kept: tuple[str, ...]) -> Trial:
        calls.append(tuple(sorted(kept)))
        score = 1.0 if "A" in kept or {"B", "C"} <= set(kept) else 0.5
        size = sum(WEIGHTS.values()) + 3 * sum(WEIGHTS[n] for n in kept)
        return Trial(kept, score, size, Path(f"{'-'.join(kept)}.onnx"))
    return quantized


def test_the_smallest_holding_assignment_wins_over_the_most_sensitive_first():
    calls: list = []
    best, searches = assign(LAYERS, _quantized(calls), lambda score: score >= 0.99)
    assert set(best.kept_float) == {"B", "C"} and best.score == 1.0
    by_order = {s.order: s for s in searches}
    assert by_order["most sensitive first"].kept_float == ("A",)
    assert set(by_order["most sensitive per byte kept"].kept_float) == {"B", "C"}
    assert all(s.holds for s in searches)
    assert len(calls) == len(set(calls))  # an assignment is quantized once, whichever search asks


def test_layers_the_score_holds_without_are_dropped_again():
    # Most sensitive first keeps A, then B, then C before it holds; A, the costliest, then goes.
    layers = (Layer("A", 3.0, 1000), Layer("B", 2.0, 10), Layer("C", 1.0, 10))

    def quantized(kept):
        return Trial(kept, 1.0 if {"B", "C"} <= set(kept) else 0.5, 100 + len(kept), Path("x.onnx"))

    _, searches = assign(layers, quantized, lambda score: score >= 0.99)
    first = next(s for s in searches if s.order == "most sensitive first")
    assert set(first.kept_float) == {"B", "C"} and first.holds


def test_without_a_holding_assignment_the_most_accurate_is_kept():
    def quantized(kept):
        return Trial(kept, 0.1 * len(kept), 10, Path("x.onnx"))

    best, searches = assign(LAYERS, quantized, lambda score: score >= 0.99)
    assert len(best.kept_float) == 3 and not any(s.holds for s in searches)
