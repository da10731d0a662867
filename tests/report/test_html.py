"""report.html: self-contained, escaped, with its tables and plots; and Chromium renders it."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgedistill.report import html as report_html
from edgedistill.report import schema

CHROMIUM = Path("/usr/bin/chromium")
EVIL = "<b>tiny</b> & co"


def _latency(p50: float, source: str) -> schema.Latency:
    if source == "predicted":
        return schema.Latency(
            p50_ms=p50, source=source, profile="pixel-8", calibration=None, error_band=0.5,
            low_ms=p50 / 2, high_ms=p50 * 1.5,
        )
    return schema.Latency(
        p50_ms=p50, p90_ms=p50 * 1.2, p99_ms=p50 * 1.5, source=source, runner="local",
        runtime="onnxruntime 1.20", provider="CPUExecutionProvider", device="host-cpu", threads=2,
        batch=1, runs=50, throughput_batch=32, throughput_per_s=12345.0,
    )


def _artifact(fmt: str, precision: str, acc: float, latency: dict, nbytes: int = 20480, passed: bool = True,
              quantization=None, lint=(), build=None) -> schema.Artifact:
    return schema.Artifact(
        format=fmt, precision=precision, path=f"students/x/model.{precision}.{fmt}", bytes=nbytes,
        metrics={"accuracy": acc}, parity_max_abs_err=1e-6 if passed else 0.5, parity_tolerance=1e-4,
        passed=passed, latency=latency, quantization=quantization, targets=("host-cpu",), lint=lint, build=build,
    )


def _student(name: str, ok: bool, params: int, artifacts) -> schema.Student:
    checks = (
        schema.Check(name="params", limit=5000.0, value=float(params), ok=params <= 5000,
                     margin=(5000 - params) / 5000, source="student in PyTorch"),
        schema.Check(name="bytes", limit=16000.0, value=12000.0 if ok else 30000.0, ok=ok,
                     margin=0.25 if ok else -0.875, source="largest int8 file: model.int8.ort"),
    )
    return schema.Student(
        name=name, tier=name, generator={"kind": "prune", "importance": "l2"}, knob=0.35,
        budget={"spec": {"params": 5000, "bytes": 16000}, "limits": {"params": 5000.0, "bytes": 16000.0}, "precision": "int8"},
        params=params, macs=2_500_000, peak_activation_bytes=4096, metrics={"accuracy": 0.95}, within_budget=ok,
        checks=checks, distill={"epochs": 3}, artifacts=tuple(artifacts),
    )


def make_report(failures=("broken: onnx fp32 parity error 5.0e-01 exceeds 1e-04 <script>alert(1)</script>",)) -> schema.Report:
    quant = schema.QuantizationInfo(method="int8-static", reason="int8-static within 1 point of fp32",
                                    kept_float=("head.1",), fp32_accuracy=0.95, trials=())
    finding = {"runtime": "tensorrt", "model": "m.onnx", "reference": "docs",
               "findings": [{"node": "n1", "op": "NonZero", "reason": "unsupported"}]}
    build = {"built": False, "reason": "tensorrt is not importable", "command_path": "m.trtexec.sh"}
    teacher = schema.Teacher(
        source="edgedistill.examples.digits:teacher", params=25000, macs=12_000_000, bytes_fp32=100000,
        peak_activation_bytes=16384, metrics={"accuracy": 0.97}, latency={"host-cpu": _latency(0.4, "measured")},
        artifacts=(_artifact("onnx", "fp32", 0.97, {"host-cpu": _latency(0.4, "measured")}, nbytes=100000),),
    )
    good = _student(EVIL, True, 4000, [
        _artifact("onnx", "fp32", 0.95, {"host-cpu": _latency(0.1, "measured")}),
        _artifact("onnx", "int8", 0.94, {"host-cpu": _latency(0.05, "measured")}, nbytes=8000, quantization=quant),
        _artifact("ort", "int8", 0.94, {"host-cpu": _latency(0.06, "measured"), "pixel-8": _latency(0.9, "predicted")},
                  nbytes=12000),
        _artifact("tensorrt", "int8", 0.94, {}, nbytes=400, lint=(finding,), build=build),
    ])
    broken = _student("broken", False, 7000, [
        _artifact("onnx", "fp32", 0.9, {"host-cpu": _latency(0.2, "measured")}, nbytes=30000, passed=False),
        _artifact("onnx", "int8", 0.89, {"host-cpu": _latency(0.3, "predicted")}, nbytes=9000),
    ])
    return schema.Report(
        schema=schema.SCHEMA, created="2024-01-01T00:00:00+00:00", edgedistill_version="0.1.0",
        name="demo & <run>", task="classification",
        data={"source": "digits", "input_shape": [1, 8, 8], "classes": 10, "train": 1258, "val": 359, "calib": 180, "seed": 0},
        teacher=teacher, students=(good, broken), failures=tuple(failures),
        targets=({"name": "host-cpu"}, {"name": "pixel-8"}),
    )


def test_html_has_tables_plots_and_escapes_every_name():
    page = report_html.render(make_report())
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>edgedistill report: demo &amp; &lt;run&gt;</title>" in page
    for section in ("summary", "plots", "budgets", "latency", "quantization", "targets", "failures"):
        assert f'<section id="{section}"' in page
    # one accuracy/latency plot per target with latencies (host-cpu, pixel-8), then size, params, peak memory
    assert page.count("<svg") == 5
    assert "&lt;b&gt;tiny&lt;/b&gt; &amp; co" in page
    assert "<b>tiny</b>" not in page and "<script" not in page and "<run>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", page, re.I)
    assert "@import" not in page
    # the only addresses left are the SVG namespaces, which are names, not fetches
    assert set(re.findall(r"https?://[^\"' ]*", page)) <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    # the broken budget and the failed parity stand out; the predicted latency is labelled
    assert re.search(r'<tr class="bad"><td>broken</td><td>int8 file size \(KiB\)</td>.*?<td>NO</td>', page)
    assert "predicted (pixel-8 profile, uncalibrated, within ×1.5 either way)" in page
    assert "NonZero" in page and "not built here (tensorrt is not importable)" in page
    assert "int8-static within 1 point of fp32" in page


def test_html_is_deterministic_and_needs_no_failures_or_students():
    report = make_report()
    assert report_html.render(report) == report_html.render(report)
    quiet = report_html.render(dataclasses.replace(report, failures=(), students=()))
    assert 'id="failures"' not in quiet and "passed" in quiet
    assert quiet.count("<svg") == 4


def test_pareto_front_keeps_what_nothing_beats():
    points = [(0.4, 97.0), (0.1, 95.0), (0.05, 94.0), (0.06, 94.0), (0.2, 90.0), (0.3, 89.0)]
    assert report_html._pareto(points) == [(0.05, 94.0), (0.1, 95.0), (0.4, 97.0)]


def test_import_does_not_load_matplotlib():
    code = "import sys, edgedistill.report.html; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (apt-get install chromium)")
def test_chromium_renders_the_page(tmp_path):
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(report_html.render(make_report()), encoding="utf-8")
    shot = tmp_path / "shot.png"
    base = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
    ]
    url = page.as_uri()
    run = subprocess.run([*base, f"--user-data-dir={tmp_path / 'a'}", f"--screenshot={shot}", "--window-size=1280,2000", url],
                         capture_output=True, text=True, timeout=120)
    dom = subprocess.run([*base, f"--user-data-dir={tmp_path / 'b'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and dom.returncode == 0, run.stderr[-2000:] + dom.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 50  # not a blank page
    for err in (run.stderr, dom.stderr):
        assert not re.search(r"Uncaught|CONSOLE[(:]\d+|ERR_FILE_NOT_FOUND|net::ERR", err), err[-2000:]
    assert dom.stdout.count("<svg") == 5
    assert "<title>edgedistill report: demo &amp; &lt;run&gt;</title>" in dom.stdout
    for heading in ("Summary", "Plots", "Budgets", "Quantization", "Target artifacts", "Failures"):
        assert f"<h2>{heading}</h2>" in dom.stdout
