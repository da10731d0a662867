"""What a person reads: budgets with names and units, noisy figures marked, and the CLI's final
tables whole at 80 columns."""

import dataclasses
import re

import pytest
from rich.console import Console
from test_report import _latency, make_report

from edgedistill.cli import _print_table
from edgedistill.report import html as report_html
from edgedistill.report import markdown, rows, schema


# A measured figure whose spread says the machine was busy.
NOISY = dataclasses.replace(_latency(0.136), noisy=True, spread_p90=9.0, spread_p99=31.4, load=1.75)
CHECKS = (
    schema.Check("params", 5000.0, 4000.0, True, 0.2, "student in PyTorch"),
    schema.Check("macs", 5e6, 2.5e6, True, 0.5, "student in PyTorch"),
    schema.Check("bytes", 96000.0, 20480.0, True, 0.787, "largest int8 file: students/good/model.int8.onnx"),
    schema.Check("peak_memory", 65536.0, 4096.0, True, 0.9375, "student in PyTorch"),
    schema.Check("latency_ms:raspberry-pi-5", 0.3, 0.0693, True, 0.769, "predicted p50 of students/good/model.int8.onnx"),
)


def every_budget_report() -> schema.Report:
    """make_report with one student judged on every budget kind, its int8 p50 noisy."""
    report = make_report()
    good = report.students[0]
    noisy = dataclasses.replace(good.artifacts[1], latency={"host-cpu": NOISY})
    good = dataclasses.replace(good, checks=CHECKS, budget={"precision": "int8"}, artifacts=(good.artifacts[0], noisy))
    return dataclasses.replace(report, students=(good, *report.students[1:]))


def embedding_report() -> schema.Report:
    """A sentence-encoder run shaped like MiniLM's: 22M params, 86 MiB files, cosine scores."""
    report = make_report(failures=())
    metrics = {"cosine": 0.98765, "neighbours@10": 0.9123}

    def big(a: schema.Artifact, nbytes: int) -> schema.Artifact:
        return dataclasses.replace(a, bytes=nbytes, metrics=metrics, latency={"host-cpu": _latency(8.1234)})

    teacher = dataclasses.replace(
        report.teacher, source="hf:sentence-transformers/all-MiniLM-L6-v2", params=22_565_376,
        artifacts=(big(report.teacher.artifacts[0], 90_364_000),),
    )
    students = tuple(
        dataclasses.replace(s, name=name, params=11_234_567, generator={"kind": "layer-drop"}, knob=0.5,
                            artifacts=tuple(big(a, 45_000_000) for a in s.artifacts))
        for s, name in zip(report.students, ("minilm-half", "minilm-quarter"))
    )
    return dataclasses.replace(report, task="embedding", teacher=teacher, students=students)


def _terminal(report: schema.Report, width: int = 80) -> str:
    out = Console(width=width, record=True, force_terminal=False)
    _print_table(report, out)
    return out.export_text()


def test_budget_rows_name_each_check_with_its_unit_and_source():
    by_name = {r.budget: r for r in rows.budget_rows(every_budget_report()) if r.student == "good"}
    assert set(by_name) == {"params", "MACs", "int8 file size (KiB)", "peak memory (KiB)",
                            "p50 latency on raspberry-pi-5 (ms)"}
    assert (by_name["params"].limit, by_name["params"].value) == ("5,000", "4,000")
    assert (by_name["MACs"].limit, by_name["MACs"].value) == ("5.00M", "2.50M")
    assert (by_name["int8 file size (KiB)"].limit, by_name["int8 file size (KiB)"].value) == ("93.8", "20.0")
    assert (by_name["peak memory (KiB)"].limit, by_name["peak memory (KiB)"].value) == ("64.0", "4.0")
    latency = by_name["p50 latency on raspberry-pi-5 (ms)"]
    assert (latency.limit, latency.value, latency.headroom) == ("0.3", "0.0693", "76.9%")
    assert latency.source.startswith("predicted")


def test_a_latency_nothing_gave_reads_none():
    report = every_budget_report()
    good = report.students[0]
    lost = schema.Check("latency_ms:pixel-8", 4.0, float("nan"), False, float("nan"), "no latency on pixel-8")
    report = dataclasses.replace(report, students=(dataclasses.replace(good, checks=(lost,)),))
    (row,) = rows.budget_rows(report)
    assert (row.value, row.headroom, row.ok) == ("none", "-", False)


@pytest.mark.parametrize("render", ["markdown", "html", "terminal"])
def test_every_renderer_shows_budgets_as_people_read_them(render):
    report = every_budget_report()
    text = {"markdown": markdown.render, "html": report_html.render, "terminal": lambda r: _terminal(r, 200)}[render](report)
    if render == "html":
        text = text[text.index('<section id="budgets"'):text.index('<section id="latency"')]
    for label in ("p50 latency on raspberry-pi-5 (ms)", "int8 file size (KiB)", "peak memory (KiB)", "MACs"):
        assert label in text
    for figure in ("0.0693", "93.8", "5.00M", "5,000", "predicted p50 of students/good/model.int8.onnx"):
        assert figure in text
    assert "latency_ms:" not in text
    assert not re.search(r"\{'|'\}|\[\]|None", text)  # no Python literal


@pytest.mark.parametrize("render", ["markdown", "html", "terminal"])
def test_a_noisy_figure_is_marked_and_a_steady_one_is_not(render):
    draw = {"markdown": markdown.render, "html": report_html.render, "terminal": lambda r: _terminal(r, 200)}[render]
    text = draw(every_budget_report())
    assert "0.136*" in text and "0.100*" not in text and "0.400*" not in text
    assert "noisy: the spread (p99/p50 up to 31.4x, load 1.75 per core) says the machine was busy" in text
    assert "noisy" not in draw(make_report())


@pytest.mark.parametrize("make", [every_budget_report, embedding_report], ids=["cnn", "embedding"])
def test_the_final_tables_fit_80_columns_whole(make):
    report = make()
    text = _terminal(report)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    text = text[:text.index("budgets:")]  # the summary, whose names the budgets table repeats
    table = rows.summary_rows(report)
    for r in table:
        for col in ("model", "params", "artifact", "file", "score", "p50 ms"):
            assert r.cells[col] in text, (col, r.cells[col])


def test_columns_is_honoured(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    out = Console(record=True, force_terminal=False)
    assert out.width == 120
    _print_table(embedding_report(), out)
    assert max(len(line) for line in out.export_text().splitlines()) <= 120
