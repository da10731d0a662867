import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgedistill.compress import families
from edgedistill.compress.quantize import Int8Static, quantize
from edgedistill.errors import UserError
from edgedistill.export.lint import lint, runtimes
from edgedistill.export.onnx import export_onnx

# (family, one sample's input shape, one sample's output shape): every shape kind each family takes
CASES = [
    ("cnn", (1, 8, 8), (3,)),
    ("cnn", (2, 3, 3), (2,)),  # too small to pool
    ("cnn1d", (2, 16), (3,)),
    ("cnn1d", (1, 3), (2,)),  # too short to pool
    ("mlp", (1, 8, 8), (3,)),
    ("mlp", (5,), (2,)),
    ("mlp", (2, 6), (2, 5, 3)),
    ("dense", (1, 9, 11), (3, 9, 11)),  # two downsamplings of odd sizes
    ("dense", (3, 5, 6), (2, 10, 12)),  # one downsampling, output resampled up
    ("dense", (1, 3, 3), (1, 3, 3)),  # too small to downsample
    ("dense", (2, 16), (4, 16)),
    ("dense", (2, 13), (2, 7)),  # output resampled down
    ("dense", (1, 3), (1, 3)),
]
# one export per family and input rank (each dynamo export takes about a second)
EXPORT_CASES = [CASES[0], CASES[2], CASES[6], CASES[7], CASES[11]]


def _ids(case) -> str:
    name, inputs, outputs = case
    return f"{name}-{'x'.join(map(str, inputs))}-{'x'.join(map(str, outputs))}"


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _member(case, width: float = 0.25) -> nn.Module:
    torch.manual_seed(0)
    return families.build(*case, width).eval()


def _inputs(shape, batch: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_every_member_gives_one_output_of_the_output_shape_per_input(case):
    _, inputs, outputs = case
    model = _member(case)
    x = torch.from_numpy(_inputs(inputs, 3))
    with torch.no_grad():
        assert model(x).shape == (3, *outputs)
    model.train()  # training mode too: batch-norm statistics of a batch
    assert model(x).shape == (3, *outputs)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_params_grow_with_width_and_every_hidden_layer_keeps_two_channels(case):
    sizes = [_params(families.build(*case, w)) for w in (0.001, 0.03, 0.1, 0.3, 1.0)]
    assert sizes == sorted(sizes)
    assert sizes[2] < sizes[3] < sizes[4]
    layers = [m for m in families.build(*case, 0.001).modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    assert all((m.out_features if isinstance(m, nn.Linear) else m.out_channels) >= 2 for m in layers[:-1])


@pytest.mark.parametrize("case", EXPORT_CASES, ids=_ids)
def test_every_member_exports_to_onnx_and_quantizes_to_static_int8(case, tmp_path):
    _, inputs, outputs = case
    model = _member(case)
    x = _inputs(inputs, 5)  # a batch other than the traced one: the batch axis is dynamic
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    # the repo's exporter (dynamo, simplified), parity checked on x
    artifact = export_onnx(model, x[:2], x, tmp_path / "fp32.onnx")
    assert artifact.parity.max_abs_err is not None and artifact.parity.max_abs_err <= 1e-4
    for runtime in runtimes(".onnx"):  # every op runs on the deployment runtimes (TensorRT pools only 2-D/3-D maps)
        assert lint(artifact.path, runtime).ok, (runtime, lint(artifact.path, runtime).findings)
    # the TorchScript exporter at opset 17 as well
    legacy = tmp_path / "legacy.onnx"
    torch.onnx.export(
        model, (torch.from_numpy(x[:2]),), str(legacy), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    got = ort.InferenceSession(str(legacy), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)
    result = quantize(
        artifact.path, tmp_path / "int8.onnx", [Int8Static()], x, lambda out: -float(np.abs(out - want).mean()), x,
        max_drop=np.inf, timing_runs=1,
    )
    assert result.method == "int8-static" and not result.kept_float
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(result.path)).graph.node)
    int8 = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert int8.shape == (5, *outputs) and np.isfinite(int8).all()


@pytest.mark.parametrize(
    ("inputs", "outputs", "family"),
    [
        ((3, 32, 32), (10,), "cnn"),
        ((2, 128), (1,), "cnn1d"),
        ((64,), (4,), "mlp"),
        ((2, 3, 4, 5), (4,), "mlp"),
        ((3, 32, 32), (5, 32, 32), "dense"),
        ((3, 32, 32), (1, 16, 16), "dense"),
        ((2, 128), (3, 64), "dense"),
        ((3, 32, 32), (5, 32), "mlp"),
        ((2, 128), (3, 8, 8), "mlp"),
        ((64,), (8, 8), "mlp"),
    ],
)
def test_default_family_fits_the_shapes(inputs, outputs, family):
    assert families.default_family(inputs, outputs) == family
    families.build(family, inputs, outputs, 0.05)  # and the family it picks builds


@pytest.mark.parametrize(
    ("name", "inputs", "outputs", "match"),
    [
        ("cnn", (2, 16), (3,), "cnn family takes .* use family cnn1d"),
        ("cnn", (1, 8, 8), (2, 8, 8), "cnn family .* use family dense"),
        ("cnn", (8,), (2,), "use family mlp"),
        ("cnn1d", (1, 8, 8), (3,), "cnn1d family .* use family cnn$"),
        ("cnn1d", (2, 16), (2, 16), "cnn1d family .* use family dense"),
        ("dense", (1, 8, 8), (3,), "dense family .* input's rank.* use family cnn$"),
        ("dense", (2, 16), (1, 8, 8), "dense family .* use family mlp"),
        ("dense", (16,), (16,), "dense family .* use family mlp"),
        ("resnet", (1, 8, 8), (3,), "no student family 'resnet': use one of cnn, cnn1d, dense, mlp"),
        ("mlp", (1, 8, 8), (0,), "output shape .* every size >= 1"),
        ("mlp", (), (3,), "input shape .* every size >= 1"),
    ],
)
def test_build_refuses_a_family_that_does_not_fit_in_one_line(name, inputs, outputs, match):
    with pytest.raises(UserError, match=match) as err:
        families.build(name, inputs, outputs, 0.5)
    assert "\n" not in str(err.value)
