import json

import pytest
import tomli_w
from typer.testing import CliRunner

from edgedistill.cli import app

runner = CliRunner()


def _write(tmp_path, config: dict):
    path = tmp_path / "run.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    return path


def _one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    # Progress may precede it on stdout; the error is one line on stderr.
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_help_explains_every_flag():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    for flag in ("--example", "--teacher", "--out", "--force", "--debug", "CONFIG"):
        assert flag in result.output


@pytest.mark.parametrize("command", ["run", "bench", "calibrate"])
def test_help_shows_the_perf_test_binary_of_each_runtime(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for shown in ("--perf-test", "[RUNTIME=]PATH", "PATH: onnxruntime_perf_test (.onnx, .ort)",
                  "litert=PATH: benchmark_model (.tflite)", "executorch=PATH: executor_runner (.pte)"):
        assert shown in text, shown


def test_an_unknown_perf_test_runtime_is_one_line(tmp_path, tiny_config):
    line = _one_line_error(runner.invoke(app, ["run", str(_write(tmp_path, tiny_config)), "--perf-test", "tflite=x"]))
    assert "'tflite' is not a runtime" in line and "litert=PATH" in line


def test_a_perf_test_that_timed_nothing_fails_the_run_once_the_report_is_written(tmp_path, tiny_config):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"x")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(_write(tmp_path, tiny_config)), "--out", str(out), "--perf-test", f"litert={binary}"])
    line = _one_line_error(result)
    assert f"--perf-test litert={binary} times .tflite files, and this run made none" in line
    assert "the report is written" in line and (out / "report.json").is_file()


def test_run_prints_the_table_and_writes_the_report(tmp_path, tiny_config):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(_write(tmp_path, tiny_config)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "teacher" in result.output and "quarter" in result.output
    assert json.loads((out / "report.json").read_text())["name"] == "tiny"


@pytest.mark.parametrize("name, message", [("gone.onnx", "does not exist"), ("notes.txt", "is not an .onnx")])
def test_a_bad_teacher_file_is_one_line(tmp_path, tiny_config, name, message):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("x")
    result = runner.invoke(app, ["run", str(_write(tmp_path, tiny_config)), "--teacher", str(tmp_path / name)])
    assert message in _one_line_error(result)


def test_teacher_override_keeps_data_and_tiers_and_renames_the_run(tmp_path, tiny_config):
    from edgedistill.config import parse_config, with_teacher

    onnx = tmp_path / "vendor.onnx"
    onnx.write_bytes(b"")
    cfg = with_teacher(parse_config(tiny_config, "t"), onnx)
    assert cfg.name == "tiny-vendor" and cfg.teacher.kind == "onnx" and cfg.teacher.path == str(onnx.resolve())
    assert cfg.tiers == parse_config(tiny_config, "t").tiers and cfg.data == parse_config(tiny_config, "t").data


def test_unknown_example():
    assert "unknown example" in _one_line_error(runner.invoke(app, ["run", "--example", "nope"]))


def test_parity_failure_exits_1_and_keeps_the_report(tmp_path, tiny_config):
    tiny_config["export"] = {"parity_tolerance": 1e-12}
    tiny_config["tiers"] = tiny_config["tiers"][:1]
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(_write(tmp_path, tiny_config)), "--out", str(out)])
    assert result.exit_code == 1
    assert "parity error" in result.output
    assert (out / "report.json").is_file()


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("name = [")
    result = runner.invoke(app, ["run", str(path), "--debug"])
    assert result.exit_code != 0
    assert result.exception is not None


def test_factories_resolve_from_the_config_folder(tmp_path, tiny_config):
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))\n"
    )
    tiny_config["teacher"]["factory"] = "my_models:build"
    tiny_config["tiers"] = tiny_config["tiers"][:1]
    result = runner.invoke(app, ["run", str(_write(tmp_path, tiny_config)), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    import numpy as np

    from conftest import tiny_cnn
    from edgedistill.export.onnx import export_onnx

    x = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)
    return export_onnx(tiny_cnn(), x[:2], x, tmp_path_factory.mktemp("m") / "cnn.onnx").path


def test_lint_clean_exits_0_and_writes_json(onnx_file, tmp_path):
    result = runner.invoke(app, ["lint", str(onnx_file), "--runtime", "tensorrt", "--json", str(tmp_path / "l.json")])
    assert result.exit_code == 0, result.output
    assert "clean" in result.output
    assert json.loads((tmp_path / "l.json").read_text())["findings"] == []


def test_lint_findings_exit_1(onnx_file, tmp_path):
    config = tmp_path / "ops.config"
    config.write_text("ai.onnx;18;Conv,Relu\n")
    result = runner.invoke(app, ["lint", str(onnx_file), "--runtime", "ort-mobile", "--ops-config", str(config)])
    assert result.exit_code == 1
    assert "MaxPool" in result.output and "Gemm" in result.output


def test_lint_bad_input_is_one_line(onnx_file, tmp_path):
    assert "tensorrt" in _one_line_error(runner.invoke(app, ["lint", str(onnx_file), "--runtime", "snpe"]))
    assert ".mlpackage" in _one_line_error(runner.invoke(app, ["lint", str(onnx_file), "--runtime", "coreml"]))
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[:100])
    assert "not a valid ONNX" in _one_line_error(runner.invoke(app, ["lint", str(truncated)]))


def test_export_writes_the_artifact(onnx_file, tmp_path):
    result = runner.invoke(app, ["export", str(onnx_file), "--format", "ort", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cnn.fp32.ort").is_file() or any(tmp_path.glob("*.ort"))
    assert "parity" in result.output


def test_export_bad_format_is_one_line(onnx_file):
    assert "--format" in _one_line_error(runner.invoke(app, ["export", str(onnx_file), "--format", "onnx-tf"]))


def test_targets_lists_the_profiles():
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0
    for name in ("host-cpu", "pixel-8", "jetson-orin-nano"):
        assert name in result.output


@pytest.mark.parametrize("command", [[], ["run"], ["export"], ["lint"], ["gate"], ["targets"], ["bench"], ["calibrate"]])
def test_help_shows_no_type_for_flags(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


def test_progress_line_says_the_budget_as_a_config_does():
    from edgedistill.config import TierConfig

    tier = TierConfig(name="pi-fast", budget={"params": "10%", "bytes": "96KB", "latency_ms": {"raspberry-pi-5": 0.3}})
    assert tier.budget_text() == "params <= 10%, bytes <= 96 KB, latency on raspberry-pi-5 <= 0.3 ms"
    tier = TierConfig(name="t", budget={"macs": "5M", "peak_memory": "64KiB", "params": 200000})
    assert tier.budget_text() == "params <= 200,000, macs <= 5M, peak memory <= 64 KiB"


@pytest.mark.parametrize("key", ["[/x]", "[bold]"])
def test_an_error_quoting_brackets_prints_them_as_text(tmp_path, tiny_config, key):
    # Rich reads "[...]" as a style: unescaped, "[/x]" raised MarkupError and "[bold]" vanished.
    tiny_config[key] = 1
    line = _one_line_error(runner.invoke(app, ["run", str(_write(tmp_path, tiny_config))]))
    assert f"unknown key '{key}'" in line
