"""Quantization-aware training: the fake-quantized student computes what onnxruntime's int8 model
of it computes, trains under `fit`, and gives the plain student back for export."""

import copy
import pickle

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.quant_utils import compute_data_quant_params, compute_scale_zp
from torch import nn

from edgedistill.compress.budget import measure
from edgedistill.compress.distill import DistillConfig, fit, predict
from edgedistill.compress.qat import (
    QatScheme,
    activation_qparams,
    calibrate,
    fake_quantized,
    scheme_for,
    unwrapped,
    weight_scales,
)
from edgedistill.compress.quantize import Int8Dynamic, Int8Static, Int8StaticSymmetric, quantize
from edgedistill.data.arrays import Dataset
from edgedistill.errors import UserError
from edgedistill.export.onnx import export_onnx
from edgedistill.ortsession import open_session, run_batched

from conftest import tiny_cnn, tiny_mlp

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
UINT8, INT8 = QatScheme("uint8"), QatScheme("int8")


@pytest.fixture(scope="module")
def splits(digits_xy):
    """Calibration inputs, and held-out inputs the int8 models are compared on."""
    x, _ = digits_xy
    return x[:300], x[1000:1400]


def cnn_with_statistics() -> nn.Module:
    """The tiny CNN with BatchNorm statistics and affine terms far from identity, some scales
    negative, so onnxruntime's folding of BN into the convs changes the weights it quantizes."""
    model = tiny_cnn()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
            bn.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
            bn.weight.copy_((0.5 + torch.rand(n, generator=gen)) * torch.where(torch.arange(n) % 3 == 0, -1.0, 1.0))
            bn.bias.copy_(0.2 * torch.randn(n, generator=gen))
    return model.eval()


def _ort_int8(plain, method, calib, val, tmp_path) -> np.ndarray:
    """onnxruntime's int8 QDQ model of `plain` (the project's quantizer, minmax on `calib`), run on `val`."""
    fp32 = export_onnx(plain, calib[:2], calib[:64], tmp_path / "fp32.onnx").path
    # A constant score: every method holds, so nothing is kept in float.
    result = quantize(fp32, tmp_path / "int8.onnx", [method], calib, lambda _out: 0.0, val, timing_runs=1)
    assert result.kept_float == ()
    return run_batched(open_session(result.path), val)


def _ort_dequantized(path) -> dict[str, np.ndarray]:
    """The int8 model's quantized initializers ("net.1.weight", "net.1.bias"), dequantized in float32
    as DequantizeLinear does."""
    found = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    out = {}
    for name, q in found.items():
        if name.endswith("_quantized"):
            base = name.removesuffix("_quantized")
            scale = found.get(f"{base}_scale", found.get(f"{name}_scale"))
            out[base] = q.astype(np.float32) * scale.reshape(-1, *[1] * (q.ndim - 1))
    return out


def _agreement(fq, plain, ort_out, val) -> tuple[float, float, float, float]:
    """Mean abs difference to onnxruntime's int8 outputs and arg-max agreement: fake-quant, fp32."""
    fq_out, fp_out = predict(fq, val), predict(plain, val)
    return (
        float(np.abs(fq_out - ort_out).mean()), float(np.abs(fp_out - ort_out).mean()),
        float((fq_out.argmax(1) == ort_out.argmax(1)).mean()), float((fp_out.argmax(1) == ort_out.argmax(1)).mean()),
    )


@pytest.mark.parametrize("make", [tiny_cnn, tiny_mlp])
def test_every_weighted_layer_is_wrapped_and_unwrapping_gives_the_student_back(make):
    model = make()
    fq = fake_quantized(model, UINT8)
    wrapped = [m for m in fq.modules() if type(m).__name__ == "_FakeQuantLayer"]
    assert len(wrapped) == sum(isinstance(m, WEIGHTED) for m in model.modules()) > 0
    # Every weighted layer sits inside a wrapper, none bare.
    assert sum(isinstance(m, WEIGHTED) for m in fq.modules()) == len(wrapped)
    plain = unwrapped(fq)
    assert type(plain) is type(model)
    assert list(plain.state_dict()) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value)
    assert not any(type(m).__name__.startswith("_FakeQuant") for m in plain.modules())
    assert not any(type(m).__name__.startswith("_FakeQuant") for m in model.modules())  # the original is untouched


