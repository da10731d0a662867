"""Quantization-aware training in the run: when it runs, what the report says of it, which int8
ships, and that a rerun takes it from the run directory."""

from __future__ import annotations

from conftest import SaidProgress

from edgedistill import pipeline
from edgedistill.config import parse_config


def _one_tier(cfg: dict, quantize: dict) -> dict:
    cfg["tiers"] = cfg["tiers"][:1]
    cfg["quantize"] = quantize
    return cfg


def test_qat_runs_beside_post_training_int8_and_the_better_one_ships(tiny_config, tmp_path):
    cfg = parse_config(_one_tier(tiny_config, {"qat": True, "qat_epochs": 2}), "test")
    result = pipeline.run(cfg, tmp_path / "run")
    (student,) = result.report.students
    int8 = next(a for a in student.artifacts if (a.format, a.precision) == ("onnx", "int8"))
    qat = int8.quantization.qat
    assert qat is not None and qat["shipped"] in ("qat", "post-training")
    assert 0 <= qat["post_training_accuracy"] <= 1 and 0 <= qat["qat_accuracy"] <= 1
    assert 1 <= qat["epochs_run"] <= 2 and qat["lr"] == cfg.distill.lr / 10
    # The file entered is the one that shipped, scored as the report says.
    shipped = "model.int8.qat.onnx" if qat["shipped"] == "qat" else "model.int8.onnx"
    assert int8.path.endswith(shipped)
    assert int8.metrics["accuracy"] == qat["qat_accuracy" if qat["shipped"] == "qat" else "post_training_accuracy"]
    assert (tmp_path / "run" / "students" / "half" / "qat.onnx").is_file()
    text = (tmp_path / "run" / "report.md").read_text()
    assert "post-training → QAT" in text and f"{qat['shipped']} shipped" in text

    said = SaidProgress()
    pipeline.run(cfg, tmp_path / "run", progress=said)
    assert "half: trained with int8 in the loop earlier" in said.lines


def test_qat_does_not_run_where_post_training_int8_holds(tiny_config, tmp_path):
    # A tolerance of the whole score: post-training int8 always holds it.
    cfg = parse_config(_one_tier(tiny_config, {"max_accuracy_drop": 1.0}), "test")
    (student,) = pipeline.run(cfg, tmp_path / "run").report.students
    int8 = next(a for a in student.artifacts if a.precision == "int8")
    assert int8.quantization.qat is None
    assert not (tmp_path / "run" / "students" / "half" / "qat.onnx").exists()
