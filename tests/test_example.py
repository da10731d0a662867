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


def test_every_artifact_has_a_measured_host_latency(report):
    artifacts = [*report.teacher.artifacts, *(a for s in report.students for a in s.artifacts)]
    assert len(artifacts) == 7
    for a in artifacts:
        assert a.latency["host-cpu"].source == "measured"
        assert 0 < a.latency["host-cpu"].p50_ms <= a.latency["host-cpu"].p99_ms
