from pathlib import Path

import onnx
import pytest
from conftest import tiny_cnn
from onnx import TensorProto, helper

from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx
from edgedistill.targets.android_tools import PerfTests
from edgedistill.targets.runners import RUNNERS, Measurement, Reach
from edgedistill.targets.runners.local import LocalRunner


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory, digits_xy):
    x, _ = digits_xy
    return export_onnx(tiny_cnn(), x[:2], x[:16], tmp_path_factory.mktemp("cnn") / "cnn.onnx").path


def test_local_runner_is_registered():
    assert RUNNERS["local"] is LocalRunner


def test_measure_reports_a_measured_latency(cnn_onnx):
    seen = []
    runner = LocalRunner(threads=1, warmup=2, runs=20, throughput_batch=8)
    m = runner.measure(cnn_onnx, target="host-cpu", progress=lambda done, total: seen.append((done, total)))
    assert isinstance(m, Measurement)
    assert m.source == "measured" and m.runner == "local" and m.target == "host-cpu"
    assert m.runtime.startswith("onnxruntime ") and m.provider == "CPUExecutionProvider"
    # At least the runs asked; more where twenty do not fill the minimum time.
    assert m.threads == 1 and m.batch == 1 and m.runs >= 20 and m.throughput_batch == 8
    assert m.load is None or m.load >= 0
    assert 0 < m.p50_ms <= m.p90_ms <= m.p99_ms
    assert m.throughput_per_s > 0
    assert m.device
    assert seen[-1] == (20, 20) and len(seen) == 20
    assert m.to_dict()["p50_ms"] == m.p50_ms


def _sequence_model(tmp_path):
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])
    graph = helper.make_graph([helper.make_node("Cast", ["input_ids"], ["y"], to=TensorProto.FLOAT)], "g", [ids], [y])
    path = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_measure_needs_a_sequence_length_for_a_dynamic_sequence_axis(tmp_path):
    with pytest.raises(UserError, match="give a sequence length"):
        LocalRunner(runs=2).measure(_sequence_model(tmp_path))


def test_measure_at_a_sequence_length(tmp_path):
    m = LocalRunner(runs=2, warmup=0, seq_len=16).measure(_sequence_model(tmp_path))
    assert m.seq_len == 16 and m.p50_ms > 0


def test_runner_rejects_bad_settings():
    with pytest.raises(UserError):
        LocalRunner(runs=0)


def test_a_gpu_provider_this_onnxruntime_lacks_is_one_line(tmp_path, cnn):
    import numpy as np
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the refusal cannot be shown here")
    x = np.zeros((2, 1, 8, 8), np.float32)
    path = export_onnx(cnn, x, x, tmp_path / "m.onnx").path
    with pytest.raises(UserError, match="CUDAExecutionProvider is not in this onnxruntime"):
        LocalRunner(provider="CUDAExecutionProvider").measure(path)


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_every_runner_opens_from_a_reach_and_says_what_it_runs(name):
    cls = RUNNERS[name]
    reach = Reach(address="user@127.0.0.1:2222", perf_test=PerfTests((("onnxruntime", Path("onnxruntime_perf_test")),)), seq_len=16)
    assert cls.accepts(reach) and all(s.startswith(".") for s in cls.accepts(reach))
    assert isinstance(cls.open(reach), cls)
