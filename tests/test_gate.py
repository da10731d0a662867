import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import tiny_run_config
from typer.testing import CliRunner

from edgedistill import gate as g
from edgedistill.cli import app
from edgedistill.config import parse_config
from edgedistill.errors import UserError
from edgedistill.pipeline import run as run_pipeline
from edgedistill.report import schema

runner = CliRunner()


RPI = "raspberry-pi-5"


def _artifact(fmt: str, precision: str, size: int, passed: bool = True, latency: dict | None = None) -> schema.Artifact:
    """A file; `latency` (target -> figure) also makes it a file for those targets."""
    suffix = {"onnx": "onnx", "ort": "ort", "tensorrt": "engine"}[fmt]
    return schema.Artifact(
        format=fmt, precision=precision, path=f"students/fifth/model.{precision}.{suffix}", bytes=size,
        metrics={"accuracy": 0.9}, parity_max_abs_err=1e-6 if passed else 0.5, parity_tolerance=1e-4, passed=passed,
        latency=latency or {}, targets=tuple(latency or ()),
    )


def _measured(p50: float, runner: str = "ssh") -> schema.Latency:
    return schema.Latency(p50_ms=p50, source="measured", runner=runner, runtime="onnxruntime 1.20", device="Cortex-A76", runs=100)


def _predicted(p50: float, calibration: str | None = None) -> schema.Latency:
    return schema.Latency(p50_ms=p50, source="predicted", profile=RPI, calibration=calibration, error_band=0.5)


def _check(name: str, limit: float, value: float, source: str = "student in PyTorch", ok: bool | None = None) -> schema.Check:
    ok = value <= limit if ok is None else ok
    return schema.Check(name=name, limit=limit, value=value, ok=ok, margin=(limit - value) / limit, source=source)


def _student(name: str = "fifth", checks=(), artifacts=(), within_budget: bool | None = None, precision: str = "int8") -> schema.Student:
    checks = tuple(checks) or (_check("params", 10_000.0, 9_000.0),)
    return schema.Student(
        name=name, tier=name, generator={"kind": "prune"}, knob=0.3,
        budget={"spec": {c.name: c.limit for c in checks}, "limits": {c.name: c.limit for c in checks}, "precision": precision},
        params=9_000, macs=2_000_000, peak_activation_bytes=4_096, metrics={"accuracy": 0.9},
        within_budget=all(c.ok for c in checks) if within_budget is None else within_budget,
        checks=checks, distill={}, artifacts=tuple(artifacts) or (_artifact("onnx", "fp32", 36_000), _artifact("onnx", "int8", 12_000)),
    )


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


def _only(result: g.GateResult, student: str, budget: str) -> g.Verdict:
    (verdict,) = [v for v in result.verdicts if v.student == student and v.budget == budget]
    return verdict


# --- judging the report's own checks ---------------------------------------------------------------


def test_every_budget_of_every_student_holds():
    result = g.gate(make_report())
    assert result.passed and not result.broken
    assert [(v.student, v.budget) for v in result.verdicts] == [("half", "params"), ("fifth", "params")]
    assert result.verdicts[0] == g.Verdict("half", "half", "params", 10_000.0, 9_000.0, True, "student in PyTorch")


def test_a_broken_check_keeps_the_reports_source():
    source = "largest int8 file: students/fifth/model.int8.ort"
    student = _student(checks=(_check("params", 10_000.0, 9_000.0), _check("bytes", 32_000.0, 33_120.0, source)))
    result = g.gate(make_report(student))
    assert not result.passed
    (broken,) = result.broken
    assert (broken.budget, broken.limit, broken.value, broken.source) == ("bytes", 32_000.0, 33_120.0, source)
    assert broken.describe() == f"value 33,120 > limit 32,000 (source: {source})"


@pytest.mark.parametrize("source", ["measured on host-cpu", "estimate at int8 (no int8 artifact)", "predicted for pixel-8"])
def test_the_verdict_says_where_the_value_came_from(source):
    student = _student(checks=(_check("bytes", 10.0, 20.0, source),))
    assert g.gate(make_report(student)).broken[0].source == source


@pytest.mark.parametrize("value, ok", [(12_000.0, True), (8_000.0, False)])
def test_a_check_whose_flag_and_numbers_disagree_fails(value, ok):
    student = _student(checks=(_check("params", 10_000.0, value, ok=ok),), within_budget=ok)
    (verdict,) = g.gate(make_report(student)).verdicts
    assert not verdict.ok and verdict.budget == "params"


def test_over_budget_without_a_failing_check_is_broken():
    student = _student(within_budget=False)
    result = g.gate(make_report(student))
    assert [v.budget for v in result.broken] == ["within_budget"]
    assert result.broken[0].value is None and "every check holds" in result.broken[0].source
    assert result.broken[0].describe().startswith("no value")


