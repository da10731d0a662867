import pytest
import torch

from conftest import INPUT_SHAPE
from edgedistill.compress.budget import Budget, check, measure, resolve
from edgedistill.compress.search import search
from edgedistill.compress.students import Custom, Prune, Scale, handler_for
from edgedistill.errors import UserError


def test_prune_search_finds_the_largest_student_that_fits(cnn):
    budget = resolve(Budget(params="30%"), measure(cnn, INPUT_SHAPE))
    found = search(Prune(), cnn, INPUT_SHAPE, budget, tolerance=0.01)
    assert found.within_budget
    assert found.binding.name == "params" and 0 <= found.binding.margin < 0.2
    assert found.evaluations <= 12
    # one step of twice the tolerance past the knob breaks the budget
    bigger = handler_for(Prune()).make(Prune(), cnn, found.knob + 0.02, INPUT_SHAPE)
    assert not all(c.ok for c in check(measure(bigger, INPUT_SHAPE), budget))


def test_search_takes_the_largest_knob_when_it_fits(cnn):
    budget = resolve(Budget(params="200%"), measure(cnn, INPUT_SHAPE))
    found = search(Prune(), cnn, INPUT_SHAPE, budget)
    assert found.knob == 1.0 and found.evaluations == 1


def test_unreachable_budget_names_the_smallest_reachable_value(cnn):
    budget = resolve(Budget(params=100), measure(cnn, INPUT_SHAPE))
    smallest = measure(handler_for(Prune()).make(Prune(), cnn, 0.05, INPUT_SHAPE), INPUT_SHAPE).params
    with pytest.raises(UserError, match=f"params <= 100 cannot be met.* has {smallest:,} params.*min_keep"):
        search(Prune(), cnn, INPUT_SHAPE, budget)


def test_custom_student_that_breaks_the_budget_is_a_user_error(cnn):
    budget = resolve(Budget(params=100), measure(cnn, INPUT_SHAPE))
    with pytest.raises(UserError, match="custom generator"):
        search(Custom(factory="conftest:tiny_mlp"), cnn, INPUT_SHAPE, budget)


def test_scale_search_meets_macs_and_params_together(cnn):
    spec = Scale(family="conftest:tiny_cnn")
    budget = resolve(Budget(params="60%", macs="25%"), measure(cnn, INPUT_SHAPE))
    found = search(spec, cnn, INPUT_SHAPE, budget)
    assert found.within_budget and 0.05 <= found.knob < 1.0
    assert found.binding.name == "macs"
    assert found.model(torch.zeros(1, *INPUT_SHAPE)).shape == (1, 10)
