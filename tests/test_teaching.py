"""The run with teachers you cannot open (ONNX, recorded outputs, query-only) and teacher chains."""

import contextlib
import sys

import numpy as np
import pytest
import torch

from edgedistill import pipeline
from edgedistill.config import parse_config
from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx
from edgedistill.progress import Progress

from conftest import tiny_cnn, tiny_run_config


def _config(teacher, **extra) -> dict:
    """The tiny config with another teacher and absolute budgets (these teachers may not reveal their size)."""
    config = tiny_run_config()
    config["teacher"] = teacher
    config["tiers"] = [{"name": "small", "budget": {"params": 3000}}]
    config["quantize"] = {"methods": ["int8-static"]}
    config.update(extra)
    return config


@pytest.fixture(scope="module")
def teacher_onnx(tmp_path_factory, digits_xy):
    """A TinyCNN trained briefly on digits, exported to ONNX: a vendor's teacher file."""
    x, y = digits_xy
    model = tiny_cnn().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    return export_onnx(model.eval(), x[:2], x[:64], tmp_path_factory.mktemp("onnx-teacher") / "teacher.onnx").path


def test_onnx_teacher_gets_a_family_student_and_a_size_from_its_graph(teacher_onnx, tmp_path):
    config = _config(str(teacher_onnx))
    config["tiers"] = [{"name": "half", "budget": {"params": "50%"}}]
    report = pipeline.run(parse_config(config, "test"), tmp_path / "run").report
    teacher, (student,) = report.teacher, report.students
    assert teacher.kind == "onnx" and teacher.params > 0 and teacher.macs > 0
    assert teacher.metrics["accuracy"] > 0.5 and teacher.latency["host-cpu"].source == "measured"
    assert student.generator["kind"] == "family" and student.generator["outputs"] == 10
    assert student.within_budget and student.params <= 0.5 * teacher.params
    assert (tmp_path / "run" / "teacher" / "teacher.onnx").read_bytes() == teacher_onnx.read_bytes()


def test_prune_is_refused_for_an_onnx_teacher_naming_the_generators_that_can(teacher_onnx, tmp_path):
    config = _config(str(teacher_onnx))
    config["tiers"][0]["student"] = {"kind": "prune"}
    with pytest.raises(UserError, match=r"prune generator starts from the teacher's weights.*family.*scale.*custom"):
        pipeline.run(parse_config(config, "test"), tmp_path / "run")


def _record(teacher_onnx, x, path, keep=None, topk=None):
    """Record the ONNX teacher's answers on `x` (the first `keep` inputs), as logits or top-k probabilities."""
    from edgedistill.ortsession import open_session, run_batched

    logits = run_batched(open_session(teacher_onnx), x)
    x, logits = x[:keep], logits[:keep]
    if topk is None:
        np.savez(path, x=x, logits=logits)
        return path
    p = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    index = np.argsort(-p, axis=1)[:, :topk]
    np.savez(path, x=x, topk_index=index, topk_prob=np.take_along_axis(p, index, axis=1))
    return path


