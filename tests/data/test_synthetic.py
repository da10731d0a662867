import numpy as np
import pydantic
import pytest
import torch
from torch import nn

from conftest import INPUT_SHAPE, NUM_CLASSES, tiny_cnn
from edgedistill.data.synthetic import InputPrior, SynthesisConfig, Synthetic, synthesize
from edgedistill.errors import UserError
from edgedistill.teachers import OnnxTeacher
from edgedistill.threads import torch_threads

FAST = SynthesisConfig(samples=30, steps=20, batch_size=16)


@pytest.fixture(scope="module")
def trained_cnn(digits_xy) -> nn.Module:
    """The conftest TinyCNN (two BatchNorm layers) trained full-batch on 600 digits for a few steps."""
    x, y = digits_xy
    model = tiny_cnn().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x[:600]), torch.from_numpy(y[:600])
    with torch_threads(1):
        for _ in range(30):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt), yt).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def prior(digits_xy) -> InputPrior:
    return InputPrior.of(digits_xy[0][:300])


def _bn_distance(model: nn.Module, x: np.ndarray) -> float:
    """The DeepInversion loss of inputs `x`: summed distance of each BatchNorm's batch statistics from its running ones."""
    terms = []

    def hook(m, inputs, _out):
        dims = [0, *range(2, inputs[0].dim())]
        mean, var = inputs[0].mean(dims), inputs[0].var(dims, unbiased=False)
        terms.append(float((mean - m.running_mean).norm() + (var - m.running_var).norm()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model.eval()(torch.from_numpy(x))
    for h in handles:
        h.remove()
    return sum(terms)


def _noise(prior: InputPrior, n: int) -> np.ndarray:
    """The kind of input synthesis starts from: noise with the prior's mean and std, clipped to its range."""
    x = prior.mean[0] + prior.std[0] * np.random.default_rng(0).standard_normal((n, *INPUT_SHAPE))
    return np.clip(x, prior.low[0], prior.high[0]).astype(np.float32)


def test_prior_is_per_channel_stats_over_every_other_axis():
    x = np.stack([np.full((5, 3, 3), 1.0), np.arange(45, dtype=float).reshape(5, 3, 3)], axis=1).astype(np.float32)
    p = InputPrior.of(x)
    np.testing.assert_allclose(p.mean, [1.0, 22.0])
    np.testing.assert_allclose(p.std, [0.0, np.arange(45).std()], rtol=1e-6)
    np.testing.assert_array_equal(p.low, [1.0, 0.0])
    np.testing.assert_array_equal(p.high, [1.0, 44.0])
    assert all(a.dtype == np.float32 for a in (p.mean, p.std, p.low, p.high))


def test_config_is_frozen_strict_and_described():
    assert all(f.description for f in SynthesisConfig.model_fields.values())
    with pytest.raises(pydantic.ValidationError):
        SynthesisConfig(samples=0)
    with pytest.raises(pydantic.ValidationError):
        SynthesisConfig(samples=1, shots=3)
    with pytest.raises(pydantic.ValidationError):
        FAST.steps = 5
    assert SynthesisConfig(samples=4).real is None


def test_inputs_have_the_shape_range_and_balanced_targets(trained_cnn, prior):
    calls = []
    s = synthesize(trained_cnn, INPUT_SHAPE, NUM_CLASSES, FAST, prior, seed=0, progress=lambda *a: calls.append(a))
    assert isinstance(s, Synthetic)
    assert s.x.shape == (30, *INPUT_SHAPE) and s.x.dtype == np.float32
    assert s.targets.shape == (30,) and s.targets.dtype == np.int64
    assert np.bincount(s.targets, minlength=NUM_CLASSES).tolist() == [3] * NUM_CLASSES
    assert s.x.min() >= prior.low[0] and s.x.max() <= prior.high[0]
    assert calls == [(1, 2), (2, 2)]  # 30 inputs in two batches of 15, not 16 + 14
    assert s.batchnorm_layers == 2 and "BatchNorm running statistics (2 layers)" in s.how
    assert s.seconds > 0 and 0 <= s.agreement <= 1


def test_same_seed_same_inputs(trained_cnn, prior):
    a, b = (synthesize(trained_cnn, INPUT_SHAPE, NUM_CLASSES, FAST, prior, seed=3) for _ in range(2))
    other = synthesize(trained_cnn, INPUT_SHAPE, NUM_CLASSES, FAST, prior, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.targets, b.targets)
    assert not np.allclose(a.x, other.x)


def test_batchnorm_statistics_move_towards_the_running_ones(trained_cnn, prior):
    cfg = FAST.model_copy(update={"samples": 60, "batch_size": 60, "steps": 60})
    s = synthesize(trained_cnn, INPUT_SHAPE, NUM_CLASSES, cfg, prior, seed=0)
    assert _bn_distance(trained_cnn, s.x) < 0.7 * _bn_distance(trained_cnn, _noise(prior, 60))


def test_trained_teacher_classifies_the_inputs_as_their_targets(trained_cnn, prior):
    s = synthesize(trained_cnn, INPUT_SHAPE, NUM_CLASSES, FAST.model_copy(update={"steps": 60}), prior, seed=0)
    with torch.no_grad():
        predicted = trained_cnn(torch.from_numpy(s.x)).argmax(1).numpy()
    assert s.agreement == pytest.approx(float((predicted == s.targets).mean()))
    assert s.agreement >= 0.9


def test_teacher_is_left_as_it_was(trained_cnn, prior):
    teacher = tiny_cnn().train()
    teacher.features[1].eval()
    teacher.head[1].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    synthesize(teacher, INPUT_SHAPE, NUM_CLASSES, FAST, prior, seed=0)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # running stats included
    assert teacher.training and not teacher.features[1].training
    assert [p.requires_grad for p in teacher.parameters()] == [True] * 8 + [False, True]


def test_teacher_without_batchnorm_uses_outputs_and_says_so(trained_mlp, prior):
    s = synthesize(trained_mlp, INPUT_SHAPE, NUM_CLASSES, FAST.model_copy(update={"steps": 100}), prior, seed=0)
    assert s.batchnorm_layers == 0 and "no BatchNorm" in s.how
    assert s.agreement >= 0.9
    assert s.x.min() >= prior.low[0] and s.x.max() <= prior.high[0]


@pytest.mark.parametrize(
    "model, shape",
    [
        (nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)), (2, 16)),
        (nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)), (5,)),
    ],
    ids=["signal", "flat"],
)
def test_signals_and_flat_vectors(model, shape):
    x = np.random.default_rng(0).normal(size=(50, *shape)).astype(np.float32)
    prior = InputPrior.of(x)
    s = synthesize(model.eval(), shape, 3, FAST, prior, seed=0)
    assert s.x.shape == (30, *shape) and np.isfinite(s.x).all()
    low, high = (a.reshape(1, -1, *[1] * (len(shape) - 1)) for a in (prior.low, prior.high))
    assert (s.x >= low).all() and (s.x <= high).all()
    assert s.batchnorm_layers == 1
    assert ("1-D total variation" in s.how) == (len(shape) == 2)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def test_onnx_teacher_is_refused(cnn_onnx, prior):
    with pytest.raises(UserError) as excinfo:
        synthesize(OnnxTeacher(cnn_onnx), INPUT_SHAPE, NUM_CLASSES, FAST, prior, seed=0)
    assert "ONNX teacher gives no gradients" in _one_line(excinfo)


@pytest.mark.parametrize("teacher", [None, nn.Flatten()], ids=["none", "no-weights"])
def test_teacher_without_weights_is_refused(teacher, prior):
    with pytest.raises(UserError) as excinfo:
        synthesize(teacher, INPUT_SHAPE, NUM_CLASSES, FAST, prior, seed=0)
    assert "needs a PyTorch teacher with weights" in _one_line(excinfo)


def test_prior_of_other_channels_is_refused(trained_cnn):
    prior = InputPrior.of(np.zeros((4, 3, 8, 8), dtype=np.float32))
    with pytest.raises(UserError) as excinfo:
        synthesize(trained_cnn, INPUT_SHAPE, NUM_CLASSES, FAST, prior, seed=0)
    assert "3 channels, the inputs 1" in _one_line(excinfo)


class _Overflowing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) * float("inf")


def test_inputs_that_become_nan_are_refused(prior):
    with pytest.raises(UserError) as excinfo:
        synthesize(_Overflowing(), INPUT_SHAPE, NUM_CLASSES, FAST, prior, seed=0)
    assert "lower data.synthetic.lr" in _one_line(excinfo)
