import pytest
import torch

from edgedistill import threads
from edgedistill.compress.distill import DistillConfig, fit
from edgedistill.data.arrays import Dataset
from edgedistill.threads import EVERY_CORE_MACS, choose, torch_threads

from conftest import TinyCNN


def test_a_set_count_is_taken_as_it_is():
    choice = choose(3, 1e12)
    assert (choice.threads, choice.how) == (3, "set by the config's threads")


@pytest.mark.parametrize("macs, expected", [(EVERY_CORE_MACS / 10, 1), (EVERY_CORE_MACS, 4), (EVERY_CORE_MACS * 10, 4)])
def test_small_steps_take_one_thread_large_ones_every_core(monkeypatch, macs, expected):
    monkeypatch.setattr(threads, "cores", lambda: 4)
    choice = choose(0, macs)
    assert choice.threads == expected and "MACs" in choice.how


def test_one_core_or_a_distributed_rank(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 1)
    assert choose(0, EVERY_CORE_MACS * 10).threads == 1
    monkeypatch.setattr(threads, "cores", lambda: 2)
    with torch_threads(3):
        assert choose(0, EVERY_CORE_MACS / 10, distributed=True).threads == 3


def test_torch_threads_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def _fit(x, y, threads_setting: int):
    torch.manual_seed(0)
    train, val = Dataset(x[:300], y[:300]), Dataset(x[300:400], y[300:400])
    return fit(TinyCNN(), train, val, DistillConfig(epochs=2, threads=threads_setting), seed=0)


def test_fit_trains_at_the_chosen_count_and_repeats_itself(digits_xy):
    x, y = digits_xy
    before = torch.get_num_threads()
    first, second = _fit(x, y, 0), _fit(x, y, 0)
    assert first.threads.threads == 1 and "one thread below" in first.threads.how  # TinyCNN: a small step
    assert torch.get_num_threads() == before
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert _fit(x, y, 2).threads.how == "set by the config's threads"
