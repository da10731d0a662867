"""Whatever a .npz (or a labelled .jsonl) holds, the loaders either load it, as finite float32
inputs and no labels, or finite labels one row per input (class indices int64, of two or more
classes; any other labels int64 or float32), or refuse it with one line (UserError): never
another exception."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgedistill.data.arrays import load_arrays
from edgedistill.data.text import load_texts
from edgedistill.errors import UserError

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

DTYPES = st.one_of(
    hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(), hnp.complex_number_dtypes(),
    hnp.boolean_dtypes(), hnp.byte_string_dtypes(max_len=3), hnp.unicode_string_dtypes(max_len=3),
    hnp.datetime64_dtypes(), hnp.timedelta64_dtypes(),
)


@st.composite
def arrays(draw) -> np.ndarray:
    """An array of any dtype and of 0 to 3 axes (0-d and empty included), NaN and Inf included."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    return draw(hnp.arrays(draw(DTYPES), shape))


@st.composite
def contents(draw) -> dict[str, object]:
    """What np.savez is given: usually x and y (sometimes of one length, sometimes labels of a few
    classes), sometimes one missing or an object array in their place."""
    out: dict[str, object] = {}
    n = draw(st.integers(0, 6))
    if draw(st.booleans()):
        out["x"] = draw(hnp.arrays(draw(st.sampled_from([np.float32, np.float64, np.int16])), (n, 2)))
    else:
        out["x"] = draw(arrays())
    if draw(st.booleans()):
        out["y"] = np.asarray(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int64)
    else:
        out["y"] = draw(arrays())
    for name in ("x", "y"):
        form = draw(st.sampled_from(["given"] * 8 + ["missing", "object"]))
        if form == "missing":
            del out[name]
        elif form == "object":
            out[name] = np.array([{"a": 1}, None], dtype=object)
    return out


def _one_line(exc: UserError) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    return msg


@SETTINGS
@given(contents())
def test_any_npz_loads_or_is_refused_in_one_line(tmp_path, content):
    path = tmp_path / "d.npz"
    np.savez(path, **content)
    try:
        x, y, classes = load_arrays(str(path))
    except UserError as exc:
        _one_line(exc)
        return
    assert x.dtype == np.float32 and len(x) > 0 and np.isfinite(x).all() and classes == ()
    if y is None:  # x alone: unlabelled inputs
        return
    assert len(y) == len(x) and y.dtype in (np.int64, np.float32) and np.isfinite(y).all()
    if y.ndim == 1 and y.dtype == np.int64:  # class indices
        assert y.min() >= 0 and len(np.unique(y)) >= 2


@SETTINGS
@given(st.lists(st.one_of(st.integers(-2, 3), st.sampled_from(["cat", "dog"]), st.booleans(), st.none()), max_size=6))
def test_any_labelled_jsonl_loads_or_is_refused_in_one_line(tmp_path, labels):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": v}) + "\n" for i, v in enumerate(labels)))
    try:
        texts, ids = load_texts(str(path), label_column="label")
    except UserError as exc:
        _one_line(exc)
        return
    assert len(texts) == len(ids) and ids.dtype == np.int64 and len(np.unique(ids)) >= 2


def test_a_jsonl_of_one_label_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": "cat"}) + "\n" for i in range(5)))
    with pytest.raises(UserError) as exc:
        load_texts(str(path), label_column="label")
    assert "every text has the same label in 'label'" in _one_line(exc.value)
