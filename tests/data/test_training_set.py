"""What students train on: synthetic inputs from the teacher (data-free), a given set, the split."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SaidProgress, tiny_cnn, tiny_run_config

from edgedistill import pipeline
from edgedistill.config import parse_config
from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx

SYNTHESIS = {"samples": 48, "real": 0, "steps": 4, "batch_size": 24}


def _config(**data) -> dict:
    config = tiny_run_config()
    config["tiers"] = config["tiers"][:1]
    config["data"] = {"source": "digits", **data}
    return config


def test_a_data_free_run_trains_students_on_synthetic_inputs_alone_and_says_so(tmp_path):
    report = pipeline.run(parse_config(_config(synthetic=SYNTHESIS), "test"), tmp_path / "run").report
    d = report.data
    assert (d["synthetic"], d["real_train"], d["train"], d["calibration"]) == (48, 0, 48, "synthetic")
    assert "BatchNorm" in d["synthesis"] and 0 <= d["synthetic_agreement"] <= 1
    assert d["val"] == 359  # students are still scored on the real validation split
    with np.load(tmp_path / "run" / "data" / "synthetic.npz") as saved:
        assert saved["x"].shape == (48, 1, 8, 8)
    (student,) = report.students
    assert student.distill["trained_with_teacher"] == 48


def test_synthetic_inputs_are_made_once_and_their_settings_never_retrain_the_teacher(tmp_path):
    pipeline.run(parse_config(_config(synthetic=SYNTHESIS), "test"), tmp_path / "run")
    said = SaidProgress()
    pipeline.run(parse_config(_config(synthetic=SYNTHESIS), "test"), tmp_path / "run", progress=said)
    assert "data: synthetic inputs made earlier, read from the run directory" in said.lines
    said = SaidProgress()
    pipeline.run(parse_config(_config(synthetic={**SYNTHESIS, "steps": 3}), "test"), tmp_path / "run", progress=said)
    assert any(line.startswith("data: synthesising 48 inputs") for line in said.lines)
    assert "teacher: trained earlier, loaded from the run directory" in said.lines


def test_real_samples_join_the_synthetic_ones_and_calibrate(tmp_path):
    report = pipeline.run(parse_config(_config(synthetic={**SYNTHESIS, "real": 100}), "test"), tmp_path / "run").report
    assert (report.data["train"], report.data["real_train"], report.data["calibration"]) == (148, 100, "real")


def test_a_given_training_set_replaces_the_split_for_students_only(tmp_path, digits_xy):
    x, y = digits_xy
    np.savez(tmp_path / "small.npz", x=x[:60], y=y[:60])
    report = pipeline.run(parse_config(_config(train=str(tmp_path / "small.npz")), "test"), tmp_path / "run").report
    assert report.data["train"] == 60 and report.data["train_source"].endswith("small.npz")
    assert report.data["teacher_training"]["val_score"] > 0  # the teacher trained on the source's split


def test_a_given_training_set_of_other_inputs_is_one_line(tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((20, 3, 4, 4), np.float32), y=np.arange(20) % 2)
    with pytest.raises(UserError, match=r"data.train .*wrong.npz holds inputs of shape \(3, 4, 4\)"):
        pipeline.run(parse_config(_config(train=str(tmp_path / "wrong.npz")), "test"), tmp_path / "run")


def test_synthesis_through_an_onnx_teacher_is_one_line(tmp_path, digits_xy):
    x, _ = digits_xy
    path = export_onnx(tiny_cnn(), x[:2], x[:16], tmp_path / "t.onnx").path
    config = _config(synthetic=SYNTHESIS)
    config["teacher"] = {"path": str(path)}
    config["tiers"] = [{"name": "small", "budget": {"params": 3000}}]
    with pytest.raises(UserError, match="data.synthetic optimises inputs through the teacher's gradients"):
        pipeline.run(parse_config(config, "test"), tmp_path / "run")


def test_synthesis_for_data_without_class_labels_is_one_line(tmp_path):
    config = _config(synthetic=SYNTHESIS, labels=False)
    config["teacher"] = {"factory": "conftest:tiny_cnn"}
    with pytest.raises(UserError, match="data.synthetic makes inputs the teacher gives each class to"):
        pipeline.run(parse_config(config, "test"), tmp_path / "run")


def test_a_given_training_set_must_be_labelled_as_the_source_is(tmp_path, digits_xy):
    x, _ = digits_xy
    np.savez(tmp_path / "unlabelled.npz", x=x[:50])
    with pytest.raises(UserError, match=r"data.train .*unlabelled.npz lacks labels and the data source has them"):
        pipeline.run(parse_config(_config(train=str(tmp_path / "unlabelled.npz")), "test"), tmp_path / "run")


@pytest.mark.parametrize("value", [True, 0, {"samples": 10, "colour": 1}])
def test_a_synthetic_setting_that_is_not_a_count_or_table_is_refused(value):
    with pytest.raises(UserError, match="data.synthetic"):
        parse_config(_config(synthetic=value), "test")


def test_a_count_alone_is_that_many_inputs():
    assert parse_config(_config(synthetic=500), "test").data.synthetic.samples == 500
