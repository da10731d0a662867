import json

import pytest

from edgedistill import pipeline
from edgedistill import teaching
from edgedistill.data import array_inputs
from edgedistill.pipeline import artifacts
from edgedistill.pipeline import student as student_stage
from edgedistill.config import parse_config
from edgedistill.errors import UserError

from conftest import tiny_run_config


def _counting(monkeypatch, name):
    """Count the calls of `name` in the module the run calls it from."""
    stages = {"teacher_outputs": teaching, "quantize": artifacts, "deploy": artifacts, "search": student_stage}
    module = stages.get(name, array_inputs)
    calls = []
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One real run of the tiny config, shared by the tests that only read its results."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = pipeline.run(parse_config(tiny_run_config(), "test"), out)
    return result, out


def test_report_has_a_row_per_tier_with_measured_artifacts(first_run):
    result, out = first_run
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "edgedistill.report/1"
    assert [s["tier"] for s in report["students"]] == ["half", "quarter"]
    assert report["teacher"]["latency"]["host-cpu"]["source"] == "measured"
    for student in report["students"]:
        assert student["within_budget"]
        assert {a["precision"] for a in student["artifacts"]} == {"fp32", "int8"}
        for art in student["artifacts"]:
            assert (out / art["path"]).is_file()
            assert art["latency"]["host-cpu"]["source"] == "measured"
            assert art["latency"]["host-cpu"]["p50_ms"] > 0
        fp32 = next(a for a in student["artifacts"] if a["precision"] == "fp32")
        assert fp32["parity_max_abs_err"] <= 1e-4
    assert (out / "report.md").read_text().startswith("# edgedistill report: tiny")
    assert not result.report.failures


def test_budgets_hold_and_are_relative_to_the_teacher(first_run):
    result, _ = first_run
    teacher = result.report.teacher.params
    half, quarter = result.report.students
    assert half.params <= 0.5 * teacher and quarter.params <= 0.25 * teacher
    assert quarter.params < half.params


def test_rerun_resumes_every_finished_stage(first_run, tiny_config, monkeypatch):
    _, out = first_run
    counters = {name: _counting(monkeypatch, name) for name in ("fit", "teacher_outputs", "export_onnx", "quantize", "search")}
    pipeline.run(parse_config(tiny_config, "test"), out)
    assert {name: len(calls) for name, calls in counters.items()} == dict.fromkeys(counters, 0)


