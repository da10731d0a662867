import pytest
import torch
from pydantic import ValidationError
from torch import nn

from edgedistill.compress.budget import (
    Budget,
    Footprint,
    Limit,
    check,
    check_value,
    measure,
    parse_quantity,
    resolve,
)
from edgedistill.errors import UserError


def test_conv_params_and_macs_are_hand_counted():
    fp = measure(nn.Conv2d(3, 8, 3, padding=1), (3, 10, 10))
    assert fp.params == 8 * 3 * 9 + 8
    assert fp.macs == 8 * 3 * 9 * 10 * 10
    assert fp.bytes_fp32 == 4 * fp.params


def test_linear_macs_and_peak_activation_are_hand_counted():
    fp = measure(nn.Linear(64, 10), (64,))
    assert fp.macs == 640
    assert fp.peak_activation_bytes == (64 + 10) * 4


def test_a_sequence_sums_macs_and_params():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(800, 10))
    fp = measure(model, (3, 10, 10))
    assert fp.params == (8 * 3 * 9 + 8) + (800 * 10 + 10)
    assert fp.macs == 8 * 3 * 9 * 10 * 10 + 800 * 10
    # the conv call (300 in + 800 out floats) is the largest leaf call
    assert fp.peak_activation_bytes == (300 + 800) * 4


def test_measure_leaves_training_flags_and_weights_alone(cnn):
    cnn.train()
    cnn.features[1].eval()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    measure(cnn, (1, 8, 8))
    assert cnn.training and not cnn.features[1].training and cnn.features[4].training
    # eval inside: batch-norm running statistics did not move
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (200_000, "count", Limit(200_000, False)),
        ("200k", "count", Limit(200_000, False)),
        ("1.5M", "count", Limit(1_500_000, False)),
        ("20%", "count", Limit(0.2, True)),
        ("256KB", "bytes", Limit(256_000, False)),
        ("256KiB", "bytes", Limit(262_144, False)),
        ("1.5MB", "bytes", Limit(1_500_000, False)),
        (2048, "bytes", Limit(2048, False)),
        ("2048", "bytes", Limit(2048, False)),
    ],
)
def test_parse_quantity_accepts(value, kind, expected):
    got = parse_quantity(value, kind)
    assert got.relative == expected.relative
    assert got.value == pytest.approx(expected.value)


@pytest.mark.parametrize(
    ("value", "kind"),
    [("lots", "count"), ("200KB", "count"), ("1.5k", "bytes"), ("-3", "count"), (0, "bytes"), ("%", "count"), (True, "count")],
)
def test_parse_quantity_rejects_with_one_line_naming_the_value(value, kind):
    with pytest.raises(UserError) as err:
        parse_quantity(value, kind)
    message = str(err.value)
    assert repr(value) in message and "\n" not in message and "20%" in message


def test_budget_validates_fields_and_needs_a_limit():
    b = Budget(params="20%", bytes="256KiB")
    assert b.params == Limit(0.2, True) and b.bytes == Limit(262_144, False) and b.precision == "int8"
    with pytest.raises(ValidationError, match="macs"):
        Budget(macs="many")
    with pytest.raises(ValidationError, match="at least one"):
        Budget()
    with pytest.raises(ValidationError):
        Budget(params=10, latency=3)


TEACHER = Footprint(params=1000, macs=50_000, bytes_fp32=4000, peak_activation_bytes=800)


def test_relative_limits_resolve_against_the_teacher():
    rb = resolve(Budget(params="20%", macs="50%", bytes="10%", peak_memory=100), TEACHER)
    assert rb.limits == pytest.approx({"params": 200, "macs": 25_000, "bytes": 400, "peak_memory": 100})
    assert rb.precision == "int8"


def test_bytes_at_precision():
    assert TEACHER.bytes_at("int8") == TEACHER.params
    assert TEACHER.bytes_at("fp16") == 2 * TEACHER.params
    assert TEACHER.bytes_at("fp32") == TEACHER.bytes_fp32


def test_check_flags_a_broken_budget_with_negative_margin():
    # the teacher's int8 bytes (1000) fit 2000 bytes; its 1000 params break a 500 limit
    rb = resolve(Budget(params=500, bytes=2000), TEACHER)
    checks = {c.name: c for c in check(TEACHER, rb)}
    assert not checks["params"].ok and checks["params"].margin == pytest.approx(-1.0)
    assert checks["bytes"].ok and checks["bytes"].value == 1000 and checks["bytes"].margin == pytest.approx(0.5)
    assert not check_value(rb, "bytes", 2001).ok


def test_budget_round_trips_through_json():
    b = Budget(params="20%", bytes="1.5MB", precision="fp16")
    assert Budget.model_validate_json(b.model_dump_json()) == b
