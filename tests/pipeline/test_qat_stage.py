"""Quantization-aware training in the run: when it runs, what the report says of it, which int8
ships, and that a rerun takes it from the run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from conftest import SaidProgress

from edgedistill import pipeline
from edgedistill.compress.quantize import QuantResult
from edgedistill.config import parse_config
from edgedistill.export.formats.base import QAT_NOTE
from edgedistill.pipeline import qat as qat_stage


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


def _int8_weights(path) -> dict[str, np.ndarray]:
    """The int8 weight tensors of a Q/DQ file, by initializer name."""
    graph = onnx.load(str(path)).graph
    return {
        i.name: numpy_helper.to_array(i) for i in graph.initializer
        if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2
    }


def test_where_qat_ships_the_int8_files_for_targets_are_made_from_its_student(tiny_config, tmp_path, monkeypatch):
    # Which int8 ships is the decision under test elsewhere; here QAT's does, with weights of its
    # own (a few QAT epochs on this tiny student may keep its calibrated start as it is).
    monkeypatch.setattr(qat_stage, "better", lambda _qat, _post, _drop: (True, "QAT ships (this test)"))
    real = qat_stage.fake.unwrapped

    def moved(model):
        plain = real(model)
        with torch.no_grad():
            weight = plain.head[-1].weight  # each input's weights moved apart: another int8 grid, the same answers
            weight.mul_(torch.linspace(0.9, 1.1, weight.shape[1]))
        return plain

    monkeypatch.setattr(qat_stage.fake, "unwrapped", moved)
    cfg = _one_tier(tiny_config, {"qat": True, "qat_epochs": 1})
    cfg["targets"] = ["host-cpu", "jetson-orin-nano"]
    (student,) = pipeline.run(parse_config(cfg, "test"), tmp_path / "run").report.students
    folder = tmp_path / "run" / "students" / "half"
    trt = next(a for a in student.artifacts if (a.format, a.precision) == ("tensorrt", "int8"))
    assert QAT_NOTE in trt.notes
    # Held to the score before QAT, as the run's int8 is, not to the QAT student's own fp32.
    onnx_int8 = next(a for a in student.artifacts if (a.format, a.precision) == ("onnx", "int8"))
    assert trt.quantization.fp32_accuracy == onnx_int8.quantization.fp32_accuracy
    # TensorRT's symmetric file holds the QAT student's weights, on the grid the QAT int8 holds them.
    names = ("model.int8-symmetric.onnx", "model.int8.qat.onnx", "model.int8.onnx")
    symmetric, trained, post = (_int8_weights(folder / name) for name in names)
    assert symmetric.keys() == trained.keys() and symmetric
    assert all(np.array_equal(symmetric[k], trained[k]) for k in symmetric)
    head = "head.1.weight_quantized"
    assert post.keys() == symmetric.keys() and not np.array_equal(symmetric[head], post[head])
    assert (folder / "qat.pt").is_file()


def _int8(score: float, kept: tuple[str, ...] = (), float_ops: tuple[str, ...] = ()) -> QuantResult:
    return QuantResult(Path("m.onnx"), "int8-static", 1000, score, 0.95, kept, (), "why", float_ops=float_ops)


def test_of_two_int8_that_hold_the_one_with_less_in_float_ships_op_types_first():
    """Every node of an op type in float is more float than any number of single layers."""
    wide = _int8(0.945, float_ops=("LayerNormalization",))
    shipped, why = qat_stage.better(_int8(0.944, kept=("a", "b")), wide, 0.01)
    assert shipped and "less in float" in why and "every LayerNormalization and 0 layer(s) in float" in why
    assert not qat_stage.better(wide, _int8(0.944, kept=("a",)), 0.01)[0]
