import numpy as np
import pytest

from edgedistill.errors import UserError
from edgedistill.recorded import load_recorded, log_probabilities, topk_to_logits


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_top_k_keeps_the_named_probabilities_and_spreads_the_rest():
    index = np.array([[2, 0]])
    prob = np.array([[0.6, 0.2]], dtype=np.float32)
    p = _softmax(topk_to_logits(index, prob, classes=5))
    np.testing.assert_allclose(p, [[0.2, 0.2 / 3, 0.6, 0.2 / 3, 0.2 / 3]], rtol=1e-5)


def test_probabilities_come_back_from_their_logits():
    p = np.array([[0.7, 0.2, 0.1]], dtype=np.float32)
    np.testing.assert_allclose(_softmax(log_probabilities(p)), p, rtol=1e-5)


def test_records_are_matched_by_content_whatever_their_order(tmp_path):
    x_train = np.random.default_rng(0).random((6, 1, 2, 2)).astype(np.float32)
    logits = np.arange(12, dtype=np.float32).reshape(6, 2)
    order = np.array([3, 1, 0])  # three of the six, shuffled
    np.savez(tmp_path / "r.npz", x=x_train[order], logits=logits[order])
    rec = load_recorded(tmp_path / "r.npz", x_train, classes=2)
    assert rec.matched == 3 and rec.missing == 3 and rec.unused == 0
    assert rec.outputs.known.tolist() == [True, True, False, True, False, False]
    np.testing.assert_array_equal(rec.outputs.logits[[0, 1, 3]], logits[[0, 1, 3]])
    assert np.isnan(rec.outputs.logits[2]).all()


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"logits": np.zeros((2, 3))}, "has no x"),
        ({"x": np.zeros((2, 1, 2, 2))}, "holds no outputs"),
        ({"x": np.zeros((2, 1, 2, 2)), "logits": np.full((2, 3), np.nan)}, "finite"),
        ({"x": np.zeros((2, 5)), "logits": np.zeros((2, 3))}, "recorded inputs have shape"),
        ({"x": np.ones((2, 1, 2, 2)), "logits": np.zeros((2, 3))}, "none of its 2 inputs"),
    ],
)
def test_bad_records_are_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=message):
        load_recorded(tmp_path / "bad.npz", np.zeros((4, 1, 2, 2), np.float32) + 0.5, classes=3)
