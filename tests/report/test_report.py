import dataclasses
import json

import pytest

from edgedistill.report import markdown, rows, schema


def _latency(p50: float, source: str = "measured") -> schema.Latency:
    return schema.Latency(
        p50_ms=p50, p90_ms=p50 * 1.2, p99_ms=p50 * 1.5, source=source, runner="local",
        runtime="onnxruntime 1.20", provider="CPUExecutionProvider", device="host-cpu", threads=2,
        batch=1, runs=50, throughput_batch=32, throughput_per_s=12345.0,
    )


def _artifact(precision: str, acc: float, p50: float, passed: bool = True, quantization=None) -> schema.Artifact:
    return schema.Artifact(
        format="onnx", precision=precision, path=f"students/x/model.{precision}.onnx", bytes=20480,
        metrics={"accuracy": acc}, parity_max_abs_err=1e-6 if passed else 0.5, parity_tolerance=1e-4,
        passed=passed, latency={"host-cpu": _latency(p50)}, quantization=quantization,
    )


QUANT = schema.QuantizationInfo(
    method="int8-static", reason="int8-static within 1 point of fp32", kept_float=("head.1",),
    fp32_accuracy=0.95, trials=({"method": "int8-static", "score": 0.94},), float_ops=("LayerNormalization",),
)


def _student(name: str, ok: bool, artifacts) -> schema.Student:
    check = schema.Check(
        name="params", limit=5000.0, value=4000.0 if ok else 7000.0, ok=ok,
        margin=0.2 if ok else -0.4, source="measured from the torch model",
    )
    return schema.Student(
        name=name, tier=name, generator={"kind": "prune", "importance": "l2"}, knob=0.35,
        budget={"params": "20%"}, params=4000 if ok else 7000, macs=2_500_000, peak_activation_bytes=4096,
        metrics={"accuracy": 0.95}, within_budget=ok, checks=(check,), distill={"epochs": 3},
        artifacts=tuple(artifacts),
    )


def make_report(failures=("broken: parity check failed (max |err| 0.5 > 0.0001)",)) -> schema.Report:
    teacher = schema.Teacher(
        source="edgedistill.examples.digits:teacher", params=25000, macs=12_000_000, bytes_fp32=100000,
        peak_activation_bytes=16384, metrics={"accuracy": 0.97}, latency={"host-cpu": _latency(0.4)},
        artifacts=(_artifact("fp32", 0.97, 0.4),),
    )
    good = _student("good", True, [_artifact("fp32", 0.95, 0.1), _artifact("int8", 0.94, 0.05, quantization=QUANT)])
    broken = _student("broken", False, [_artifact("fp32", 0.9, 0.2, passed=False)])
    return schema.Report(
        schema=schema.SCHEMA, created="2024-01-01T00:00:00+00:00", edgedistill_version="0.1.0",
        name="demo", task="classification",
        data={"source": "digits", "input_shape": [1, 8, 8], "classes": 10, "train": 1258, "val": 359,
              "calib": 180, "seed": 0},
        teacher=teacher, students=(good, broken), failures=tuple(failures),
    )


def test_dumps_writes_the_fields_other_tools_read():
    data = json.loads(schema.dumps(make_report()))
    assert data["schema"] == "edgedistill.report/1"
    assert data["name"] == "demo" and data["failures"]
    good, broken = data["students"]
    assert good["within_budget"] is True and broken["within_budget"] is False
    lat = good["artifacts"][0]["latency"]["host-cpu"]
    assert lat["source"] == "measured"
    for key in ("p50_ms", "p90_ms", "p99_ms", "runner", "provider", "threads", "runs", "throughput_per_s"):
        assert key in lat
    assert lat["p50_ms"] == pytest.approx(0.1)
    int8 = good["artifacts"][1]
    assert int8["precision"] == "int8"
    assert int8["quantization"]["method"] == "int8-static"
    assert int8["quantization"]["kept_float"] == ["head.1"]
    assert int8["quantization"]["float_ops"] == ["LayerNormalization"]
    assert good["artifacts"][0]["quantization"] is None
    assert broken["artifacts"][0]["passed"] is False
    assert good["checks"][0] == {"name": "params", "limit": 5000.0, "value": 4000.0, "ok": True,
                                 "margin": 0.2, "source": "measured from the torch model"}
    assert data["teacher"]["artifacts"][0]["latency"]["host-cpu"]["source"] == "measured"


def test_load_round_trips(tmp_path):
    report = make_report()
    path = tmp_path / "report.json"
    path.write_text(schema.dumps(report))
    back = schema.load(path)
    assert back == report
    assert isinstance(back.students[0].artifacts[1].quantization, schema.QuantizationInfo)
    assert isinstance(back.students[0].artifacts[1].latency["host-cpu"], schema.Latency)
    assert isinstance(back.students[0].checks, tuple)
    assert not back.passed
    assert make_report(failures=()).passed


