import numpy as np
import pytest
import torch
from torch import nn

from conftest import TinyCNN
from edgedistill.compress.condense import (
    CondenseConfig, architecture_of, condense, is_condensed, match_distance, random_subset, save, score,
)
from edgedistill.compress.distill import DistillConfig
from edgedistill.data.arrays import Dataset, load_arrays, split
from edgedistill.errors import UserError
from edgedistill.teachers import parse_teacher

# Small enough to be quick, long enough for the matching to show (measured: 30 iterations at one
# sample a class cut the distance to a quarter of its random start).
QUICK = CondenseConfig(per_class=1, iterations=30, threads=1)


@pytest.fixture(scope="module")
def digits():
    x, y, classes = load_arrays("digits")
    return split(x, y, classes, "digits", 0.2, 0.1, 0)


@pytest.fixture(scope="module")
def condensed(digits):
    return condense(TinyCNN, digits.train, digits.classes, QUICK, seed=0)


def test_k_per_class_of_the_input_shape_within_the_real_range(condensed, digits):
    train = digits.train
    assert condensed.x.shape == (10, *train.x.shape[1:]) and condensed.x.dtype == np.float32
    assert np.bincount(condensed.y, minlength=10).tolist() == [1] * 10
    assert condensed.classes == digits.classes
    assert train.x.min() <= condensed.x.min() and condensed.x.max() <= train.x.max()
    # It moved away from the real samples it started from.
    start = random_subset(train, digits.classes, 1, 0)
    assert np.array_equal(start.y, condensed.y) and not np.allclose(start.x, condensed.x)


def test_the_same_seed_gives_the_same_set_and_another_seed_another(digits):
    cfg = CondenseConfig(per_class=2, iterations=4, threads=1)
    first, again = (condense(TinyCNN, digits.train, digits.classes, cfg, seed=3) for _ in range(2))
    other = condense(TinyCNN, digits.train, digits.classes, cfg, seed=4)
    assert np.array_equal(first.x, again.x) and np.array_equal(first.y, again.y)
    assert not np.allclose(first.x, other.x)


def test_the_embedding_distance_shrinks_under_networks_never_matched_on(condensed, digits):
    start = random_subset(digits.train, digits.classes, 1, 0)
    before = match_distance(TinyCNN, start.x, start.y, digits.train, networks=4, seed=100)
    after = match_distance(TinyCNN, condensed.x, condensed.y, digits.train, networks=4, seed=100)
    assert after < 0.5 * before


def test_a_condensed_class_trains_better_than_a_random_sample_of_it(condensed, digits):
    # Measured (training seeds 0-2): 0.80-0.83 condensed against 0.55-0.62 random (TinyCNN, one
    # sample a class); the margin leaves room for another machine's arithmetic.
    s = score(TinyCNN, condensed, digits.train, digits.val, DistillConfig(epochs=6, alpha=0.0, threads=1), seed=0)
    assert s.samples == 10 and s.full_samples == len(digits.train)
    assert s.condensed > s.random + 0.1
    assert s.full > s.condensed


def test_saved_set_round_trips_through_load_arrays(condensed, tmp_path):
    path = save(condensed, tmp_path / "c.npz")
    x, y, _ = load_arrays(str(path))
    assert np.array_equal(x, condensed.x) and np.array_equal(y, condensed.y)
    with np.load(path) as arrays:
        assert tuple(arrays["classes"]) == condensed.classes and "distribution matching" in str(arrays["how"])
    assert is_condensed(path) and [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left


def test_only_what_save_wrote_counts_as_condensed(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 3), np.float32), y=np.array([0, 1]))
    (tmp_path / "notes.npz").write_text("not a zip")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 cut short")
    np.save(tmp_path / "lone.npy", np.zeros(3))
    for name in ("data.npz", "notes.npz", "broken.npz", "lone.npy"):
        assert not is_condensed(tmp_path / name), name


def test_a_model_without_linear_layers_matches_its_outputs(digits):
    def conv_only() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())

    out = condense(conv_only, digits.train, digits.classes, CondenseConfig(per_class=1, iterations=3, threads=1), seed=0)
    start = random_subset(digits.train, digits.classes, 1, 0)
    assert out.x.shape == start.x.shape and not np.allclose(out.x, start.x)


def test_more_per_class_than_a_class_holds_is_one_line():
    train = Dataset(np.zeros((5, 2), np.float32), np.array([0, 0, 0, 1, 1]))
    with pytest.raises(UserError, match="class b has 2 training samples, fewer than the 3"):
        random_subset(train, ("a", "b"), 3, 0)


@pytest.mark.parametrize("teacher, message", [
    ("vendor.onnx", "needs a PyTorch teacher factory"),
    ("recorded.npz", "needs a PyTorch teacher factory"),
    ("some/hf-folder", "text"),
])
def test_a_teacher_without_an_architecture_is_refused(teacher, message):
    with pytest.raises(UserError, match=message):
        architecture_of(parse_teacher(teacher))


def test_the_architecture_is_fresh_even_when_the_teacher_has_weights(tmp_path):
    torch.manual_seed(5)
    torch.save(TinyCNN().state_dict(), tmp_path / "w.pt")
    make = architecture_of(parse_teacher({"factory": "conftest:TinyCNN", "weights": str(tmp_path / "w.pt")}))
    trained = torch.load(tmp_path / "w.pt")
    assert not torch.equal(make().state_dict()["head.1.weight"], trained["head.1.weight"])