def test_over_budget_with_a_failing_check_is_only_that_check():
    student = _student(checks=(_check("params", 10_000.0, 11_000.0),))
    assert not student.within_budget
    assert [v.budget for v in g.gate(make_report(student)).broken] == ["params"]


def test_a_failed_parity_check_is_broken():
    student = _student(artifacts=(_artifact("onnx", "fp32", 36_000, passed=False), _artifact("onnx", "int8", 12_000)))
    result = g.gate(make_report(student))
    parity = _only(result, "fifth", "parity")
    assert (parity.ok, parity.limit, parity.value) == (False, 1e-4, 0.5)
    assert "students/fifth/model.fp32.onnx" in parity.source
    assert parity.describe().startswith("value 0.5 > limit 0.0001")


def test_a_tier_budget_without_a_check_is_broken():
    student = _student()
    student = dataclasses.replace(student, budget={**student.budget, "limits": {"params": 10_000.0, "macs": 1e6}})
    macs = _only(g.gate(make_report(student)), "fifth", "macs")
    assert (macs.ok, macs.limit, macs.value) == (False, 1e6, None)


# --- budgets from the command line --------------------------------------------------------------------


def test_an_absolute_override_replaces_the_tiers_limit():
    result = g.gate(make_report(), [g.parse_override("fifth.params=8000")])
    assert _only(result, "half", "params").ok
    fifth = _only(result, "fifth", "params")
    assert (fifth.ok, fifth.limit, fifth.value, fifth.source) == (False, 8_000.0, 9_000.0, "student in PyTorch")


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


def test_bytes_override_without_a_file_falls_back_to_the_reports_estimate_or_refuses():
    fp32_only = (_artifact("onnx", "fp32", 36_000),)
    estimate = _check("bytes", 20_000.0, 9_000.0, "estimate at int8 (no int8 artifact)")
    with_check = make_report(_student(checks=(estimate,), artifacts=fp32_only))
    verdict = _only(g.gate(with_check, [g.parse_override("fifth.bytes=8000")]), "fifth", "bytes")
    assert (verdict.ok, verdict.value, verdict.source) == (False, 9_000.0, "estimate at int8 (no int8 artifact)")
    with pytest.raises(UserError, match="no int8 file of student 'fifth'"):
        g.gate(make_report(_student(artifacts=fp32_only)), [g.parse_override("fifth.bytes=8000")])


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


# --- latency budgets -------------------------------------------------------------------------------


def _timed(name: str = "fifth", checks=(), *figures: dict) -> schema.Student:
    """A student whose fp32 and int8 ONNX files have the given latencies (target -> figure)."""
    fp32, int8 = (figures + ({}, {}))[:2]
    artifacts = (_artifact("onnx", "fp32", 36_000, latency=fp32), _artifact("onnx", "int8", 12_000, latency=int8))
    return _student(name, checks=checks, artifacts=artifacts)


def _latency(report: schema.Report, override: str, target: str = RPI) -> g.Verdict:
    """Fifth's verdict on its latency budget for `target` under one `--budget` override."""
    return _only(g.gate(report, [g.parse_override(override)]), "fifth", f"latency_ms:{target}")


def test_a_latency_override_is_judged_on_the_measured_figure_even_when_a_prediction_is_faster():
    student = _timed("fifth", (), {RPI: _measured(0.9)}, {RPI: _predicted(0.1)})
    verdict = _latency(make_report(student), "fifth.latency_ms.raspberry-pi-5=0.5")
    assert (verdict.ok, verdict.limit, verdict.value) == (False, 0.5, 0.9)
    assert verdict.source == "measured over ssh on raspberry-pi-5 (p50 of students/fifth/model.fp32.onnx)"
    assert verdict.describe() == f"value 0.9 > limit 0.5 (source: {verdict.source})"


def test_among_equals_the_fastest_file_decides_and_a_prediction_says_so():
    student = _timed("fifth", (), {RPI: _predicted(0.4)}, {RPI: _predicted(0.3, "calibrated 2024-05-01")})
    verdict = _latency(make_report(student), "*.latency_ms.raspberry-pi-5=0.35")
    assert (verdict.ok, verdict.value) == (True, 0.3)
    assert verdict.source == "predicted for raspberry-pi-5, calibrated 2024-05-01 (p50 of students/fifth/model.int8.onnx)"
    local = _timed("fifth", (), {"host-cpu": _measured(2.0, runner="local")})
    verdict = _latency(make_report(local), "fifth.latency_ms.host-cpu=1", target="host-cpu")
    assert verdict.source == "measured locally on host-cpu (p50 of students/fifth/model.fp32.onnx)"