def test_summary_rows_teacher_first_and_broken_student_not_ok():
    report = make_report()
    table = rows.summary_rows(report)
    assert [r.cells["model"] for r in table] == ["teacher", "good", "good", "broken"]
    assert table[0].cells["generator"] == "teacher" and table[0].ok
    assert [r.cells["artifact"] for r in table[1:3]] == ["onnx fp32", "onnx int8"]
    assert table[1].ok and table[2].ok
    assert table[1].cells["budget"] == "within"
    assert table[1].cells["generator"] == "prune 0.35"
    assert not table[3].ok
    assert "BROKEN" in table[3].cells["budget"] and "parity FAILED" in table[3].cells["budget"]
    assert table[1].cells["latency"].startswith("measured")
    assert table[1].cells["p50 ms"] == "0.100"
    assert table[1].cells["accuracy"] == "95.00%"
    for r in table:
        assert set(r.cells) >= set(rows.COLUMNS)
        assert len(r.pick(rows.SHORT_COLUMNS)) == len(rows.SHORT_COLUMNS)


def test_within_budget_student_with_failed_parity_is_not_ok():
    report = make_report()
    good = report.students[0]
    bad_art = dataclasses.replace(good.artifacts[0], passed=False)
    report = dataclasses.replace(report, students=(dataclasses.replace(good, artifacts=(bad_art,)),))
    (_, row) = rows.summary_rows(report)
    assert not row.ok and row.cells["budget"] == "within, parity FAILED"


def test_rows_without_host_latency_show_none():
    report = make_report()
    t = report.teacher
    art = dataclasses.replace(t.artifacts[0], latency={})
    report = dataclasses.replace(report, teacher=dataclasses.replace(t, artifacts=(art,)), students=())
    (row,) = rows.summary_rows(report)
    assert row.cells["p50 ms"] == "-" and row.cells["latency"] == "not measured here"


def test_an_unbuilt_tensorrt_engine_shows_its_script():
    report = make_report()
    t = report.teacher
    art = dataclasses.replace(
        t.artifacts[0], format="tensorrt", precision="fp16", latency={},
        build={"built": False, "reason": "tensorrt is not importable", "command_path": "model.fp16.trtexec.sh"},
    )
    report = dataclasses.replace(report, teacher=dataclasses.replace(t, artifacts=(art,)), students=())
    (row,) = rows.summary_rows(report)
    assert row.cells["artifact"] == "trt fp16" and row.cells["file"] == "script"
    assert "trtexec script" in row.cells["latency"]


def test_markdown_has_tables_budgets_quantization_and_failures():
    text = markdown.render(make_report())
    lines = text.splitlines()
    assert lines[0] == "# edgedistill report: demo"
    assert "| " + " | ".join(rows.COLUMNS) + " |" in lines
    assert "## Budgets" in lines and "## Quantization" in lines
    budget_rows = [line for line in lines if line.startswith("| broken | params")]
    assert len(budget_rows) == 1 and "**no**" in budget_rows[0]
    good_budget = [line for line in lines if line.startswith("| good | params")]
    assert len(good_budget) == 1 and "| yes |" in good_budget[0] and "**no**" not in good_budget[0]
    quant = [line for line in lines if line.startswith("| good | onnx int8 | int8-static")]
    assert len(quant) == 1
    assert "int8-static within 1 point of fp32" in quant[0]
    assert "95.00% → 94.00%" in quant[0] and "| every LayerNormalization, head.1 |" in quant[0]
    assert "## Failures" in lines
    assert "- broken: parity check failed (max |err| 0.5 > 0.0001)" in lines
    # the summary table has one row per artifact: teacher + 2 + 1
    assert sum(1 for line in lines if line.startswith("| teacher |")) == 1


def test_markdown_without_failures_has_no_failures_section():
    text = markdown.render(make_report(failures=()))
    assert "## Failures" not in text
    assert "## Budgets" in text


def test_notes_of_the_files_are_rendered_once_each_with_the_files_they_concern():
    from dataclasses import replace

    from edgedistill.report import html

    report = make_report(failures=())
    weak = "the teacher scores 13.0% on validation; distilled anyway, as allow_weak_teacher = true"
    teacher = replace(report.teacher, artifacts=tuple(replace(a, notes=(weak,)) for a in report.teacher.artifacts))
    good = replace(report.students[0], artifacts=tuple(replace(a, notes=("run elsewhere",)) for a in report.students[0].artifacts))
    report = replace(report, teacher=teacher, students=(good, report.students[1]))
    assert rows.artifact_notes(report) == [
        (weak, ("teacher: students/x/model.fp32.onnx",)),
        ("run elsewhere", ("good: students/x/model.fp32.onnx", "good: students/x/model.int8.onnx")),
    ]
    text = markdown.render(report)
    assert "## Notes" in text and f"- {weak} (`teacher: students/x/model.fp32.onnx`)" in text
    page = html.render(report)
    assert '<section id="notes">' in page and "allow_weak_teacher = true" in page
    assert "## Notes" not in markdown.render(make_report(failures=()))
