import json
from pathlib import Path

import pytest

from edgedistill.data.base import Exported
from edgedistill.export.deploy import DeployArtifact, Deployment
from edgedistill.export.parity import Parity
from edgedistill.serialize import from_jsonable, to_jsonable


def test_passed_compares_error_with_tolerance():
    assert Parity(1e-4, 1e-4).passed and Parity(0.0, 0.0).passed
    assert not Parity(2e-4, 1e-4).passed
    assert not Parity(float("inf"), 1e-4).passed
    assert not Parity(float("nan"), 1e-4).passed


def test_unchecked_passes_and_says_so():
    assert Parity.unchecked() == Parity(None, None)
    assert Parity.unchecked().passed and not Parity.unchecked().checked
    assert Parity(0.5, 1e-4).checked


def test_an_error_needs_its_tolerance():
    with pytest.raises(ValueError, match="needs the tolerance"):
        Parity(1e-5, None)


def test_stage_results_round_trip_through_the_manifest_json():
    exported = Exported(Path("students/a/model.onnx"), ("input",), Parity(3e-6, 1e-4))
    deployment = Deployment(
        made=(
            DeployArtifact(
                "ort", "int8", Path("a/model.int8.ort"), Path("a/model.int8.onnx"), ("pixel-8",), Parity(float("inf"), 1e-4), ()
            ),
            DeployArtifact(
                "tensorrt", "fp16", Path("a/trtexec.sh"), Path("a/model.fp16.onnx"), ("jetson",), Parity.unchecked(), ()
            ),
        ),
        skipped=(),
    )
    for kind, value in ((Exported, exported), (Deployment, deployment)):
        data = json.loads(json.dumps(to_jsonable(value)))
        assert from_jsonable(kind, data) == value
    assert to_jsonable(exported)["parity"] == {"max_abs_err": 3e-6, "tolerance": 1e-4}
    back = from_jsonable(Deployment, json.loads(json.dumps(to_jsonable(deployment))))
    assert [d.parity.passed for d in back.made] == [False, True]
