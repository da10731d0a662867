import dataclasses
import json
import xml.etree.ElementTree as ET

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


def _artifact(fmt: str, precision: str, size: int, passed: bool = True) -> schema.Artifact:
    suffix = {"onnx": "onnx", "ort": "ort", "tensorrt": "engine"}[fmt]
    return schema.Artifact(
        format=fmt, precision=precision, path=f"students/fifth/model.{precision}.{suffix}", bytes=size,
        metrics={"accuracy": 0.9}, parity_max_abs_err=1e-6 if passed else 0.5, parity_tolerance=1e-4, passed=passed,
    )


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
    ],
)
def test_bad_override_is_a_user_error(text, expected):
    with pytest.raises(UserError, match=expected):
        g.parse_override(text)


def test_tier_names_with_dots_parse():
    assert g.parse_override("v1.2.bytes=64KiB") == g.BudgetOverride("v1.2", "bytes", g.Limit(65_536.0, relative=False))


def test_override_of_an_unknown_tier_or_a_zero_teacher_figure_is_a_user_error():
    with pytest.raises(UserError, match="no student has tier 'tenth': known tiers are fifth, half"):
        g.gate(make_report(), [g.parse_override("tenth.params=100")])
    report = make_report()
    report = dataclasses.replace(report, teacher=dataclasses.replace(report.teacher, macs=0))
    with pytest.raises(UserError, match="teacher's macs, which is 0"):
        g.gate(report, [g.parse_override("*.macs=10%")])


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
    ],
)
def test_cli_bad_selection_or_budget_is_one_line_and_exit_2(tmp_path, args, expected):
    path = tmp_path / "report.json"
    path.write_text(schema.dumps(make_report()))
    result = runner.invoke(app, ["gate", str(path), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr


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
