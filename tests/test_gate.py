import copy
import dataclasses
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import tiny_run_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgedistill import gate as g
from edgedistill.cli import app
from edgedistill.compress import budget as budgets
from edgedistill.config import parse_config
from edgedistill.errors import UserError
from edgedistill.pipeline import entries
from edgedistill.pipeline import run as run_pipeline
from edgedistill.report import schema

runner = CliRunner()


RPI = "raspberry-pi-5"
RPI_LATENCY = f"latency_ms:{RPI}"


def _artifact(fmt: str, precision: str, size: int, passed: bool = True, latency: dict | None = None, path: str = "") -> schema.Artifact:
    """A file; `latency` (target -> figure) also makes it a file for those targets."""
    suffix = {"onnx": "onnx", "ort": "ort", "tensorrt": "engine"}[fmt]
    return schema.Artifact(
        format=fmt, precision=precision, path=path or f"students/fifth/model.{precision}.{suffix}", bytes=size,
        metrics={"accuracy": 0.9}, parity_max_abs_err=1e-6 if passed else 0.5, parity_tolerance=1e-4, passed=passed,
        latency=latency or {}, targets=tuple(latency or ()),
    )


def _measured(p50: float, runner: str = "ssh") -> schema.Latency:
    return schema.Latency(p50_ms=p50, source="measured", runner=runner, runtime="onnxruntime 1.20", device="Cortex-A76", runs=100)


def _predicted(p50: float, calibration: str | None = None) -> schema.Latency:
    return schema.Latency(p50_ms=p50, source="predicted", profile=RPI, calibration=calibration, error_band=0.5)


def _student(
    name: str = "fifth", limits: dict | None = None, artifacts=(), precision: str = "int8",
    params: int = 9_000, macs: int = 2_000_000, peak: int = 4_096,
) -> schema.Student:
    """A student as the run writes it: its checks made by the run's own rule (`entries.checks`,
    after the search's `budget.check`) from its figures and files, so the gate must agree with them."""
    limits = {"params": 10_000.0} if limits is None else limits
    artifacts = tuple(artifacts) or (_artifact("onnx", "fp32", 36_000), _artifact("onnx", "int8", 12_000))
    resolved = budgets.ResolvedBudget(dict(limits), precision)  # type: ignore[arg-type]
    searched = budgets.check(budgets.Footprint(params, macs, 4 * params, peak), resolved) + tuple(
        budgets.BudgetCheck(n, limit, math.nan, False) for n, limit in limits.items() if n.startswith(budgets.LATENCY_PREFIX)
    )
    checks = entries.checks(searched, resolved, artifacts)
    return schema.Student(
        name=name, tier=name, generator={"kind": "prune"}, knob=0.3,
        budget={"spec": _spec(limits, precision), "limits": dict(limits), "precision": precision},
        params=params, macs=macs, peak_activation_bytes=peak, metrics={"accuracy": 0.9},
        within_budget=all(c.ok for c in checks), checks=checks, distill={}, artifacts=artifacts,
    )


def _spec(limits: dict, precision: str) -> dict:
    """The tier's budget as the config wrote it, in absolute values: it resolves to `limits`."""
    latency = {n.removeprefix(budgets.LATENCY_PREFIX): v for n, v in limits.items() if n.startswith(budgets.LATENCY_PREFIX)}
    sizes = {n: v for n, v in limits.items() if not n.startswith(budgets.LATENCY_PREFIX)}
    return {**sizes, **({"latency_ms": latency} if latency else {}), "precision": precision}


def _timed(name: str = "fifth", limits: dict | None = None, *figures: dict) -> schema.Student:
    """A student whose fp32 and int8 ONNX files have the given latencies (target -> figure)."""
    fp32, int8 = (figures + ({}, {}))[:2]
    artifacts = (_artifact("onnx", "fp32", 36_000, latency=fp32), _artifact("onnx", "int8", 12_000, latency=int8))
    return _student(name, limits, artifacts)


def _edit_check(student: schema.Student, name: str, **fields) -> schema.Student:
    """The student with the fields of its `name` check changed, as a hand edit of the report would."""
    checks = tuple(dataclasses.replace(c, **fields) if c.name == name else c for c in student.checks)
    return dataclasses.replace(student, checks=checks)


def make_report(*students: schema.Student) -> schema.Report:
    teacher = schema.Teacher(
        source="conftest:tiny_cnn", params=100_000, macs=20_000_000, bytes_fp32=400_000, peak_activation_bytes=16_384,
        metrics={"accuracy": 0.95}, latency={}, artifacts=(),
    )
    return schema.Report(
        schema=schema.SCHEMA, created="2024-01-01T00:00:00+00:00", edgedistill_version="0.1.0", name="demo",
        task="classification", data={}, teacher=teacher,
        students=students or (_student("half"), _student("fifth")), failures=(),
    )


def _rich_report() -> schema.Report:
    """Two students; fifth has every kind of budget, its int8 file measured on the Pi, and all hold."""
    limits = {"params": 10_000.0, "macs": 3e6, "bytes": 32_000.0, "peak_memory": 8_192.0, RPI_LATENCY: 1.0}
    return make_report(_student("half"), _timed("fifth", limits, {}, {RPI: _measured(0.8)}))


def _only(result: g.GateResult, student: str, budget: str) -> g.Verdict:
    (verdict,) = [v for v in result.verdicts if v.student == student and v.budget == budget]
    return verdict


def _write(tmp_path: Path, report: schema.Report | dict) -> Path:
    path = tmp_path / "report.json"
    path.write_text(schema.dumps(report) if isinstance(report, schema.Report) else json.dumps(report))
    return path


