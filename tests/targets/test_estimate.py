"""predict's roofline, calibration fitting and the calibration cache."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edgedistill.errors import UserError
from edgedistill.targets import calibration
from edgedistill.targets.calibration import fit
from edgedistill.targets.cost import GraphCost, NodeCost
from edgedistill.targets.estimate import Calibration, predict

TARGET = SimpleNamespace(
    name="test-cpu",
    kind="cpu",
    specs=SimpleNamespace(peak_gflops={"fp32": 100.0, "fp16": 100.0, "int8": 400.0}, bandwidth_gbs=10.0, threads=2),
)


def _graph(*nodes: tuple[str, int, int, str]) -> GraphCost:
    """A graph of (op, flops, bytes moved, precision) nodes."""
    return GraphCost(
        nodes=tuple(NodeCost(f"n{i}", op, flops, prec, moved, 0) for i, (op, flops, moved, prec) in enumerate(nodes)),
        peak_activation_bytes=0,
        weight_bytes=0,
        batch=1,
    )


def _calibration(**changes: object) -> Calibration:
    values = dict(
        target="test-cpu",
        efficiency={"conv": 0.5, "gemm": 0.4, "elementwise": 0.1, "other": 0.2},
        overhead_ms=0.002,
        bandwidth_gbs=40.0,
        models=("a", "b"),
        median_abs_error=0.1,
        worst_ratio=1.3,
        created="2026-01-01T00:00:00+00:00",
    )
    values.update(changes)
    return Calibration(**values)


def test_predict_is_monotone_in_flops_when_compute_bound() -> None:
    times = [predict(_graph(("Conv", f, 1000, "fp32")), TARGET).p50_ms for f in (10**6, 10**7, 10**8)]
    assert times[0] < times[1] < times[2]
    # Compute-bound: 1e8 flops / (100 GFLOP/s · 0.5) = 2 ms, plus 2 µs of dispatch.
    assert times[2] == pytest.approx(1e8 / (100e9 * 0.5) * 1e3 + 0.002)


def test_roofline_takes_memory_time_when_bytes_dominate() -> None:
    moved = 10**8  # 100 MB at 10 GB/s = 10 ms, far above 1e3 flops of compute
    p = predict(_graph(("Add", 1000, moved, "fp32")), TARGET)
    assert p.p50_ms == pytest.approx(moved / 10e9 * 1e3 + 0.002)
    # More flops that still fit under the memory time change nothing.
    assert predict(_graph(("Add", 10**6, moved, "fp32")), TARGET).p50_ms == p.p50_ms


def test_int8_uses_the_int8_peak_and_fused_nodes_cost_nothing() -> None:
    fp32 = predict(_graph(("Conv", 10**8, 0, "fp32")), TARGET).p50_ms
    int8 = predict(_graph(("Conv", 10**8, 0, "int8")), TARGET).p50_ms
    assert int8 == pytest.approx((fp32 - 0.002) / 4 + 0.002)
    fused = GraphCost((NodeCost("r", "Relu", 10**9, "fp32", 10**9, 10**9, fused=True),), 0, 0, 1)
    assert predict(fused, TARGET).p50_ms == 0.0


def test_prediction_is_labelled_and_banded() -> None:
    p = predict(_graph(("Gemm", 10**7, 100, "fp32")), TARGET)
    assert (p.source, p.profile, p.calibration, p.error_band) == ("predicted", "test-cpu", None, 2.0)
    assert p.low_ms == pytest.approx(p.p50_ms / 3) and p.high_ms == pytest.approx(p.p50_ms * 3)
    cal = _calibration()
    q = predict(_graph(("Gemm", 10**7, 100, "fp32")), TARGET, cal)
    assert q.calibration == "test-cpu 2026-01-01T00:00:00+00:00"
    assert q.error_band == pytest.approx(0.3)
    assert q.p50_ms == pytest.approx(1e7 / (100e9 * 0.4) * 1e3 + 0.002)


def test_predict_rejects_a_foreign_calibration_and_a_target_without_specs() -> None:
    with pytest.raises(UserError, match="calibrate"):
        predict(_graph(("Conv", 1, 1, "fp32")), TARGET, _calibration(target="other-board"))
    with pytest.raises(UserError, match="specs"):
        predict(_graph(("Conv", 1, 1, "fp32")), SimpleNamespace(name="bare", kind="cpu", specs=None))


def test_fit_recovers_parameters_from_synthetic_measurements() -> None:
    truth = _calibration()
    # Each family pins one parameter: compute-bound convs, int8 products and softmaxes, memory-
    # bound adds, and graphs of tiny nodes (overhead alone).
    graphs = (
        [_graph(*[("Conv", 10**6 * k, 10**3, "fp32")] * k) for k in range(1, 4)]
        + [_graph(*[("MatMul", 3 * 10**6 * k, 10**3, "int8")] * k) for k in range(1, 4)]
        + [_graph(("Softmax", 10**6 * k, 100, "fp32")) for k in range(1, 4)]
        + [_graph(("Add", 10, 10**6 * k, "fp32")) for k in range(1, 4)]
        + [_graph(*[("Relu", 1, 100, "fp32")] * k) for k in (1, 5)]
    )
    measured = [predict(g, TARGET, truth).p50_ms for g in graphs]
    got = fit(graphs, measured, TARGET, models=tuple(f"m{i}" for i in range(len(graphs))))
    for op_class in ("conv", "gemm", "other"):
        assert got.efficiency[op_class] == pytest.approx(truth.efficiency[op_class], rel=0.1)
    assert got.overhead_ms == pytest.approx(truth.overhead_ms, rel=0.1)
    assert got.bandwidth_gbs == pytest.approx(truth.bandwidth_gbs, rel=0.1)
    assert got.median_abs_error < 0.02 and got.worst_ratio < 1.05
    assert got.models[0] == "m0"


def test_fit_rejects_mismatched_or_bad_measurements() -> None:
    g = _graph(("Conv", 10**6, 10, "fp32"))
    with pytest.raises(UserError):
        fit([g, g], [1.0], TARGET)
    with pytest.raises(UserError):
        fit([g, g], [1.0, -1.0], TARGET)


def test_save_load_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert calibration.load("test-cpu") is None
    cal = _calibration()
    path = calibration.save(cal)
    assert path == tmp_path / "edgedistill" / "calibration" / "test-cpu.json"
    assert calibration.load("test-cpu") == cal
    path.write_text("{not json")
    with pytest.raises(UserError, match="calibrate again"):
        calibration.load("test-cpu")
    with pytest.raises(UserError):
        calibration.cache_path("../escape")
