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


def test_a_nan_error_is_kept_as_inf_and_fails_through_the_manifest():
    parity = Parity(float("nan"), 1e-4)
    assert parity.max_abs_err == float("inf") and parity.checked and not parity.passed
    back = from_jsonable(Exported, json.loads(json.dumps(to_jsonable(Exported(Path("m.onnx"), ("input",), parity)))))
    assert back.parity == parity and not back.parity.passed


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["got", "want", "both"])
def test_max_abs_err_is_inf_where_either_output_is_not_finite(bad, where):
    import numpy as np

    from edgedistill.export.parity import max_abs_err

    clean = np.zeros((4, 3), np.float32)
    dirty = clean.copy()
    dirty[2, 1] = bad
    got, want = (dirty if where in ("got", "both") else clean), (dirty if where in ("want", "both") else clean)
    assert max_abs_err(got, want) == float("inf")
    assert not Parity(max_abs_err(got, want), 1e-4).passed


def test_max_abs_err_of_finite_outputs_and_of_mismatched_shapes():
    import numpy as np

    from edgedistill.export.parity import max_abs_err

    a = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    assert max_abs_err(a, a + np.float32(0.5)) == pytest.approx(0.5)
    assert max_abs_err(a, a[:1]) == float("inf")
    assert max_abs_err(a[:0], a[:0]) == 0.0
