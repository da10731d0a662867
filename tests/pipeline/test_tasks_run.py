"""Every task end to end through `edgedistill run`: the task inferred from the teacher and the
labels, a student within budget, parity on every file, int8 within the task's tolerance and the
report's columns named by the task's metrics."""

import json

import numpy as np
import pytest
import tomli_w
import torch
from typer.testing import CliRunner

from edgedistill.cli import app

from conftest import segmentation_data, signal_regression_data, tag_data, tiny_segmenter

runner = CliRunner()
MEASURE = {"warmup": 1, "runs": 5, "throughput_batch": 4}


def _run(tmp_path, data: tuple[np.ndarray, np.ndarray | None], teacher: dict, **extra) -> dict:
    """`edgedistill run` of one half-size tier on `data` (saved as a .npz, y left out where None)."""
    x, y = data
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(tmp_path / "data.npz", **arrays)
    config = {
        "name": "task", "teacher": teacher, "data": {"source": "data.npz"},
        "tiers": [{"name": "half", "budget": {"params": "50%"}}],
        "teacher_training": {"epochs": 8, "alpha": 0.0}, "distill": {"epochs": 4}, "measure": MEASURE, **extra,
    }
    (tmp_path / "run.toml").write_bytes(tomli_w.dumps(config).encode())
    result = runner.invoke(app, ["run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "out" / "report.json").read_text())


def _check(report: dict, task: str, headline: str) -> dict:
    """The run's task, a student within budget whose every file passed parity and whose int8 holds
    the task's score within the tolerance, and the headline metric first in every artifact."""
    assert report["task"] == task and report["failures"] == []
    (student,) = report["students"]
    assert student["within_budget"]
    for artifact in [*report["teacher"]["artifacts"], *student["artifacts"]]:
        assert artifact["passed"] and next(iter(artifact["metrics"])) == headline
    int8 = next(a for a in student["artifacts"] if a["precision"] == "int8")
    assert int8["quantization"]["fp32_accuracy"] - int8["score"] <= 0.01 + 1e-9 or int8["quantization"]["kept_float"]
    return student


def test_a_regression_teacher_on_signals(tmp_path):
    report = _run(tmp_path, signal_regression_data(), {"factory": "conftest:tiny_signal_regressor", "train": True})
    student = _check(report, "regression", "r2")
    assert report["data"]["input_shape"] == [2, 32] and report["data"]["task_chosen"].startswith("inferred")
    fp32 = next(a for a in student["artifacts"] if a["precision"] == "fp32")
    assert fp32["metrics"]["r2"] > 0.5 and fp32["metrics"]["mae"] > 0 and "teacher r2" in fp32["metrics"]
    assert "r2 0." in (tmp_path / "out" / "report.md").read_text()


def test_a_segmentation_teacher(tmp_path, digits_xy):
    report = _run(tmp_path, segmentation_data(digits_xy), {"factory": "conftest:tiny_segmenter", "train": True})
    student = _check(report, "segmentation", "mIoU")
    assert report["data"]["output_shape"] == [3, 8, 8]
    assert student["metrics"]["mIoU"] > 0.3


def test_a_multilabel_teacher(tmp_path, digits_xy):
    report = _run(tmp_path, tag_data(digits_xy), {"factory": "conftest:tiny_tagger", "train": True})
    student = _check(report, "multilabel", "mAP")
    assert student["metrics"]["mAP"] > 0.6


def test_a_classifier_distilled_on_unlabelled_inputs(tmp_path, digits_xy, cnn_onnx):
    x, _ = digits_xy
    report = _run(tmp_path, (x, None), {"path": str(cnn_onnx)}, tiers=[{"name": "half", "budget": {"params": 3000}}])
    student = _check(report, "classification", "agreement")
    assert report["data"]["labels"].startswith("none") and report["data"]["classes"] == 0
    assert student["generator"]["kind"] == "family" and 0 < student["metrics"]["agreement"] <= 1


def test_a_teacher_of_two_outputs_is_distilled_and_exported_output_by_output(tmp_path, digits_xy, two_head_weights):
    import onnx

    x, _ = digits_xy
    report = _run(
        tmp_path, (x, None), {"factory": "conftest:tiny_two_head", "weights": str(two_head_weights)},
        tasks={"boxes": "regression", "scores": {"weight": 2.0}},
    )
    student = _check(report, "several outputs", "score")
    assert report["data"]["outputs"] == {"boxes": [4], "scores": [10]}
    assert "boxes [4] regression, set in the config" in report["data"]["task_chosen"]
    assert "scores classification ×2" in report["quality"]
    fp32 = next(a for a in student["artifacts"] if a["precision"] == "fp32")
    assert {"boxes teacher r2", "scores agreement"} <= set(fp32["metrics"])
    expected = (2 * fp32["metrics"]["scores agreement"] + fp32["metrics"]["boxes teacher r2"]) / 3
    assert fp32["metrics"]["score"] == pytest.approx(expected)
    for a in student["artifacts"]:
        assert [o.name for o in onnx.load(tmp_path / "out" / a["path"]).graph.output] == ["boxes", "scores"]


def test_labels_for_a_teacher_of_two_outputs_are_refused_in_one_line(tmp_path, digits_xy, two_head_weights):
    x, y = digits_xy
    np.savez(tmp_path / "data.npz", x=x, y=y)
    config = {
        "teacher": {"factory": "conftest:tiny_two_head", "weights": str(two_head_weights)}, "data": {"source": "data.npz"},
        "tiers": [{"name": "half", "budget": {"params": "50%"}}],
    }
    (tmp_path / "run.toml").write_bytes(tomli_w.dumps(config).encode())
    result = runner.invoke(app, ["run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "cannot be split between them: save each output's labels as y_<output>" in result.stderr


def test_each_output_trains_on_its_own_labels_where_the_data_gives_them(tmp_path, digits_xy, two_head_weights):
    from conftest import ink_boxes

    x, y = digits_xy
    np.savez(tmp_path / "data.npz", x=x, y_scores=y)
    config = {
        "name": "task", "teacher": {"factory": "conftest:tiny_two_head", "weights": str(two_head_weights)},
        "data": {"source": "data.npz"}, "tiers": [{"name": "half", "budget": {"params": "50%"}}],
        "distill": {"epochs": 4}, "measure": MEASURE, "tasks": {"boxes": "regression"},
    }
    (tmp_path / "run.toml").write_bytes(tomli_w.dumps(config).encode())
    result = runner.invoke(app, ["run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "scores [10] classification, inferred: one integer label per sample" in report["data"]["task_chosen"]
    metrics = report["students"][0]["artifacts"][0]["metrics"]
    # scores is scored on its labels, boxes (unlabelled here) against the teacher.
    assert {"scores accuracy", "scores agreement", "boxes teacher r2"} <= set(metrics) and "boxes r2" not in metrics
    assert metrics["score"] == pytest.approx((metrics["scores accuracy"] + metrics["boxes teacher r2"]) / 2)
    np.savez(tmp_path / "data.npz", x=x, y_scores=y, y_box=ink_boxes(x))
    again = runner.invoke(app, ["run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "out")])
    assert again.exit_code == 2 and "labels name(s) box, which the teacher does not output" in again.stderr


def test_an_onnx_segmentation_teacher_gets_a_dense_family_student(tmp_path, digits_xy):
    from edgedistill.export.onnx import export_onnx

    x, labels = segmentation_data(digits_xy)
    model = tiny_segmenter().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
        opt.step()
    teacher = export_onnx(model.eval(), x[:2], x[:64], tmp_path / "seg.onnx").path
    report = _run(tmp_path, (x, labels), {"path": str(teacher)}, tiers=[{"name": "small", "budget": {"params": 400}}])
    student = _check(report, "segmentation", "mIoU")
    assert student["generator"]["kind"] == "family" and student["generator"]["outputs"] == [3, 8, 8]
    assert student["metrics"]["mIoU"] > 0.3


def test_a_users_score_leads_the_report_and_early_stopping(tmp_path):
    report = _run(
        tmp_path, signal_regression_data(300), {"factory": "conftest:tiny_signal_regressor", "train": True},
        score="conftest:negative_max_error", quantize={"enabled": False},
    )
    assert report["quality"] == "score by conftest:negative_max_error"
    (student,) = report["students"]
    assert list(student["metrics"]) == ["score"] and student["metrics"]["score"] < 0
    assert all(list(a["metrics"])[:2] == ["score", "r2"] for a in student["artifacts"])


def test_a_task_that_does_not_fit_the_teacher_is_one_line(tmp_path):
    x, y = signal_regression_data(60)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    config = {
        "teacher": {"factory": "conftest:tiny_signal_regressor", "train": True}, "data": {"source": "data.npz"},
        "task": "segmentation", "tiers": [{"name": "half", "budget": {"params": "50%"}}],
    }
    (tmp_path / "run.toml").write_bytes(tomli_w.dumps(config).encode())
    result = runner.invoke(app, ["run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "segmentation takes (classes, height, width) or (classes, length) logits" in result.stderr


@pytest.mark.parametrize("task", ["bogus"])
def test_an_unknown_task_is_refused_at_load(tmp_path, task):
    config = {"teacher": {"factory": "conftest:tiny_cnn"}, "task": task, "tiers": [{"name": "a", "budget": {"params": 10}}]}
    (tmp_path / "run.toml").write_bytes(tomli_w.dumps(config).encode())
    result = runner.invoke(app, ["run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "unknown task 'bogus'" in result.stderr