def test_gradients_reach_the_weights_through_the_fake_quantization(digits_xy):
    x, y = digits_xy
    fq = fake_quantized(cnn_with_statistics(), UINT8).train()
    before = copy.deepcopy(unwrapped(fq).state_dict())
    optimizer = torch.optim.SGD(fq.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(fq(torch.from_numpy(x[:64])), torch.from_numpy(y[:64]))
    loss.backward()
    for name, p in fq.named_parameters():
        if name.endswith("layer.weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    optimizer.step()
    after = unwrapped(fq).state_dict()
    for key in ("features.0.weight", "features.3.weight", "head.1.weight", "head.1.bias"):
        assert not torch.equal(before[key], after[key]), key


@pytest.mark.parametrize(
    ("make", "method"),
    [
        ("mlp", Int8Static()),
        ("mlp", Int8StaticSymmetric()),
        ("mlp", Int8Static(per_channel=False)),
        ("cnn", Int8Static()),
        ("cnn", Int8StaticSymmetric()),
    ],
    ids=["mlp-uint8", "mlp-int8", "mlp-uint8-per-tensor", "cnn-uint8", "cnn-int8"],
)
def test_calibrated_fake_quant_computes_what_onnxruntime_int8_computes(make, method, trained_mlp, splits, tmp_path):
    calib, val = splits
    model = trained_mlp if make == "mlp" else cnn_with_statistics()
    fq = calibrate(fake_quantized(model, scheme_for(method)), calib, batch_size=64)
    plain = unwrapped(fq)
    fq_err, fp_err, fq_argmax, fp_argmax = _agreement(fq, plain, _ort_int8(plain, method, calib, val, tmp_path), val)
    assert fp_err > 0  # int8 moves the outputs, so the comparison means something
    assert fq_err <= fp_err / 10, (fq_err, fp_err)
    assert fq_argmax >= max(fp_argmax, 0.995), (fq_argmax, fp_argmax)
    if make == "mlp":  # no BatchNorm to fold: the int8 weights and int32 biases are onnxruntime's own
        ort = _ort_dequantized(tmp_path / "int8.onnx")
        for name in ("net.1", "net.3"):
            params = fq.model.get_submodule(name).fake_params()
            assert sorted(params) == sorted(k.split(".")[-1] for k in ort if k.startswith(name + "."))
            for kind, value in params.items():
                np.testing.assert_allclose(value.detach().numpy(), ort[f"{name}.{kind}"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", [Int8Static(), Int8StaticSymmetric()], ids=["uint8", "int8"])
def test_training_mode_passes_set_ranges_near_onnxruntime_calibration(method, trained_mlp, splits, tmp_path):
    """Ranges observed on fake-quantized activations in training mode land near onnxruntime's
    float calibration, so the outputs follow its int8 model closer than fp32 does; mini-batch
    extremes (an average of them) would sit inside the calibration set's and agree less."""
    calib, val = splits
    fq = fake_quantized(trained_mlp, scheme_for(method)).train()
    with torch.no_grad():
        for _ in range(3):
            fq(torch.from_numpy(calib))
    reference = calibrate(copy.deepcopy(fq), calib)
    for (name, seen), (_, calibrated) in zip(fq.named_buffers(), reference.named_buffers()):
        if name.endswith(("lo", "hi")):
            assert abs(float(seen) - float(calibrated)) <= 0.02 * max(abs(float(calibrated)), 1e-3), name
    fq_err, fp_err, fq_argmax, _ = _agreement(fq, unwrapped(fq), _ort_int8(unwrapped(fq), method, calib, val, tmp_path), val)
    assert fq_err < 0.8 * fp_err, (fq_err, fp_err)
    assert fq_argmax >= 0.995


def test_quantization_parameters_are_onnxruntimes():
    gen = torch.Generator().manual_seed(0)
    ranges = [(0.0, 0.0), (0.0, 1.0), (0.3, 2.0), (-5.0, -0.5), *(sorted((3 * torch.randn(2, generator=gen)).tolist()) for _ in range(20))]
    for lo, hi in ranges:
        lo32, hi32 = np.float32(lo), np.float32(hi)
        zp, scale = compute_scale_zp(lo32, hi32, np.uint8(0), np.uint8(255))
        got_scale, got_zp = activation_qparams(torch.tensor(lo32), torch.tensor(hi32), "uint8")
        assert (got_scale.item(), got_zp.item()) == (np.float32(scale), int(zp)), (lo, hi)
        zp, scale = compute_scale_zp(lo32, hi32, np.int8(-127), np.int8(127), symmetric=True)
        got_scale, got_zp = activation_qparams(torch.tensor(lo32), torch.tensor(hi32), "int8")
        assert (got_scale.item(), got_zp.item()) == (np.float32(scale), int(zp)), (lo, hi)
    weight = torch.randn(6, 3, 3, 3, generator=gen)
    weight[2] = 0.0  # an all-zero channel: scale 1
    for axis in (0, 1):
        expected = [
            compute_data_quant_params(weight.numpy().take(i, axis).ravel(), TensorProto.INT8, True)[1]
            for i in range(weight.shape[axis])
        ]
        assert weight_scales(weight, axis).tolist() == [float(np.float32(s)) for s in expected]
    expected = compute_data_quant_params(weight.numpy().ravel(), TensorProto.INT8, True)[1]
    assert weight_scales(weight, None).tolist() == [float(np.float32(expected))]


def _onnxruntime_qdq(x: np.ndarray, scale: float, zero_point: int, qtype: int) -> np.ndarray:
    """x through onnxruntime's own QuantizeLinear and DequantizeLinear kernels."""
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]), helper.make_tensor("z", qtype, [], [zero_point])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(("scheme", "qtype"), [(UINT8, TensorProto.UINT8), (INT8, TensorProto.INT8)], ids=["uint8", "int8"])
def test_activations_round_and_saturate_as_quantize_linear_does(scheme, qtype):
    fq = fake_quantized(nn.Sequential(nn.Identity()), scheme).train()
    fq(torch.tensor([-1.3, 2.7]))  # the range, from one batch
    fq.eval()
    scale, zero_point = fq.outputs.qparams()
    x = np.random.default_rng(0).uniform(-6, 6, 20000).astype(np.float32)  # mostly outside the range
    got, want = predict(fq, x), _onnxruntime_qdq(x, scale.item(), zero_point.item(), qtype)
    assert got.min() == want.min() and got.max() == want.max()  # int8 saturates at -128, not -127
    # torch multiplies by 1 / scale where QuantizeLinear divides: a near-tie may round the other way.
    off = got != want
    assert off.mean() < 1e-3
    np.testing.assert_allclose(np.abs(got[off] - want[off]), scale.item(), rtol=1e-5)


def test_state_survives_deepcopy_pickle_and_state_dict(splits):
    calib, val = splits
    fq = calibrate(fake_quantized(cnn_with_statistics(), INT8), calib)
    expected = predict(fq, val)
    for twin in (copy.deepcopy(fq), pickle.loads(pickle.dumps(fq))):
        np.testing.assert_array_equal(predict(twin, val), expected)
    fresh = fake_quantized(cnn_with_statistics(), INT8)
    fresh.load_state_dict(fq.state_dict())
    np.testing.assert_array_equal(predict(fresh, val), expected)
    assert not np.array_equal(predict(unwrapped(fq), val), expected)  # the fake quantization is in the state


def test_before_any_range_is_observed_activations_pass_through_and_it_measures(splits):
    _, val = splits
    model = cnn_with_statistics()
    fq = fake_quantized(model, UINT8)
    # Weights need no observation and are int8 already; activations stay float until observed.
    weights_only = copy.deepcopy(model)
    with torch.no_grad():
        for m in weights_only.modules():
            if isinstance(m, WEIGHTED):
                m.weight.copy_(torch.fake_quantize_per_channel_affine(
                    m.weight, weight_scales(m.weight, 0), torch.zeros(m.weight.shape[0], dtype=torch.int32), 0, -128, 127
                ))
    np.testing.assert_allclose(predict(fq, val), predict(weights_only, val), atol=1e-5)
    assert measure(fq, (1, 8, 8)).macs == measure(model, (1, 8, 8)).macs
    assert all(float(b) == 0 for name, b in fq.named_buffers() if name.endswith("batches"))  # eval observed nothing


def test_fit_trains_the_fake_quantized_student(digits_xy, trained_mlp):
    x, y = digits_xy
    train, val = Dataset(x[:600], y[:600]), Dataset(x[600:900], y[600:900])
    fq = fake_quantized(trained_mlp, UINT8)
    result = fit(fq, train, val, DistillConfig(epochs=2, lr=1e-3, alpha=0.0), seed=0)
    assert type(result.model) is type(fq)
    assert result.val_score > 0.85
    assert all(float(b) > 0 for name, b in result.model.named_buffers() if name.endswith("batches"))
    plain = unwrapped(result.model)
    assert list(plain.state_dict()) == list(trained_mlp.state_dict())
    assert not torch.equal(plain.state_dict()["net.1.weight"], trained_mlp.state_dict()["net.1.weight"])


def test_a_transposed_conv_is_quantized_along_its_output_axis():
    layer = nn.ConvTranspose2d(4, 6, 2, stride=2)
    fq = fake_quantized(nn.Sequential(layer), UINT8)
    assert type(fq.model[0]).__name__ == "_FakeQuantLayer" and fq.model[0].axis == 1
    grouped = fake_quantized(nn.Sequential(nn.ConvTranspose2d(4, 6, 2, groups=2)), UINT8)
    assert isinstance(grouped.model[0], nn.ConvTranspose2d)  # no one int8 form to emulate: float


def test_scheme_for_maps_the_static_methods_and_refuses_dynamic():
    assert scheme_for(Int8Static()) == QatScheme("uint8", per_channel=True)
    assert scheme_for(Int8StaticSymmetric(per_channel=False)) == QatScheme("int8", per_channel=False)
    with pytest.raises(UserError, match="static int8 only.*int8-static"):
        scheme_for(Int8Dynamic())
    with pytest.raises(UserError, match="momentum"):
        QatScheme("uint8", momentum=2.0)
    with pytest.raises(UserError, match="already fake-quantized"):
        fake_quantized(fake_quantized(tiny_mlp(), UINT8), UINT8)