def test_changed_distill_config_redoes_students_but_not_the_teacher(tiny_config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    pipeline.run(parse_config(tiny_config, "test"), out)
    counters = {name: _counting(monkeypatch, name) for name in ("fit", "teacher_outputs")}
    tiny_config["distill"]["epochs"] = 3
    pipeline.run(parse_config(tiny_config, "test"), out)
    # Two students distilled again; the teacher neither retrained nor re-run.
    assert len(counters["fit"]) == 2
    assert counters["teacher_outputs"] == []


def test_teacher_outputs_are_computed_once_for_all_tiers(tiny_config, tmp_path, monkeypatch):
    calls = _counting(monkeypatch, "teacher_outputs")
    tiny_config["tiers"].append({"name": "tenth", "budget": {"params": "10%"}})
    pipeline.run(parse_config(tiny_config, "test"), tmp_path / "run")
    assert len(calls) == 1


def test_force_redoes_finished_stages(first_run, tiny_config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    pipeline.run(parse_config(tiny_config, "test"), out)
    calls = _counting(monkeypatch, "fit")
    pipeline.run(parse_config(tiny_config, "test"), out, force=True)
    assert len(calls) == 3  # the teacher and both students


def test_parity_failure_is_reported(tiny_config, tmp_path):
    tiny_config["export"] = {"parity_tolerance": 1e-12}
    tiny_config["tiers"] = tiny_config["tiers"][:1]
    result = pipeline.run(parse_config(tiny_config, "test"), tmp_path / "run")
    assert result.report.failures
    assert "parity error" in result.report.failures[0]
    assert (tmp_path / "run" / "report.json").is_file()


def test_a_bytes_budget_is_judged_on_the_file_each_target_deploys(tiny_config, tmp_path):
    tiny_config["tiers"] = [{"name": "small", "budget": {"bytes": "6KB"}}]
    result = pipeline.run(parse_config(tiny_config, "test"), tmp_path / "run")
    (student,) = result.report.students
    (deployed,) = student.deployed
    shipped = next(a for a in student.artifacts if a.path == deployed.path)
    assert deployed.target == "host-cpu" and shipped.deployed_for == ("host-cpu",)
    assert [a.path for a in student.artifacts if a.deployed_for] == [shipped.path]
    bytes_check = next(c for c in student.checks if c.name == "bytes")
    assert bytes_check.value == shipped.bytes and bytes_check.ok == (shipped.bytes <= 6000)
    assert bytes_check.source == f"largest deployed file: {shipped.path} ({shipped.precision}, for host-cpu)"


def test_unreachable_budget_is_a_user_error(tiny_config, tmp_path):
    tiny_config["tiers"] = [{"name": "impossible", "budget": {"params": 10}}]
    with pytest.raises(UserError, match="cannot be met"):
        pipeline.run(parse_config(tiny_config, "test"), tmp_path / "run")


def test_labels_beyond_the_teacher_outputs_are_a_user_error(tiny_config, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((200, 1, 8, 8), dtype=np.float32), y=np.arange(200) % 12)
    tiny_config["data"] = {"source": str(tmp_path / "d.npz")}
    with pytest.raises(UserError, match="labels go up to 11"):
        pipeline.run(parse_config(tiny_config, "test"), tmp_path / "run")


def test_data_that_does_not_fit_the_teacher_is_a_user_error(tiny_config, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((100, 3, 5, 5), dtype=np.float32), y=np.arange(100) % 10)
    tiny_config["data"] = {"source": str(tmp_path / "d.npz")}
    with pytest.raises(UserError, match="does not fit the teacher"):
        pipeline.run(parse_config(tiny_config, "test"), tmp_path / "run")


def test_a_run_is_repeatable(tiny_config, tmp_path):
    # TinyCNN (the class) initialises from the global RNG, unlike the seeded tiny_cnn() factory.
    tiny_config["teacher"]["factory"] = "conftest:TinyCNN"
    tiny_config["tiers"] = tiny_config["tiers"][:1]
    # One int8 method: with two, the faster by measured p50 wins, which timing noise may flip.
    tiny_config["quantize"] = {"methods": ["int8-static"]}
    reports = [pipeline.run(parse_config(tiny_config, "test"), tmp_path / name).report for name in ("a", "b")]
    a, b = ([(s.params, s.knob, s.metrics, [x.metrics for x in s.artifacts]) for s in r.students] for r in reports)
    assert reports[0].teacher.metrics == reports[1].teacher.metrics
    assert a == b


@pytest.fixture
def pt2_teacher(tmp_path):
    import torch

    from conftest import tiny_cnn

    program = torch.export.export(
        tiny_cnn(), (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    path = tmp_path / "teacher.pt2"
    torch.export.save(program, path)
    return path


def test_a_pt2_teacher_serves_scale_students(tiny_config, tmp_path, pt2_teacher):
    tiny_config["teacher"] = {"path": str(pt2_teacher)}
    tiny_config["allow_weak_teacher"] = True  # the pt2 program is the untrained TinyCNN
    tiny_config["tiers"] = [{"name": "s", "budget": {"params": "50%"}, "student": {"kind": "scale", "family": "conftest:tiny_cnn"}}]
    result = pipeline.run(parse_config(tiny_config, "test"), tmp_path / "run")
    (student,) = result.report.students
    assert student.within_budget and result.report.teacher.params == 3866


def test_a_pt2_teacher_cannot_be_pruned(tiny_config, tmp_path, pt2_teacher):
    tiny_config["teacher"] = {"path": str(pt2_teacher)}
    tiny_config["allow_weak_teacher"] = True  # the pt2 program is the untrained TinyCNN
    with pytest.raises(UserError, match="scale or custom"):
        pipeline.run(parse_config(tiny_config, "test"), tmp_path / "run")


def test_a_latency_budget_changes_which_student_the_search_picks(tmp_path):
    config = {
        "name": "latency",
        "teacher": {"factory": "edgedistill.examples.digits:teacher"},
        "targets": ["host-cpu", "raspberry-pi-5"],
        "tiers": [{"name": "free", "budget": {"params": "50%", "latency_ms": {"raspberry-pi-5": 1000.0}}}],
        "distill": {"epochs": 1},
        "measure": {"warmup": 1, "runs": 5, "throughput_batch": 4},
        "allow_weak_teacher": True,  # the digits teacher untrained: only its size matters here
    }
    free = pipeline.run(parse_config(config, "test"), tmp_path / "free").report.students[0]
    check = next(c for c in free.checks if c.name == "latency_ms:raspberry-pi-5")
    assert check.ok and check.source.startswith("predicted p50 of")
    config["tiers"] = [{"name": "fast", "budget": {"params": "50%", "latency_ms": {"raspberry-pi-5": 0.6 * check.value}}}]
    fast = pipeline.run(parse_config(config, "test"), tmp_path / "fast").report.students[0]
    assert fast.knob < free.knob and fast.params < free.params
    # The same parameter budget alone would have picked the larger student: MACs and params do not decide.
    assert free.params <= 0.5 * 160074


def test_a_latency_budget_on_a_target_outside_the_run_is_a_user_error(tiny_config, tmp_path):
    tiny_config["tiers"] = [{"name": "t", "budget": {"latency_ms": {"pixel-8": 1.0}}}]
    with pytest.raises(UserError, match="not among the run's targets"):
        pipeline.run(parse_config(tiny_config, "test"), tmp_path / "run")


def test_every_artifact_gets_a_latency_on_each_of_its_targets(tiny_config, tmp_path):
    tiny_config["targets"] = ["host-cpu", "pixel-8", "raspberry-pi-5"]
    tiny_config["tiers"] = tiny_config["tiers"][:1]
    report = pipeline.run(parse_config(tiny_config, "test"), tmp_path / "run").report
    for a in report.students[0].artifacts:
        for target in a.targets:
            lat = a.latency[target]
            assert lat.source == ("measured" if target == "host-cpu" else "predicted")
            if lat.source == "predicted":
                assert lat.profile == target and lat.low_ms < lat.p50_ms < lat.high_ms
    assert {"pixel-8", "raspberry-pi-5"} <= set(report.teacher.latency)
