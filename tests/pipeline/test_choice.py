"""Which file each target deploys: the fastest that holds the score, the smaller at equal speed,
and why int8 lost where it did."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgedistill.compress import int8_speed
from edgedistill.compress.quantize import Int8Static, quantize
from edgedistill.export.onnx import export_onnx
from edgedistill.pipeline.choice import Rules, choose
from edgedistill.report import markdown, schema
from edgedistill.targets.profile import load_target

from conftest import tiny_cnn

HOST, PI5 = load_target("host-cpu"), load_target("raspberry-pi-5")
RULES = Rules(reference=0.90, tolerance=0.01, quality="accuracy")


def _file(precision: str, size: int, score: float, p50: dict[str, float], source: str = "measured", passed: bool = True) -> schema.Artifact:
    return schema.Artifact(
        format="onnx", precision=precision, path=f"students/s/model.{precision}.onnx", bytes=size,
        metrics={"accuracy": score}, parity_max_abs_err=0.0, parity_tolerance=1e-4, passed=passed,
        latency={t: schema.Latency(p50_ms=v, source=source) for t, v in p50.items()}, targets=tuple(p50), score=score,
    )


def _never(_target, _int8) -> tuple[str, ...]:
    raise AssertionError("explain is asked only when int8 was passed over for speed")


def test_int8_that_holds_and_is_faster_is_deployed():
    files = (_file("fp32", 8000, 0.90, {"host-cpu": 0.068}), _file("int8", 3000, 0.895, {"host-cpu": 0.041}))
    updated, (chosen,) = choose(files, [HOST], RULES, _never)
    assert (chosen.target, chosen.precision) == ("host-cpu", "int8")
    assert "0.041 ms measured vs onnx fp32 0.068 ms" in chosen.reason
    assert [a.deployed_for for a in updated] == [(), ("host-cpu",)]


def test_at_equal_speed_the_smaller_file_ships():
    files = (_file("fp32", 8000, 0.90, {"host-cpu": 0.050}), _file("int8", 3000, 0.90, {"host-cpu": 0.051}))
    _, (chosen,) = choose(files, [HOST], RULES, _never)
    assert chosen.precision == "int8" and "as fast within 5% but 8,000 B against 3,000 B" in chosen.reason


def test_int8_that_loses_the_score_is_passed_over_with_the_fix():
    files = (_file("fp32", 8000, 0.90, {"host-cpu": 0.068}), _file("int8", 3000, 0.87, {"host-cpu": 0.041}))
    _, (chosen,) = choose(files, [HOST], RULES, _never)
    assert chosen.precision == "fp32"
    assert "onnx int8 loses 3.00 points of accuracy, more than the 1.00 allowed" in chosen.reason
    assert "quantize.qat = true" in chosen.reason and chosen.findings == ()


def test_a_faster_file_over_the_bytes_budget_ships_only_when_none_fits():
    fp32, int8 = _file("fp32", 40_000, 0.90, {"host-cpu": 0.050}), _file("int8", 12_000, 0.90, {"host-cpu": 0.080})
    budgeted = Rules(0.90, 0.01, "accuracy", max_bytes=32_000)
    _, (chosen,) = choose((fp32, int8), [HOST], budgeted, _never)
    assert chosen.precision == "int8" and "onnx fp32 (40,000 B) is over the tier's bytes budget (32,000 B)" in chosen.reason
    _, (chosen,) = choose((fp32, int8), [HOST], Rules(0.90, 0.01, "accuracy", max_bytes=10_000), lambda _t, _a: ())
    assert chosen.precision == "fp32"


def test_an_engine_of_unknown_size_ties_by_the_targets_order():
    # A TensorRT row's bytes are its build script's: at equal speed the profile's order decides.
    jetson = load_target("jetson-orin-nano")
    onnx16 = schema.Artifact(**{**_file("fp16", 160_000, 0.90, {"jetson-orin-nano": 0.103}, "predicted").__dict__})
    trt16 = schema.Artifact(**{**onnx16.__dict__, "format": "tensorrt", "path": "students/s/model.fp16.trtexec.sh", "bytes": 387})
    _, (chosen,) = choose((onnx16, trt16), [jetson], RULES, _never)
    assert (chosen.format, chosen.precision) == ("onnx", "fp16")
    assert "as fast within 5%, and jetson-orin-nano lists onnx fp16 first" in chosen.reason


def test_a_file_that_failed_parity_never_ships():
    files = (_file("fp32", 8000, 0.90, {"host-cpu": 0.068}), _file("int8", 3000, 0.90, {"host-cpu": 0.041}, passed=False))
    _, (chosen,) = choose(files, [HOST], RULES, _never)
    assert chosen.precision == "fp32" and "onnx int8 failed its parity check" in chosen.reason


def test_without_a_latency_figure_the_targets_preferred_file_ships():
    # The Pi 5 lists int8 first; with no figure on it the order decides.
    files = (_file("fp32", 8000, 0.90, {}), _file("int8", 3000, 0.90, {}))
    files = tuple(schema.Artifact(**{**a.__dict__, "targets": ("raspberry-pi-5",)}) for a in files)
    _, (chosen,) = choose(files, [PI5], RULES, _never)
    assert chosen.precision == "int8" and "no latency figure on raspberry-pi-5" in chosen.reason


def test_a_measured_figure_outranks_a_predicted_one():
    fp32 = _file("fp32", 8000, 0.90, {"raspberry-pi-5": 0.2}, source="measured")
    int8 = _file("int8", 3000, 0.90, {"raspberry-pi-5": 0.01}, source="predicted")
    _, (chosen,) = choose((fp32, int8), [PI5], RULES, _never)
    assert chosen.precision == "fp32"


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    """A tiny CNN's fp32 ONNX and its int8 QDQ, as the run makes them."""
    folder = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    x = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)
    fp32 = export_onnx(model, x[:2], x[:8], folder / "model.onnx").path
    int8 = quantize(fp32, folder / "model.int8.onnx", (Int8Static(),), x, lambda _out: 1.0, x, 1.0, timing_runs=1).path
    return fp32, int8