def _invoke(path: Path, *args: str):
    """`edgedistill gate PATH ARGS`: never a traceback, and the report is as it was (the gate only reads)."""
    before = path.read_bytes() if path.is_file() else None
    result = runner.invoke(app, ["gate", str(path), *args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert (path.read_bytes() if path.is_file() else None) == before
    return result


def _error_line(result) -> str:
    """The one line of a refusal: exit 2, one "error:" line on stderr."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def _broken_lines(result) -> list[str]:
    """The BROKEN lines of a judged report (exit 0 or 1), checking the summary ends the output."""
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("gate passed" if result.exit_code == 0 else "gate failed"), result.output
    assert all(line.startswith("BROKEN ") for line in lines[:-1]), result.output
    return lines[:-1]


# --- judging the tier's budgets ------------------------------------------------------------------------


def test_every_budget_of_every_student_holds():
    result = g.gate(make_report())
    assert result.passed and not result.broken
    assert [(v.student, v.budget) for v in result.verdicts] == [("half", "params"), ("fifth", "params")]
    assert result.verdicts[0] == g.Verdict("half", "half", "params", 10_000.0, 9_000.0, True, "student in PyTorch")


def test_a_report_as_the_run_writes_it_agrees_with_the_gate_on_every_kind_of_budget():
    result = g.gate(_rich_report())
    assert result.passed, [v.describe() for v in result.broken]
    fifth = {v.budget: (v.value, v.source) for v in result.verdicts if v.student == "fifth"}
    assert fifth == {
        "params": (9_000.0, "student in PyTorch"), "macs": (2e6, "student in PyTorch"),
        "bytes": (12_000.0, "largest int8 file: students/fifth/model.int8.onnx"),
        "peak_memory": (4_096.0, "student in PyTorch"),
        RPI_LATENCY: (0.8, "measured over ssh on raspberry-pi-5 (p50 of students/fifth/model.int8.onnx)"),
    }


def test_a_broken_bytes_budget_says_which_file():
    artifacts = (_artifact("onnx", "fp32", 36_000), _artifact("onnx", "int8", 12_000), _artifact("ort", "int8", 33_120))
    student = _student(limits={"params": 10_000.0, "bytes": 32_000.0}, artifacts=artifacts)
    (broken,) = g.gate(make_report(student)).broken
    source = "largest int8 file: students/fifth/model.int8.ort"
    assert (broken.budget, broken.limit, broken.value, broken.source) == ("bytes", 32_000.0, 33_120.0, source)
    assert broken.describe() == f"value 33,120 > limit 32,000 (source: {source})"


@pytest.mark.parametrize(
    "artifacts, value, source",
    [
        ((_artifact("onnx", "fp32", 36_000),), 9_000.0, "estimate at int8 (no int8 artifact)"),
        ((_artifact("onnx", "fp32", 36_000), _artifact("tensorrt", "int8", 90_000)), 9_000.0, "estimate at int8 (no int8 artifact)"),
        ((_artifact("onnx", "int8", 12_000), _artifact("tensorrt", "int8", 90_000)), 12_000.0, "largest int8 file: students/fifth/model.int8.onnx"),
    ],
)
def test_bytes_without_a_file_to_size_are_the_weights_estimate_as_in_the_run(artifacts, value, source):
    student = _student(limits={"bytes": 20_000.0}, artifacts=artifacts)
    (verdict,) = g.gate(make_report(student)).verdicts
    assert (verdict.ok, verdict.value, verdict.source) == (True, value, source)


def test_bytes_without_a_file_take_a_probe_files_size_but_never_less_than_the_weights():
    student = _student(limits={"bytes": 20_000.0}, artifacts=(_artifact("onnx", "fp32", 36_000),))
    probed = _edit_check(student, "bytes", value=9_500.0)  # the search sized a probe file: not kept in the report
    (verdict,) = g.gate(make_report(probed)).verdicts
    assert (verdict.ok, verdict.value) == (True, 9_500.0)
    shrunk = _edit_check(student, "bytes", value=5_000.0)  # 9,000 parameters take 9,000 bytes at int8
    (verdict,) = g.gate(make_report(shrunk)).verdicts
    assert (verdict.ok, verdict.value) == (False, 9_000.0)
    assert "the report's check says 5,000 but its figures say 9,000" in verdict.source


def test_over_budget_by_its_figures_is_only_that_budget():
    student = _student(params=11_000)
    assert not student.within_budget
    assert [v.budget for v in g.gate(make_report(student)).broken] == ["params"]


def test_a_failed_parity_check_is_broken():
    student = _student(artifacts=(_artifact("onnx", "fp32", 36_000, passed=False), _artifact("onnx", "int8", 12_000)))
    result = g.gate(make_report(student))
    parity = _only(result, "fifth", "parity")
    assert (parity.ok, parity.limit, parity.value) == (False, 1e-4, 0.5)
    assert "students/fifth/model.fp32.onnx" in parity.source
    assert parity.describe().startswith("value 0.5 > limit 0.0001")


# --- a report whose checks disagree with its figures ---------------------------------------------------


@pytest.mark.parametrize(
    "edit, budget, says",
    [
        (lambda s: dataclasses.replace(s, params=12_000), "params", "the report's check says 9,000 but its figures say 12,000"),
        (lambda s: _edit_check(s, "params", value=5_000.0), "params", "the report's check says 5,000 but its figures say 9,000"),
        (lambda s: _edit_check(s, "params", ok=False), "params", "the report's check says it is broken, yet its figure holds"),
        (lambda s: _edit_check(s, "params", limit=20_000.0), "params", "the report's check has limit 20,000 but its budget says 10,000"),
        (lambda s: dataclasses.replace(s, checks=()), "params", "the report has no check of it"),
    ],
)
def test_a_check_that_disagrees_with_the_figures_is_broken_even_where_the_figure_holds(edit, budget, says):
    student = edit(_student())
    verdict = _only(g.gate(make_report(student)), "fifth", budget)
    assert not verdict.ok and says in verdict.source and verdict.source.endswith("rerun `edgedistill run` to write it again")
    assert verdict.value == student.params


def test_a_check_edited_to_pass_fails_on_the_figures():
    over = _student(params=12_000)
    hidden = dataclasses.replace(_edit_check(over, "params", value=9_000.0, ok=True, margin=0.1), within_budget=True)
    result = g.gate(make_report(hidden))
    params = _only(result, "fifth", "params")
    assert (params.ok, params.value) == (False, 12_000.0)
    assert "the report's check says 9,000 but its figures say 12,000" in params.source
    flag = _only(result, "fifth", "within_budget")
    assert not flag.ok and "marks the student within budget, yet its figures break params" in flag.source


def test_a_check_of_no_budget_of_the_tier_is_broken():
    student = _student()
    student = dataclasses.replace(student, budget={**student.budget, "limits": {}})
    (verdict,) = g.gate(make_report(student)).verdicts
    assert not verdict.ok and "its budget sets no such limit" in verdict.source


def test_over_budget_flag_with_figures_that_hold_is_broken():
    student = dataclasses.replace(_student(), within_budget=False)
    result = g.gate(make_report(student))
    assert [v.budget for v in result.broken] == ["within_budget"]
    assert result.broken[0].value is None and "over budget, yet its figures hold every budget" in result.broken[0].source
    assert result.broken[0].describe().startswith("no value")


def test_a_latency_check_that_disagrees_with_the_artifacts_is_broken_in_either_mode():
    student = _timed("fifth", {RPI_LATENCY: 1.0}, {}, {RPI: _measured(0.8)})
    stale = _edit_check(student, RPI_LATENCY, value=0.1)
    report = make_report(stale)
    for verdict in (_latency(report, "fifth.latency_ms.raspberry-pi-5=0.5"), _only(g.gate(report), "fifth", RPI_LATENCY)):
        assert (verdict.ok, verdict.value) == (False, 0.8)
        assert "the report's check says 0.1 but its figures say 0.8" in verdict.source


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda d: d["students"][1].update(params=12_000), id="params raised"),
        pytest.param(lambda d: d["students"][1].update(params=5_000), id="params lowered"),
        pytest.param(lambda d: d["students"][1]["checks"][0].update(value=5_000), id="check value lowered"),
        pytest.param(lambda d: d["students"][1]["checks"][0].update(value=12_000, ok=False), id="check value raised"),
        pytest.param(lambda d: d["students"][1]["artifacts"][1].update(bytes=40_000), id="file bytes raised"),
        pytest.param(lambda d: d["students"][1]["checks"][2].update(value=1_000), id="bytes check lowered"),
        pytest.param(lambda d: d["students"][1]["checks"][4].update(value=0.1), id="latency check lowered"),
    ],
)
def test_an_edited_report_gets_the_same_verdict_by_default_and_under_the_tiers_own_budgets(tmp_path, edit):
    data = json.loads(schema.dumps(_rich_report()))
    edit(data)
    path = _write(tmp_path, data)
    default = _invoke(path)
    same_limits = ["fifth.params=10000", "fifth.macs=3M", "fifth.bytes=32KB", "fifth.peak_memory=8192", "fifth.latency_ms.raspberry-pi-5=1"]
    overridden = _invoke(path, *(arg for text in same_limits for arg in ("--budget", text)))
    assert default.exit_code == overridden.exit_code == 1, default.output
    assert _broken_lines(default) == _broken_lines(overridden)
    assert any("the report was edited or damaged" in line for line in _broken_lines(default))
    report = g.load_report(path)
    assert g.gate(report) == g.gate(report, [g.parse_override(t) for t in same_limits])


# --- budgets from the command line --------------------------------------------------------------------


def test_an_absolute_override_replaces_the_tiers_limit():
    result = g.gate(make_report(), [g.parse_override("fifth.params=8000")])
    assert _only(result, "half", "params").ok
    fifth = _only(result, "fifth", "params")
    assert (fifth.ok, fifth.limit, fifth.value, fifth.source) == (False, 8_000.0, 9_000.0, "student in PyTorch")


def test_an_override_loosens_a_broken_budget_of_an_honest_report():
    report = make_report(_student(params=11_000))
    assert not g.gate(report).passed
    assert g.gate(report, [g.parse_override("fifth.params=12000")]).passed


def test_a_relative_override_is_a_share_of_the_teachers_figure_for_every_tier():
    result = g.gate(make_report(), [g.parse_override("*.macs=5%")])
    macs = [v for v in result.verdicts if v.budget == "macs"]
    assert [v.student for v in macs] == ["half", "fifth"]
    assert all(v.limit == pytest.approx(1_000_000) and v.value == 2_000_000 and not v.ok for v in macs)
    assert all(v.ok for v in result.verdicts if v.budget == "params")


def test_peak_memory_override_is_judged_on_the_students_activations():
    result = g.gate(make_report(), [g.parse_override("half.peak_memory=4KiB")])
    assert _only(result, "half", "peak_memory").ok  # 4,096 bytes: exactly the limit holds
    assert [v.budget for v in result.verdicts if v.student == "fifth"] == ["params"]


def test_a_tier_override_beats_a_wildcard_whatever_the_order():
    overrides = [g.parse_override("fifth.params=20000"), g.parse_override("*.params=1%")]
    result = g.gate(make_report(), overrides)
    assert _only(result, "fifth", "params").limit == 20_000 and _only(result, "half", "params").limit == 1_000


def test_bytes_override_is_the_largest_file_at_the_tiers_precision_but_never_a_tensorrt_engine():
    artifacts = (
        _artifact("onnx", "fp32", 36_000), _artifact("onnx", "int8", 12_000),
        _artifact("ort", "int8", 33_120), _artifact("tensorrt", "int8", 90_000),
    )
    result = g.gate(make_report(_student(artifacts=artifacts)), [g.parse_override("fifth.bytes=32KB")])
    verdict = _only(result, "fifth", "bytes")
    assert (verdict.ok, verdict.limit, verdict.value) == (False, 32_000.0, 33_120.0)
    assert verdict.source == "largest int8 file: students/fifth/model.int8.ort"


def test_bytes_override_at_fp16_and_relative_to_the_teachers_fp32_bytes():
    artifacts = (_artifact("onnx", "fp32", 36_000), _artifact("onnx", "fp16", 18_000))
    report = make_report(_student(artifacts=artifacts, precision="fp16"))
    verdict = _only(g.gate(report, [g.parse_override("fifth.bytes=5%")]), "fifth", "bytes")
    assert (verdict.ok, verdict.limit, verdict.value) == (True, 20_000.0, 18_000.0)
    assert verdict.source == "largest fp16 file: students/fifth/model.fp16.onnx"


def test_bytes_override_without_a_file_is_judged_as_the_tiers_budget_would_be():
    fp32_only = (_artifact("onnx", "fp32", 36_000),)
    with_check = make_report(_student(limits={"bytes": 20_000.0}, artifacts=fp32_only))
    without = make_report(_student(artifacts=fp32_only))
    for report in (with_check, without):
        verdict = _only(g.gate(report, [g.parse_override("fifth.bytes=8000")]), "fifth", "bytes")
        assert (verdict.ok, verdict.value, verdict.source) == (False, 9_000.0, "estimate at int8 (no int8 artifact)")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fifth.params", "not TIER.NAME=VALUE"),
        ("params=100", "not TIER.NAME=VALUE"),
        ("fifth.params=", "not TIER.NAME=VALUE"),
        ("fifth.latency=3ms", "'latency', which is unknown"),
        ("fifth.params=64KB", "not a valid count limit"),
        ("fifth.bytes=-3", "not a valid bytes limit"),
        ("fifth.latency_ms.raspberry-pi-5=abc", "'abc' is not a latency: give positive milliseconds"),
        ("fifth.latency_ms.raspberry-pi-5=-1", "'-1' is not a latency"),
        ("fifth.latency_ms.raspberry-pi-5=0", "'0' is not a latency"),
        ("fifth.latency_ms.raspberry-pi-5=nan", "'nan' is not a latency"),
        ("fifth.latency_ms.raspberry-pi-5=30%", "'30%' is not a latency"),
        ("fifth.latency_ms=5", "names no target: a latency budget is TIER.latency_ms.TARGET=MS"),
        ("fifth.latency_ms.=5", "not TIER.latency_ms.TARGET=MS"),
        ("latency_ms.raspberry-pi-5=5", "not TIER.latency_ms.TARGET=MS"),
        ("fifth.latency_ms.raspberry-pi-5=", "not TIER.latency_ms.TARGET=MS"),
    ],
)
def test_bad_override_is_a_user_error(text, expected):
    with pytest.raises(UserError, match=expected):
        g.parse_override(text)


def test_tier_names_with_dots_parse():
    assert g.parse_override("v1.2.bytes=64KiB") == g.BudgetOverride("v1.2", "bytes", g.Limit(65_536.0, relative=False))


@pytest.mark.parametrize(
    "text, tier, target, ms",
    [
        ("fifth.latency_ms.raspberry-pi-5=5", "fifth", RPI, 5.0),
        ("*.latency_ms.raspberry-pi-5=0.2", "*", RPI, 0.2),
        ("v1.2.latency_ms.rpi.lan=1.5ms", "v1.2", "rpi.lan", 1.5),
    ],
)
def test_latency_overrides_parse_with_dots_in_tier_and_target(text, tier, target, ms):
    override = g.parse_override(text)
    assert override == g.BudgetOverride(tier, f"latency_ms:{target}", g.Limit(ms, relative=False))
    assert override.label == text.partition("=")[0]


def test_override_of_an_unknown_tier_or_a_zero_teacher_figure_is_a_user_error():
    with pytest.raises(UserError, match="no student has tier 'tenth': known tiers are fifth, half"):
        g.gate(make_report(), [g.parse_override("tenth.params=100")])
    report = make_report()
    report = dataclasses.replace(report, teacher=dataclasses.replace(report.teacher, macs=0))
    with pytest.raises(UserError, match="teacher's macs, which is 0"):
        g.gate(report, [g.parse_override("*.macs=10%")])


@pytest.mark.parametrize(
    "texts, label",
    [
        (("fifth.params=1", "fifth.params=2"), "fifth.params"),
        (("*.bytes=1KB", "fifth.bytes=2KB", "*.bytes=1KB"), "*.bytes"),
        (("fifth.latency_ms.raspberry-pi-5=1", "fifth.latency_ms.raspberry-pi-5=1ms"), "fifth.latency_ms.raspberry-pi-5"),
    ],
)
def test_a_budget_given_twice_is_a_user_error(texts, label):
    with pytest.raises(UserError, match=f"--budget {label.replace('*', '[*]')} is given twice"):
        g.gate(make_report(), [g.parse_override(t) for t in texts])


# --- latency budgets -------------------------------------------------------------------------------


def _latency(report: schema.Report, override: str, target: str = RPI) -> g.Verdict:
    """Fifth's verdict on its latency budget for `target` under one `--budget` override."""
    return _only(g.gate(report, [g.parse_override(override)]), "fifth", f"latency_ms:{target}")


def test_a_latency_override_is_judged_on_the_measured_figure_even_when_a_prediction_is_faster():
    student = _timed("fifth", None, {RPI: _measured(0.9)}, {RPI: _predicted(0.1)})
    verdict = _latency(make_report(student), "fifth.latency_ms.raspberry-pi-5=0.5")
    assert (verdict.ok, verdict.limit, verdict.value) == (False, 0.5, 0.9)
    assert verdict.source == "measured over ssh on raspberry-pi-5 (p50 of students/fifth/model.fp32.onnx)"
    assert verdict.describe() == f"value 0.9 > limit 0.5 (source: {verdict.source})"


def test_among_equals_the_fastest_file_decides_and_a_prediction_says_so():
    student = _timed("fifth", None, {RPI: _predicted(0.4)}, {RPI: _predicted(0.3, "calibrated 2024-05-01")})
    verdict = _latency(make_report(student), "*.latency_ms.raspberry-pi-5=0.35")
    assert (verdict.ok, verdict.value) == (True, 0.3)
    assert verdict.source == "predicted for raspberry-pi-5, calibrated 2024-05-01 (p50 of students/fifth/model.int8.onnx)"
    local = _timed("fifth", None, {"host-cpu": _measured(2.0, runner="local")})
    verdict = _latency(make_report(local), "fifth.latency_ms.host-cpu=1", target="host-cpu")
    assert verdict.source == "measured locally on host-cpu (p50 of students/fifth/model.fp32.onnx)"


def test_the_tiers_own_latency_budget_keeps_its_limit_and_is_judged_on_the_artifacts():
    student = _timed("fifth", {RPI_LATENCY: 0.5}, {}, {RPI: _measured(0.7)})
    (verdict,) = g.gate(make_report(student)).verdicts
    assert (verdict.ok, verdict.limit, verdict.value) == (False, 0.5, 0.7)
    assert verdict.source == "measured over ssh on raspberry-pi-5 (p50 of students/fifth/model.int8.onnx)"


def test_a_tier_latency_override_beats_a_wildcard_for_the_same_target_only():
    student = _timed("fifth", None, {}, {RPI: _predicted(0.3), "pixel-8": _predicted(2.0)})
    texts = ("fifth.latency_ms.raspberry-pi-5=1", "*.latency_ms.raspberry-pi-5=0.1", "*.latency_ms.pixel-8=1")
    overrides = [g.parse_override(t) for t in texts]
    result = g.gate(make_report(_student("half"), student), overrides)
    assert _only(result, "fifth", RPI_LATENCY).ok
    assert _only(result, "half", RPI_LATENCY).limit == 0.1
    assert not _only(result, "fifth", "latency_ms:pixel-8").ok


def test_no_latency_on_the_target_fails_and_says_so():
    # A figure on a file not made for the target does not count, as in the run's check.
    not_for_it = dataclasses.replace(_artifact("onnx", "int8", 12_000, latency={RPI: _measured(0.1)}), targets=("host-cpu",))
    for student in (_timed("fifth", None, {"host-cpu": _measured(1.0, "local")}), _student(artifacts=(not_for_it,))):
        verdict = _latency(make_report(student), "fifth.latency_ms.raspberry-pi-5=5")
        assert (verdict.ok, verdict.value) == (False, None)
        assert verdict.source.startswith("no latency on raspberry-pi-5: the student's files have latency on ")
    verdict = _latency(make_report(), "fifth.latency_ms.raspberry-pi-5=5")
    assert verdict.source == "no latency on raspberry-pi-5: the student's files have latency on no target"


def test_the_tiers_latency_budget_without_a_figure_is_broken_but_not_called_edited(tmp_path):
    # The run writes the check's value as NaN, which report.json holds as null.
    report = make_report(_timed("fifth", {RPI_LATENCY: 1.0}, {"host-cpu": _measured(1.0, "local")}))
    for judged in (report, g.load_report(_write(tmp_path, report))):
        (verdict,) = g.gate(judged).verdicts
        assert (verdict.ok, verdict.value) == (False, None)
        assert verdict.source == "no latency on raspberry-pi-5: the student's files have latency on host-cpu"


def test_summary_says_latency_is_judged_on_the_p50_only_when_there_is_a_latency_budget():
    assert g.summary(g.gate(make_report())) == "gate passed: 2 budgets of 2 students, all hold"
    report = make_report(_timed("fifth", None, {RPI: _predicted(0.3)}))
    result = g.gate(report, [g.parse_override("*.latency_ms.raspberry-pi-5=1")])
    assert g.summary(result) == "gate passed: 2 budgets of 1 student, all hold; latency budgets are judged on the p50 at batch 1"


# --- selecting students ------------------------------------------------------------------------------


def test_only_the_selected_students_are_judged():
    report = make_report(_student("half", params=20_000), _student("fifth"))
    result = g.gate(report, students=["fifth"])
    assert result.passed and {v.student for v in result.verdicts} == {"fifth"}


def test_an_unknown_student_is_a_user_error_listing_the_known_ones():
    with pytest.raises(UserError, match="'tenth'.*known students are half, fifth"):
        g.gate(make_report(), students=["fifth", "tenth"])


def test_a_report_with_no_students_is_refused_in_one_line(tmp_path):
    report = dataclasses.replace(make_report(), students=())
    with pytest.raises(UserError, match="has no students"):
        g.gate(report)
    line = _error_line(_invoke(_write(tmp_path, report)))
    assert line == "error: report 'demo' has no students: the run made none; check its config's tiers and rerun `edgedistill run`"


# --- reading a report ------------------------------------------------------------------------------


def _bad_reports(tmp_path):
    good = schema.dumps(make_report())
    data = json.loads(good)
    files = {
        "missing": None,
        "not json": "this is not json\n",
        "truncated": good[: len(good) // 2],
        "a list": "[1, 2]",
        "no schema": json.dumps({k: v for k, v in data.items() if k != "schema"}),
        "wrong schema": json.dumps({**data, "schema": "edgedistill.report/2"}),
        "other schema, other fields": json.dumps({"schema": "something/else", "x": 1}),
        "missing field": json.dumps({k: v for k, v in data.items() if k != "teacher"}),
        "binary": b"\xff\xfe\x00garbage",
    }
    paths = {}
    for label, content in files.items():
        path = tmp_path / f"{label.replace(' ', '_').replace(',', '')}.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        paths[label] = path
    paths["a folder"] = tmp_path
    return paths


def test_load_report_reads_what_dumps_wrote(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(schema.dumps(_rich_report()))
    assert g.load_report(path) == _rich_report()


@pytest.mark.parametrize(
    "label, expected",
    [
        ("missing", "does not exist"),
        ("not json", "not valid JSON"),
        ("truncated", "not valid JSON"),
        ("a list", "JSON list"),
        ("no schema", 'no "schema" field'),
        ("wrong schema", "has schema 'edgedistill.report/2'"),
        ("other schema, other fields", "has schema 'something/else'"),
        ("missing field", "teacher is missing"),
        ("binary", "not a text file"),
        ("a folder", "cannot read report"),
    ],
)
def test_a_file_that_is_not_a_report_is_one_line_and_exit_2(tmp_path, label, expected):
    path = _bad_reports(tmp_path)[label]
    with pytest.raises(UserError, match=expected):
        g.load_report(path)
    assert expected in _error_line(_invoke(path))


DELETE = object()


def _set(data: dict, where: str, value) -> None:
    """Set the field at `where` ("students.1.params"); the value DELETE removes it."""
    *parents, last = [int(k) if k.isdigit() else k for k in where.split(".")]
    for key in parents:
        data = data[key]
    if value is DELETE:
        del data[last]
    else:
        data[last] = value


P50 = f"students.1.artifacts.1.latency.{RPI}.p50_ms"


@pytest.mark.parametrize(
    "where, value, expected",
    [
        ("students.1.params", "9000", 'students[1].params is "9000", not a whole number'),
        ("students.1.params", 9000.5, "students[1].params is 9000.5, not a whole number"),
        ("students.1.params", -5, "students[1].params is -5, not a finite number >= 0"),
        ("students.1.params", math.nan, "students[1].params is NaN, not a whole number"),
        ("students.1.params", True, "students[1].params is true, not a whole number"),
        ("students.1.params", DELETE, "students[1].params is missing"),
        ("students.1.macs", 10**400, "students[1].macs is 1000000000000000000000000000000000000..., not a finite number >= 0"),
        ("teacher.params", -1, "teacher.params is -1, not a finite number >= 0"),
        ("students.1.checks.0.limit", math.inf, "students[1].checks[0].limit is Infinity, not a finite number above 0"),
        ("students.1.checks.0.limit", None, "students[1].checks[0].limit is null, not a finite number above 0"),
        ("students.1.checks.0.limit", 0, "students[1].checks[0].limit is 0.0, not a finite number above 0"),
        ("students.1.checks.0.value", math.nan, "students[1].checks[0].value is NaN, not a finite number >= 0"),
        ("students.1.checks.0.value", -math.inf, "students[1].checks[0].value is -Infinity, not a finite number >= 0"),
        ("students.1.checks.0.ok", "yes", 'students[1].checks[0].ok is "yes", not true or false'),
        ("students.1.checks.0.name", "flops", "students[1].checks[0].name names budget 'flops', which is unknown"),
        ("students.1.checks.1.name", "params", "students[1].checks[1].name 'params' repeats an earlier check's"),
        ("students.1.checks", {}, "students[1].checks is {}, not a list"),
        ("students.1.checks.0", [1], "students[1].checks[0] is [1], not an object"),
        ("students.1.budget", [], "students[1].budget is [], not an object"),
        ("students.1.budget.limits", {}, "students[1].budget.limits is empty"),
        ("students.1.budget.limits", [10_000], "students[1].budget.limits is [10000], not an object"),
        ("students.1.budget.limits", DELETE, "students[1].budget.limits is missing"),
        ("students.1.budget.limits.params", "10k", 'students[1].budget.limits.params is "10k", not a finite number above 0'),
        ("students.1.budget.limits.params", -10, "students[1].budget.limits.params is -10, not a finite number above 0"),
        ("students.1.budget.limits.flops", 3, "students[1].budget.limits names budget 'flops', which is unknown"),
        ("students.1.budget.precision", "int4", 'students[1].budget.precision is "int4", not "fp32" or "fp16" or "int8"'),
        ("students.1.within_budget", None, "students[1].within_budget is null, not true or false"),
        ("students.1.name", "half", "students[1].name 'half' is that of students[0] too"),
        ("students.1.artifacts.1.bytes", -1, "students[1].artifacts[1].bytes is -1, not a finite number >= 0"),
        ("students.1.artifacts.1.latency", [], "students[1].artifacts[1].latency is [], not an object"),
        (P50, -0.1, f"students[1].artifacts[1].latency.{RPI}.p50_ms is -0.1, not a finite number >= 0"),
        (P50, "fast", f'students[1].artifacts[1].latency.{RPI}.p50_ms is "fast", not a number'),
        ("students", {}, "students is {}, not a list"),
    ],
)
def test_a_field_of_the_wrong_type_or_an_impossible_figure_is_one_line_naming_it(tmp_path, where, value, expected):
    data = json.loads(schema.dumps(_rich_report()))
    _set(data, where, value)
    path = _write(tmp_path, data)
    with pytest.raises(UserError, match="rerun `edgedistill run` to write it again"):
        g.load_report(path)
    line = _error_line(_invoke(path))
    assert line.startswith(f"error: {path}: {expected}"), line
    assert line.endswith(": the report was edited or damaged; rerun `edgedistill run` to write it again")


def test_a_null_figure_where_the_run_writes_nan_is_no_figure(tmp_path):
    data = json.loads(schema.dumps(_rich_report()))
    _set(data, P50, None)  # the run writes a NaN latency as null: no figure, so the check disagrees
    path = _write(tmp_path, data)
    result = _invoke(path)
    assert result.exit_code == 1
    (line,) = [line for line in _broken_lines(result) if f"budget={RPI_LATENCY}" in line]
    assert "value=none" in line and "the report's check says 0.8 but its figures say no value" in line


def _numbers(data, where: str = "") -> list[str]:
    """Every number in a report's JSON, as a path for `_set`."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _numbers(v, f"{where}{k}.")]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _numbers(v, f"{where}{i}.")]
    return [where[:-1]] if isinstance(data, (int, float)) and not isinstance(data, bool) else []


RICH = json.loads(schema.dumps(_rich_report()))
ANY_VALUE = st.one_of(
    st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4), st.none(), st.booleans(),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(_numbers(RICH)), ANY_VALUE), min_size=1, max_size=3))
def test_any_mutation_of_a_reports_numbers_is_judged_or_refused_in_one_line(tmp_path, mutations):
    data = copy.deepcopy(RICH)
    for where, value in mutations:
        _set(data, where, value)
    result = _invoke(_write(tmp_path, data))
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code == 2:
        assert "the report was edited or damaged" in _error_line(result)
    else:
        _broken_lines(result)


# --- JUnit ---------------------------------------------------------------------------------------------


def test_junit_has_the_common_shape():
    student = _student(limits={"params": 10_000.0, "macs": 3e6}, params=12_345)
    result = g.gate(make_report(_student("half"), student))
    root = ET.fromstring(g.junit_xml(result, "edgedistill gate demo"))
    assert root.tag == "testsuite" and root.get("name") == "edgedistill gate demo"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "0")
    cases = root.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("edgedistill.half", "params"), ("edgedistill.fifth", "params"), ("edgedistill.fifth", "macs"),
    ]
    assert all(set(c.attrib) == {"classname", "name"} for c in cases)
    failures = [f for c in cases for f in c]
    assert [f.tag for f in failures] == ["failure"]
    assert failures[0].get("message") == "value 12,345 > limit 10,000 (source: student in PyTorch)"


def test_junit_escapes_what_xml_needs():
    odd = _artifact("onnx", "int8", 2_000, path='students/fifth/"a<b>&c".onnx')
    student = _student(limits={"bytes": 1_000.0}, artifacts=(odd,))
    root = ET.fromstring(g.junit_xml(g.gate(make_report(student)), "a & b <c>"))
    assert root.get("name") == "a & b <c>" and 'file: students/fifth/"a<b>&c".onnx' in root.find("testcase/failure").get("message")


@pytest.mark.parametrize("x, text", [(33_120.0, "33,120"), (966.5, "966.5"), (38.66, "38.66"), (0.0, "0"), (1e-4, "0.0001"), (0.5, "0.5")])
def test_format_number(x, text):
    assert g.format_number(x) == text


# --- the command on hand-made reports ------------------------------------------------------------------


def test_cli_prints_one_line_per_broken_budget_and_exits_1(tmp_path):
    artifacts = (_artifact("onnx", "fp32", 36_000), _artifact("onnx", "int8", 12_000), _artifact("ort", "int8", 33_120))
    student = _student(limits={"params": 10_000.0, "bytes": 32_000.0}, artifacts=artifacts)
    path = _write(tmp_path, make_report(_student("half"), student))
    result = _invoke(path)
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "BROKEN student=fifth budget=bytes limit=32,000 value=33,120 source=largest int8 file: students/fifth/model.int8.ort"
    assert lines[-1] == "gate failed: 1 broken of 3 budgets of 2 students"
    passed = _invoke(path, "--student", "half")
    assert passed.exit_code == 0 and "BROKEN" not in passed.stdout and "gate passed" in passed.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--student", "tenth"], "known students are half, fifth"),
        (["--budget", "fifth.latency=3"], "'latency', which is unknown"),
        (["--budget", "fifth.params=lots"], "not a valid count limit"),
        (["--budget", "tenth.params=3"], "no student has tier 'tenth'"),
        (["--budget", "fifth.latency_ms.raspberry-pi-5=abc"], "'abc' is not a latency: give positive milliseconds"),
        (["--budget", "fifth.latency_ms.raspberry-pi-5=-1"], "'-1' is not a latency"),
        (["--budget", "fifth.latency_ms=5"], "names no target"),
        (["--budget", "tenth.latency_ms.raspberry-pi-5=3"], "--budget tenth.latency_ms.raspberry-pi-5: no student has tier 'tenth'"),
        (["--budget", "fifth.params=1", "--budget", "fifth.params=2"], "--budget fifth.params is given twice: give each budget once"),
        (["--budget", "*.macs=1%", "--budget", "*.macs=1%"], "--budget *.macs is given twice"),
    ],
)
def test_cli_bad_selection_or_budget_is_one_line_and_exit_2(tmp_path, args, expected):
    assert expected in _error_line(_invoke(_write(tmp_path, make_report()), *args))


def _measured_over_ssh_report(tmp_path, p50: float) -> Path:
    """A report.json: the tier's latency budget on the Pi, its int8 file measured there over ssh."""
    student = _timed("fifth", {"params": 10_000.0, RPI_LATENCY: 0.5}, {}, {RPI: _measured(p50)})
    return _write(tmp_path, make_report(_student("half"), student))


def test_cli_a_broken_measured_latency_budget_exits_1_and_says_where_the_figure_came_from(tmp_path):
    path, junit = _measured_over_ssh_report(tmp_path, 0.8), tmp_path / "gate.xml"
    result = _invoke(path, "--junit", str(junit))
    assert result.exit_code == 1, result.output
    source = "measured over ssh on raspberry-pi-5 (p50 of students/fifth/model.int8.onnx)"
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"BROKEN student=fifth budget=latency_ms:raspberry-pi-5 limit=0.5 value=0.8 source={source}"
    assert lines[-1] == "gate failed: 1 broken of 3 budgets of 2 students; latency budgets are judged on the p50 at batch 1"
    (failure,) = ET.parse(junit).getroot().findall("testcase/failure")
    assert failure.get("message") == f"value 0.8 > limit 0.5 (source: {source})"
    relaxed = _invoke(path, "--budget", "fifth.latency_ms.raspberry-pi-5=0.9")
    assert relaxed.exit_code == 0 and "gate passed" in relaxed.stdout and "p50" in relaxed.stdout, relaxed.output


def test_cli_unwritable_junit_path_is_exit_2(tmp_path):
    result = _invoke(_write(tmp_path, make_report()), "--junit", str(tmp_path))
    assert "cannot write --junit" in _error_line(result)


# --- a real run -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gate-run") / "run"
    return run_pipeline(parse_config(tiny_run_config(), "t"), out).report_path


def test_a_real_run_passes_its_own_gate(real_report):
    report = g.load_report(real_report)
    result = g.gate(report)
    assert result.passed
    assert {v.student for v in result.verdicts} == {s.name for s in report.students}
    assert all(v.source == "student in PyTorch" for v in result.verdicts)


def test_a_real_run_fails_a_tighter_budget_with_junit(real_report, tmp_path):
    junit = tmp_path / "ci" / "gate.xml"
    result = _invoke(real_report, "--budget", "*.params=1%", "--junit", str(junit))
    assert result.exit_code == 1, result.output
    broken = [line for line in result.stdout.splitlines() if line.startswith("BROKEN ")]
    students = [s.name for s in g.load_report(real_report).students]
    assert [line.split()[1] for line in broken] == [f"student={s}" for s in students]
    assert all("budget=params" in line and "source=student in PyTorch" in line for line in broken)
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuite" and int(root.get("failures")) == len(broken) == len(root.findall("testcase/failure"))
    assert not list(junit.parent.glob(".*.tmp"))  # written atomically: no temporary left behind


def test_a_real_runs_report_with_its_params_edited_fails_in_either_mode(real_report, tmp_path):
    data = json.loads(real_report.read_text())
    data["students"][0]["params"] += 1_000_000
    path = _write(tmp_path, data)
    tier = data["students"][0]["tier"]
    default = _invoke(path)
    overridden = _invoke(path, "--budget", f"{tier}.params={data['students'][0]['budget']['limits']['params']}")
    assert default.exit_code == overridden.exit_code == 1
    assert _broken_lines(default) == _broken_lines(overridden)
    assert any("budget=params" in line and "the report was edited or damaged" in line for line in _broken_lines(default))


def test_a_limit_edited_in_the_budget_and_its_check_alike_is_caught_by_the_spec(real_report, tmp_path):
    data = json.loads(real_report.read_text())
    student = data["students"][0]
    student["budget"]["limits"]["params"] *= 100
    for check in student["checks"]:
        if check["name"] == "params":
            check["limit"] *= 100
            check["margin"] = check["limit"] - check["value"]
    result = _invoke(_write(tmp_path, data))
    assert result.exit_code == 1, result.output
    assert any("budget=params" in line and "but its spec gives" in line for line in _broken_lines(result))


# --- a microcontroller's flash and SRAM ------------------------------------------------------------


def _mcu_student(file_bytes: int, arena: int | None, sram: int = 8_192) -> schema.Student:
    """A student whose int8 .tflite is deployed on the STM32H743 profile with its SRAM set to
    `sram`, its device checks made by the run's rule (`entries.device_checks`)."""
    from edgedistill.targets.profile import load_target

    mcu = load_target("stm32h743")
    mcu = mcu.model_copy(update={"specs": mcu.specs.model_copy(update={"sram_bytes": sram})})
    tflite = dataclasses.replace(
        _artifact("onnx", "int8", file_bytes, path="students/fifth/model.int8.tflite"),
        format="tflite", targets=(mcu.name,), deployed_for=(mcu.name,), arena_bytes=arena,
    )
    student = _student("fifth", artifacts=(_artifact("onnx", "fp32", 36_000), tflite))
    checks = student.checks + entries.device_checks((mcu,), student.artifacts)
    return dataclasses.replace(student, checks=checks, within_budget=all(c.ok for c in checks))


def test_a_microcontrollers_flash_and_sram_are_hard_budgets_of_the_deployed_file():
    fits = _mcu_student(12_000, 4_096)
    assert {c.name: c.ok for c in fits.checks} == {"params": True, "flash:stm32h743": True, "sram:stm32h743": True}
    assert g.gate(make_report(fits)).passed
    over = _mcu_student(12_000, 9_000)
    result = g.gate(make_report(over))
    assert not over.within_budget and not result.passed
    (broken,) = result.broken
    assert broken.budget == "sram:stm32h743" and broken.value == 9_000 and broken.limit == 8_192
    assert "activation arena of students/fifth/model.int8.tflite" in broken.source


def test_a_file_without_a_known_arena_does_not_claim_to_fit_the_sram():
    unknown = _mcu_student(12_000, None)
    (sram,) = [c for c in unknown.checks if c.name == "sram:stm32h743"]
    assert not sram.ok and math.isnan(sram.value) and "is not known" in sram.source
    assert not g.gate(make_report(unknown)).passed


def test_an_edited_arena_is_caught_as_damage():
    fits = _mcu_student(12_000, 4_096)
    edited = _edit_check(fits, "sram:stm32h743", value=100.0)
    (sram,) = [v for v in g.gate(make_report(edited)).verdicts if v.budget == "sram:stm32h743"]
    assert not sram.ok and "the report's check says" in sram.source