def test_a_latency_override_ignores_the_reports_stored_check_value():
    stale = _check("latency_ms:raspberry-pi-5", 1.0, 0.1, "predicted p50 of students/fifth/model.int8.onnx")
    student = _timed("fifth", (_check("params", 10_000.0, 9_000.0), stale), {}, {RPI: _measured(0.8)})
    verdict = _latency(make_report(student), "fifth.latency_ms.raspberry-pi-5=0.5")
    assert (verdict.ok, verdict.limit, verdict.value) == (False, 0.5, 0.8)


def test_the_tiers_own_latency_budget_keeps_its_limit_and_is_judged_on_the_artifacts():
    check = _check("latency_ms:raspberry-pi-5", 0.5, 0.4, "predicted p50 of students/fifth/model.int8.onnx")
    student = _timed("fifth", (check,), {}, {RPI: _measured(0.7)})
    (verdict,) = g.gate(make_report(student)).verdicts
    assert (verdict.ok, verdict.limit, verdict.value) == (False, 0.5, 0.7)
    assert verdict.source.startswith("measured over ssh on raspberry-pi-5")


def test_a_tier_latency_override_beats_a_wildcard_for_the_same_target_only():
    student = _timed("fifth", (), {}, {RPI: _predicted(0.3), "pixel-8": _predicted(2.0)})
    texts = ("fifth.latency_ms.raspberry-pi-5=1", "*.latency_ms.raspberry-pi-5=0.1", "*.latency_ms.pixel-8=1")
    overrides = [g.parse_override(t) for t in texts]
    result = g.gate(make_report(_student("half"), student), overrides)
    assert _only(result, "fifth", "latency_ms:raspberry-pi-5").ok
    assert _only(result, "half", "latency_ms:raspberry-pi-5").limit == 0.1
    assert not _only(result, "fifth", "latency_ms:pixel-8").ok


def test_no_latency_on_the_target_fails_and_says_so():
    # A figure on a file not made for the target does not count, as in the run's check.
    not_for_it = dataclasses.replace(_artifact("onnx", "int8", 12_000, latency={RPI: _measured(0.1)}), targets=("host-cpu",))
    for student in (_timed("fifth", (), {"host-cpu": _measured(1.0, "local")}), _student(artifacts=(not_for_it,))):
        verdict = _latency(make_report(student), "fifth.latency_ms.raspberry-pi-5=5")
        assert (verdict.ok, verdict.value) == (False, None)
        assert verdict.source.startswith("no latency on raspberry-pi-5: the student's files have latency on ")
    verdict = _latency(make_report(), "fifth.latency_ms.raspberry-pi-5=5")
    assert verdict.source == "no latency on raspberry-pi-5: the student's files have latency on no target"


def test_summary_says_latency_is_judged_on_the_p50_only_when_there_is_a_latency_budget():
    assert g.summary(g.gate(make_report())) == "gate passed: 2 budgets of 2 students, all hold"
    report = make_report(_timed("fifth", (), {RPI: _predicted(0.3)}))
    result = g.gate(report, [g.parse_override("*.latency_ms.raspberry-pi-5=1")])
    assert g.summary(result) == "gate passed: 2 budgets of 1 student, all hold; latency budgets are judged on the p50 at batch 1"


# --- selecting students ------------------------------------------------------------------------------


def test_only_the_selected_students_are_judged():
    report = make_report(_student("half", checks=(_check("params", 1.0, 2.0),)), _student("fifth"))
    result = g.gate(report, students=["fifth"])
    assert result.passed and {v.student for v in result.verdicts} == {"fifth"}


def test_an_unknown_student_is_a_user_error_listing_the_known_ones():
    with pytest.raises(UserError, match="'tenth'.*known students are half, fifth"):
        g.gate(make_report(), students=["fifth", "tenth"])


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
    path.write_text(schema.dumps(make_report()))
    assert g.load_report(path) == make_report()