def test_a_tier_whose_int8_is_slower_deploys_fp32_there_and_the_report_says_why(real_files):
    fp32_path, int8_path = real_files
    macs = 5_000
    fp32 = _file("fp32", fp32_path.stat().st_size, 0.90, {"host-cpu": 0.057})
    int8 = _file("int8", int8_path.stat().st_size, 0.90, {"host-cpu": 0.126})
    updated, (chosen,) = choose((fp32, int8), [HOST], RULES, lambda t, _a: int8_speed.explain(int8_path, fp32_path, t, macs))
    assert chosen.precision == "fp32" and updated[0].deployed_for == ("host-cpu",)
    assert "onnx fp32 is the fastest that holds the accuracy: 0.057 ms measured vs onnx int8 0.126 ms" == chosen.reason
    # onnxruntime's own optimized graphs: more kernels in int8 (the input's quantize, the output's
    # dequantize) on a model this small.
    assert any("per-kernel overhead" in f and "ship fp32" in f for f in chosen.findings), chosen.findings
    student = _student(updated, (chosen,))
    text = markdown.render(_report(student))
    assert "## Deployed" in text and "Why int8 is slower for s on host-cpu:" in text
    assert chosen.findings[0] in text


def test_explain_finds_the_relu_islands_of_symmetric_int8(tmp_path, real_files):
    from edgedistill.compress.quantize import Int8StaticSymmetric

    fp32_path, _ = real_files
    x = np.random.default_rng(1).normal(size=(32, 1, 8, 8)).astype(np.float32)
    sym = quantize(fp32_path, tmp_path / "sym.onnx", (Int8StaticSymmetric(),), x, lambda _out: 1.0, x, 1.0, timing_runs=1).path
    assert int8_speed.activation_type(sym) == "int8"
    findings = int8_speed.explain(sym, fp32_path, HOST, 10_000_000)
    assert any("Relu" in f and "int8-static" in f for f in findings), findings


def _student(artifacts: tuple[schema.Artifact, ...], deployed: tuple[schema.Deployed, ...]) -> schema.Student:
    return schema.Student(
        name="s", tier="s", generator={"kind": "prune"}, knob=0.5, budget={"limits": {}, "precision": "int8"}, params=100,
        macs=5000, peak_activation_bytes=100, metrics={"accuracy": 0.9}, within_budget=True, checks=(), distill={},
        artifacts=artifacts, deployed=deployed,
    )


def _report(student: schema.Student) -> schema.Report:
    teacher = schema.Teacher("t", 1, 1, 4, 1, {"accuracy": 0.9}, {}, ())
    return schema.Report(
        schema=schema.SCHEMA, created="now", edgedistill_version="0", name="r", task="classification",
        data={"source": "digits", "input_shape": [1, 8, 8], "classes": 10, "train": 1, "val": 1, "calib": 1, "seed": 0},
        teacher=teacher, students=(student,), failures=(),
    )
