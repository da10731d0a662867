import pytest

import edgedistill


@pytest.mark.parametrize("name", edgedistill.__all__)
def test_every_public_name_resolves(name):
    assert getattr(edgedistill, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        edgedistill.nope
