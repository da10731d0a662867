"""The built-in digits example, end to end: what `edgedistill run` with no arguments promises."""

import pytest

from edgedistill.config import load_config
from edgedistill.examples.digits import config_path
from edgedistill.pipeline import run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run(load_config(config_path("digits")), tmp_path_factory.mktemp("digits")).report


def test_teacher_is_accurate(report):
    assert report.teacher.metrics["accuracy"] >= 0.97


def test_three_students_within_their_budgets(report):
    assert len(report.students) == 3
    assert all(s.within_budget for s in report.students)
    assert all(c.ok for s in report.students for c in s.checks)


def test_the_fifth_keeps_98_percent_of_the_teacher(report):
    fifth = next(s for s in report.students if s.budget["spec"]["params"] == "20%")
    assert fifth.params <= 0.2 * report.teacher.params
    assert fifth.metrics["accuracy"] >= 0.98 * report.teacher.metrics["accuracy"]


def test_int8_loses_at_most_one_point_and_fp32_parity_holds(report):
    for s in report.students:
        fp32 = next(a for a in s.artifacts if a.precision == "fp32")
        int8 = next(a for a in s.artifacts if a.precision == "int8")
        assert fp32.parity_max_abs_err <= 1e-4
        assert int8.metrics["accuracy"] >= fp32.metrics["accuracy"] - 0.01


def test_every_onnx_and_ort_artifact_has_a_measured_host_latency(report):
    artifacts = [*report.teacher.artifacts, *(a for s in report.students for a in s.artifacts)]
    runnable = [a for a in artifacts if a.format in ("onnx", "ort")]
    assert len(runnable) == 1 + 3 * 5  # teacher fp32; per student fp32, int8, fp16 and the int8 and fp32 .ort
    for a in runnable:
        assert a.latency["host-cpu"].source == "measured"
        assert 0 < a.latency["host-cpu"].p50_ms <= a.latency["host-cpu"].p99_ms


def test_every_target_deploys_one_file_of_each_student_and_bytes_are_judged_on_them(report):
    names = [t["name"] for t in report.targets]
    for s in report.students:
        assert [d.target for d in s.deployed] == names
        for d in s.deployed:
            shipped = next(a for a in s.artifacts if a.path == d.path)
            assert d.target in shipped.deployed_for and d.reason
        size = next((c for c in s.checks if c.name == "bytes"), None)
        if size is not None:
            assert size.value == max(a.bytes for a in s.artifacts if a.deployed_for and a.format != "tensorrt")


def test_phone_and_jetson_artifacts_agree_and_lint_clean(report):
    for s in report.students:
        by_kind = {(a.format, a.precision): a for a in s.artifacts}
        ort, fp16 = by_kind[("ort", "int8")], by_kind[("onnx", "fp16")]
        assert ort.targets == ("pixel-8",) and ort.passed and ort.parity_max_abs_err is not None
        assert fp16.targets == ("jetson-orin-nano",) and fp16.passed
        for precision in ("fp16", "int8"):
            trt = by_kind[("tensorrt", precision)]
            assert trt.build["command"].startswith("trtexec") or "trtexec" in trt.build["command"]
            assert trt.lint and all(not r["findings"] for r in trt.lint)
        assert all(not r["findings"] for r in ort.lint)
        # TensorRT's int8 comes from the symmetric QDQ model: within a point of fp32 too.
        fp32 = by_kind[("onnx", "fp32")].metrics["accuracy"]
        assert by_kind[("tensorrt", "int8")].metrics["accuracy"] >= fp32 - 0.01


def test_the_default_example_is_the_sensor_digits_with_a_tier_that_compares():
    from edgedistill.cli import DEFAULT_EXAMPLE

    cfg = load_config(config_path(DEFAULT_EXAMPLE))
    assert DEFAULT_EXAMPLE == "sensor-digits" and cfg.data.source == "sensor-digits"
    assert [t.compare for t in cfg.tiers] == [False, False, True]


@pytest.mark.slow
def test_the_default_examples_smallest_tier_gains_from_distillation_and_int8_pays_on_this_cpu(tmp_path):
    from edgedistill.cli import DEFAULT_EXAMPLE

    report = run(load_config(config_path(DEFAULT_EXAMPLE)), tmp_path / "run").report
    smallest = report.students[-1]
    assert smallest.metrics["accuracy"] > smallest.distill["labels_only"]
    assert smallest.distill["labels_only"] < report.teacher.metrics["accuracy"] - 0.01
    half = {(a.format, a.precision): a for a in report.students[0].artifacts}
    assert half[("onnx", "int8")].latency["host-cpu"].p50_ms < half[("onnx", "fp32")].latency["host-cpu"].p50_ms