@pytest.mark.parametrize(
    "label, expected",
    [
        ("missing", "does not exist"),
        ("not json", "not valid JSON"),
        ("truncated", "not valid JSON"),
        ("a list", "JSON list"),
        ("no schema", 'no "schema" field'),
        ("wrong schema", "has schema 'edgedistill.report/2'"),
        ("other schema, other fields", "its schema is 'something/else'"),
        ("missing field", "missing or malformed"),
        ("binary", "not a text file"),
        ("a folder", "cannot read report"),
    ],
)
def test_a_file_that_is_not_a_report_is_one_line_and_exit_2(tmp_path, label, expected):
    path = _bad_reports(tmp_path)[label]
    with pytest.raises(UserError, match=expected):
        g.load_report(path)
    result = runner.invoke(app, ["gate", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.stderr
    assert "Traceback" not in result.output


# --- JUnit ---------------------------------------------------------------------------------------------


def test_junit_has_the_common_shape():
    student = _student(checks=(_check("params", 10_000.0, 12_345.0), _check("macs", 3e6, 2e6)))
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
    student = _student(checks=(_check("bytes", 1.0, 2.0, 'file "a<b>&c".onnx'),))
    root = ET.fromstring(g.junit_xml(g.gate(make_report(student)), "a & b <c>"))
    assert root.get("name") == "a & b <c>" and 'file "a<b>&c".onnx' in root.find("testcase/failure").get("message")


@pytest.mark.parametrize("x, text", [(33_120.0, "33,120"), (966.5, "966.5"), (38.66, "38.66"), (0.0, "0"), (1e-4, "0.0001"), (0.5, "0.5")])
def test_format_number(x, text):
    assert g.format_number(x) == text


# --- the command on hand-made reports ------------------------------------------------------------------


def test_cli_prints_one_line_per_broken_budget_and_exits_1(tmp_path):
    source = "largest int8 file: students/fifth/model.int8.ort"
    student = _student(checks=(_check("params", 10_000.0, 9_000.0), _check("bytes", 32_000.0, 33_120.0, source)))
    path = tmp_path / "report.json"
    path.write_text(schema.dumps(make_report(_student("half"), student)))
    result = runner.invoke(app, ["gate", str(path)])
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"BROKEN student=fifth budget=bytes limit=32,000 value=33,120 source={source}"
    assert lines[-1] == "gate failed: 1 broken of 3 budgets of 2 students"
    passed = runner.invoke(app, ["gate", str(path), "--student", "half"])
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
    ],
)
def test_cli_bad_selection_or_budget_is_one_line_and_exit_2(tmp_path, args, expected):
    path = tmp_path / "report.json"
    path.write_text(schema.dumps(make_report()))
    result = runner.invoke(app, ["gate", str(path), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr


def _measured_over_ssh_report(tmp_path, p50: float) -> Path:
    """A report.json written by hand: the tier's latency budget on the Pi, its int8 file measured there over ssh."""
    latency = _check("latency_ms:raspberry-pi-5", 0.5, 0.4, "predicted p50 of students/fifth/model.int8.onnx")
    student = _student(checks=(_check("params", 10_000.0, 9_000.0), latency))
    data = json.loads(schema.dumps(make_report(_student("half"), student)))
    int8 = data["students"][1]["artifacts"][1]
    int8["targets"] = [RPI]
    int8["latency"][RPI] = {"p50_ms": p50, "p90_ms": p50 * 1.1, "source": "measured", "runner": "ssh", "runs": 100}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    return path


def test_cli_a_broken_measured_latency_budget_exits_1_and_says_where_the_figure_came_from(tmp_path):
    path, junit = _measured_over_ssh_report(tmp_path, 0.8), tmp_path / "gate.xml"
    result = runner.invoke(app, ["gate", str(path), "--junit", str(junit)])
    assert result.exit_code == 1, result.output
    source = "measured over ssh on raspberry-pi-5 (p50 of students/fifth/model.int8.onnx)"
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"BROKEN student=fifth budget=latency_ms:raspberry-pi-5 limit=0.5 value=0.8 source={source}"
    assert lines[-1] == "gate failed: 1 broken of 3 budgets of 2 students; latency budgets are judged on the p50 at batch 1"
    (failure,) = ET.parse(junit).getroot().findall("testcase/failure")
    assert failure.get("message") == f"value 0.8 > limit 0.5 (source: {source})"
    relaxed = runner.invoke(app, ["gate", str(path), "--budget", "fifth.latency_ms.raspberry-pi-5=0.9"])
    assert relaxed.exit_code == 0 and "gate passed" in relaxed.stdout and "p50" in relaxed.stdout, relaxed.output


def test_cli_unwritable_junit_path_is_exit_2(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(schema.dumps(make_report()))
    result = runner.invoke(app, ["gate", str(path), "--junit", str(tmp_path)])
    assert result.exit_code == 2 and "cannot write --junit" in result.stderr


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
    result = runner.invoke(app, ["gate", str(real_report), "--budget", "*.params=1%", "--junit", str(junit)])
    assert result.exit_code == 1, result.output
    broken = [line for line in result.stdout.splitlines() if line.startswith("BROKEN ")]
    students = [s.name for s in g.load_report(real_report).students]
    assert [line.split()[1] for line in broken] == [f"student={s}" for s in students]
    assert all("budget=params" in line and "source=student in PyTorch" in line for line in broken)
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuite" and int(root.get("failures")) == len(broken) == len(root.findall("testcase/failure"))
    assert not list(junit.parent.glob(".*.tmp"))  # written atomically: no temporary left behind