def test_recorded_top_k_probabilities_teach_and_the_report_says_how(teacher_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    record = _record(teacher_onnx, x, tmp_path / "top5.npz", topk=5)
    report = pipeline.run(parse_config(_config(str(record)), "test"), tmp_path / "run").report
    outputs = report.teacher.outputs
    assert report.teacher.kind == "recorded" and outputs["form"] == "top-5 probabilities"
    assert "remaining mass spread evenly over the other 5 classes" in outputs["use"]
    assert outputs["missing"] == 0
    (student,) = report.students
    assert student.within_budget and student.distill["trained_on_labels_only"] == 0


def test_inputs_the_record_lacks_are_trained_on_labels_and_counted(teacher_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    record = _record(teacher_onnx, x, tmp_path / "part.npz", keep=600)
    report = pipeline.run(parse_config(_config(str(record)), "test"), tmp_path / "run").report
    (student,) = report.students
    covered = report.teacher.outputs["covered"]
    assert 0 < covered < report.data["train"]
    assert student.distill["trained_on_labels_only"] == report.data["train"] - covered == report.teacher.outputs["missing"]
    assert "trained on labels alone" in report.teacher.outputs["use"]


def test_relative_budgets_need_a_teacher_that_reveals_its_size(teacher_onnx, digits_xy, tmp_path):
    x, _ = digits_xy
    config = _config(str(_record(teacher_onnx, x, tmp_path / "r.npz")))
    config["tiers"][0]["budget"] = {"params": "20%"}
    with pytest.raises(UserError, match="give an absolute value"):
        pipeline.run(parse_config(config, "test"), tmp_path / "run")


class _InterruptDistillation(Progress):
    """Ctrl-C in the middle of the first student's distillation."""

    @contextlib.contextmanager
    def task(self, text, total):
        def advance(done, _status):
            if text.startswith("distil") and done >= 2:
                raise KeyboardInterrupt

        yield advance


def test_query_teacher_interrupted_mid_distillation_never_asks_twice_and_keeps_its_budget(teacher_onnx, tmp_path):
    counts = tmp_path / "counts.txt"
    command = [sys.executable, "-m", "edgedistill.examples.query_client", str(teacher_onnx), "--count-file", str(counts)]
    budget = 700
    config = _config({"command": command, "max_queries": budget, "query_batch": 100})
    config["distill"] = {"epochs": 4, "patience": 4}
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(parse_config(config, "test"), out, progress=_InterruptDistillation())
    asked_first = sum(int(n) for n in counts.read_text().split())
    report = pipeline.run(parse_config(config, "test"), out).report
    asked = [int(n) for n in counts.read_text().split()]
    # Every query was sent once, in the first run; the rerun asked nothing; the budget held.
    assert sum(asked) == asked_first == budget
    outputs = report.teacher.outputs
    assert outputs["covered"] == budget and outputs["queries"]["stopped_by_budget"]
    (student,) = report.students
    assert student.within_budget and student.distill["trained_on_labels_only"] == report.data["train"] - budget


def test_a_chained_tier_learns_from_the_tier_it_names(tmp_path):
    config = tiny_run_config()
    config["tiers"] = [
        {"name": "small", "budget": {"params": "10%"}, "teacher": "tier:medium"},
        {"name": "medium", "budget": {"params": "40%"}},
    ]
    report = pipeline.run(parse_config(config, "test"), tmp_path / "run").report
    small, medium = report.students
    assert [s.name for s in report.students] == ["small", "medium"]
    assert small.distill["teacher"] == "tier:medium" and medium.distill["teacher"] == "teacher"
    assert small.within_budget and small.params <= 0.1 * report.teacher.params < medium.params
    assert (tmp_path / "run" / "students" / "medium" / "outputs.npz").is_file()


def test_a_cycle_of_tier_teachers_is_one_line():
    config = tiny_run_config()
    config["tiers"] = [
        {"name": "a", "budget": {"params": "10%"}, "teacher": "tier:b"},
        {"name": "b", "budget": {"params": "20%"}, "teacher": "tier:a"},
    ]
    with pytest.raises(UserError, match=r"cycle \(a -> b -> a\)"):
        parse_config(config, "test")


def test_born_again_generations_are_each_reported_and_the_best_kept(tmp_path):
    config = tiny_run_config()
    config["tiers"] = [{"name": "half", "budget": {"params": "50%"}, "generations": 3}]
    report = pipeline.run(parse_config(config, "test"), tmp_path / "run").report
    (student,) = report.students
    generations = student.distill["generations"]
    assert len(generations) == 3
    assert student.metrics["accuracy"] == max(generations)


def test_teacher_outputs_with_nan_are_refused_but_unanswered_rows_are_not():
    from edgedistill import teaching
    from edgedistill.compress.distill import TeacherOutputs

    cfg = parse_config(tiny_run_config(), "test")
    logits = np.zeros((4, 3), np.float32)
    logits[2] = np.nan
    known = np.array([True, True, False, True])
    teaching.check_finite(cfg, TeacherOutputs(logits, known=known))  # row 2 was never answered
    with pytest.raises(UserError, match=r"teacher conftest:tiny_cnn gives NaN or Inf in 3 of the 12 values of its logits"):
        teaching.check_finite(cfg, TeacherOutputs(logits))
    features = {"features.2": np.full((4, 2), np.inf, np.float32)}
    with pytest.raises(UserError, match=r"of its layer 'features.2'"):
        teaching.check_finite(cfg, TeacherOutputs(np.zeros((4, 3), np.float32), features))


def test_a_tier_that_compares_reports_its_student_trained_on_labels_alone(tmp_path):
    config = tiny_run_config()
    config["tiers"][1]["compare"] = True
    report = pipeline.run(parse_config(config, "test"), tmp_path / "run").report
    half, quarter = report.students
    assert "labels_only" not in half.distill
    assert 0.0 <= quarter.distill["labels_only"] <= 1.0
    md = (tmp_path / "run" / "report.md").read_text()
    training = md.split("## Training")[1].split("##")[0]
    gain = 100 * (quarter.metrics["accuracy"] - quarter.distill["labels_only"])
    assert f"({gain:+.2f} pt)" in training
