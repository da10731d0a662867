import numpy as np
import pytest
from PIL import Image

from edgedistill.data.arrays import load_arrays, split
from edgedistill.errors import UserError


def _one_line_user_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def digits():
    return load_arrays("digits")


def test_digits_loads_scaled_float32_images_with_ten_classes(digits, digits_xy):
    x, y, classes = digits
    assert x.shape == (1797, 1, 8, 8)
    assert x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert y.dtype == np.int64 and set(y.tolist()) == set(range(10))
    assert classes == tuple(str(c) for c in range(10))
    np.testing.assert_array_equal(x, digits_xy[0])
    np.testing.assert_array_equal(y, digits_xy[1])


def _split_ids(y, seed, val=0.2, calib=0.1):
    # x holds each sample's index, so the splits say which samples went where
    ids = np.arange(len(y), dtype=np.float32)[:, None]
    return split(ids, y, (), "ids", val, calib, seed)


def _ids(ds):
    return ds.x[:, 0].astype(int)


def test_sensor_digits_are_the_digits_with_the_same_seeded_read_noise_every_time(digits_xy):
    x, y, classes = load_arrays("sensor-digits")
    again, _, _ = load_arrays("sensor-digits")
    clean, labels = digits_xy
    assert np.array_equal(x, again) and np.array_equal(y, labels) and len(classes) == 10
    noise = x - clean
    assert x.dtype == np.float32 and abs(float(noise.std()) - 0.3) < 0.01 and abs(float(noise.mean())) < 0.01


def test_split_is_deterministic_for_a_seed_and_differs_for_another(digits):
    y = digits[1]
    a, b, c = _split_ids(y, 0), _split_ids(y, 0), _split_ids(y, 1)
    for part in ("train", "val", "calib"):
        np.testing.assert_array_equal(_ids(getattr(a, part)), _ids(getattr(b, part)))
    assert set(_ids(a.val)) != set(_ids(c.val))
    assert set(_ids(a.train)) != set(_ids(c.train))


def test_splits_are_disjoint_cover_everything_and_respect_fractions(digits):
    y = digits[1]
    s = _split_ids(y, 0, val=0.2, calib=0.1)
    train, val, calib = (set(_ids(d)) for d in (s.train, s.val, s.calib))
    assert not (train & val) and not (train & calib) and not (val & calib)
    assert train | val | calib == set(range(len(y)))
    assert len(s.val) == round(0.2 * len(y))
    assert len(s.calib) == round(0.1 * len(y))
    assert len(s.train) == len(y) - len(s.val) - len(s.calib)
    # labels travel with their inputs
    np.testing.assert_array_equal(s.val.y, y[_ids(s.val)])
    assert s.num_classes == 10
    assert s.classes == tuple(str(c) for c in range(10))
    assert s.input_shape == (1,)
    assert s.source == "ids"


def test_split_is_stratified(digits):
    y = digits[1]
    s = _split_ids(y, 3)
    assert set(s.val.y.tolist()) == set(range(10))
    assert set(s.calib.y.tolist()) == set(range(10))
    # class shares in val follow the whole set's within a couple of samples
    want = np.bincount(y) * len(s.val) / len(y)
    assert np.abs(np.bincount(s.val.y, minlength=10) - want).max() <= 1.5


@pytest.mark.parametrize("n,val,calib", [(5, 0.1, 0.1), (4, 0.4, 0.4), (10, 0.5, 0.5)])
def test_too_few_samples_raise_user_error(n, val, calib):
    x = np.zeros((n, 2), np.float32)
    y = np.arange(n) % 2
    with pytest.raises(UserError) as exc:
        split(x, y, (), "tiny", val, calib, 0)
    msg = _one_line_user_error(exc)
    assert "tiny" in msg and str(n) in msg


def test_split_smaller_than_class_count_falls_back_to_a_plain_shuffle():
    x = np.arange(30, dtype=np.float32)[:, None]
    y = np.repeat(np.arange(10), 3)
    s = split(x, y, (), "few", 0.1, 0.1, 0)
    assert (len(s.train), len(s.val), len(s.calib)) == (24, 3, 3)
    seen = np.concatenate([s.train.x, s.val.x, s.calib.x])[:, 0]
    assert sorted(seen.tolist()) == list(range(30))


def test_npz_with_x_and_y_loads(tmp_path):
    x = np.random.default_rng(0).random((12, 3, 4)).astype(np.float64)
    y = np.arange(12, dtype=np.int32) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    lx, ly, classes = load_arrays(str(tmp_path / "d.npz"))
    assert lx.dtype == np.float32 and lx.shape == (12, 3, 4)
    assert ly.dtype == np.int64
    np.testing.assert_allclose(lx, x, rtol=1e-6)
    np.testing.assert_array_equal(ly, y)
    assert classes == ()


def test_npz_without_y_is_unlabelled_and_a_npy_is_inputs_alone(tmp_path):
    x = np.random.default_rng(0).random((4, 2))
    np.savez(tmp_path / "d.npz", x=x)
    np.save(tmp_path / "d.npy", x)
    for name in ("d.npz", "d.npy"):
        lx, ly, classes = load_arrays(str(tmp_path / name))
        assert lx.dtype == np.float32 and lx.shape == (4, 2) and ly is None and classes == ()


def test_npz_without_x_names_the_fix(tmp_path):
    np.savez(tmp_path / "d.npz", y=np.zeros(4))
    with pytest.raises(UserError) as exc:
        load_arrays(str(tmp_path / "d.npz"))
    msg = _one_line_user_error(exc)
    assert "lacks array x" in msg and "numpy.savez" in msg


@pytest.mark.parametrize(
    ("y", "dtype"),
    [
        (np.zeros((4, 2), np.int32), np.int64),  # tags or 1-D label maps
        (np.array([0.5, 1.0, 0.0, 1.0]), np.float32),  # regression targets
        (np.ones((4, 3), bool), np.float32),  # 0/1 tags
    ],
)
def test_npz_labels_of_other_tasks_load(tmp_path, y, dtype):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=y)
    _, ly, _ = load_arrays(str(tmp_path / "d.npz"))
    assert ly.dtype == dtype and ly.shape == y.shape


def test_labels_per_output_are_joined_in_the_files_order(tmp_path):
    from edgedistill.data.arrays import output_labels

    boxes, scores = np.random.default_rng(0).random((5, 2, 2)), np.arange(5) % 3
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 3), np.float32), y_boxes=boxes, y_scores=scores)
    _, y, _ = load_arrays(str(tmp_path / "d.npz"))
    assert y.dtype == np.float32 and y.shape == (5, 5)
    np.testing.assert_allclose(y[:, :4], boxes.reshape(5, 4), rtol=1e-6) and np.testing.assert_array_equal(y[:, 4], scores)
    parts = output_labels(str(tmp_path / "d.npz"))
    assert [(p.name, p.start, p.stop, p.shape, p.integer) for p in parts] == [("boxes", 0, 4, (2, 2), False), ("scores", 4, 5, (), True)]


def test_labels_false_drops_the_sources_labels():
    x, y, classes = load_arrays("digits", labels=False)
    assert len(x) == 1797 and y is None and classes == ()


@pytest.mark.parametrize(
    "y,expect",
    [
        (np.arange(3), "samples"),  # 4 inputs, 3 labels
        (np.array([0, 1, -1, 0]), "negative"),
        (np.array(["a", "b", "c", "d"]), "dtype"),
        (np.array([0.0, np.nan, 0.0, 1.0]), "NaN"),
    ],
)
def test_bad_npz_labels_raise_user_error(tmp_path, y, expect):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=y)
    with pytest.raises(UserError) as exc:
        load_arrays(str(tmp_path / "d.npz"))
    assert expect in _one_line_user_error(exc)


def test_unreadable_npz_raises_user_error(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"not a zip file")
    with pytest.raises(UserError) as exc:
        load_arrays(str(tmp_path / "d.npz"))
    assert "npz" in _one_line_user_error(exc)


def test_empty_npz_raises_user_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((0, 2), np.float32), y=np.zeros((0,), np.int64))
    with pytest.raises(UserError):
        load_arrays(str(tmp_path / "d.npz"))


def _image_folder(root, size=(5, 7)):
    # cat: white images, dog: black images; size is PIL's (width, height)
    for name, colour in (("cat", (255, 255, 255)), ("dog", (0, 0, 0))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", size, colour).save(root / name / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    return root


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_loads_at_configured_size_and_channels(tmp_path, channels):
    root = _image_folder(tmp_path / "imgs")
    x, y, classes = load_arrays(str(root), image_size=(6, 4), channels=channels)
    assert x.shape == (6, channels, 6, 4)
    assert x.dtype == np.float32
    assert classes == ("cat", "dog")
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    assert np.all(x[y == 0] == 1.0)
    assert np.all(x[y == 1] == 0.0)


def test_image_folder_without_class_folders_is_unlabelled(tmp_path):
    for i in range(3):
        Image.new("L", (4, 4), 40 * i).save(tmp_path / f"{i}.png")
    x, y, classes = load_arrays(str(tmp_path), image_size=(4, 4), channels=1)
    assert x.shape == (3, 1, 4, 4) and y is None and classes == ()


def test_image_folder_without_images_or_classes_raises_user_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(UserError) as exc:
        load_arrays(str(tmp_path))
    assert "no class folders and no images" in _one_line_user_error(exc)


def _truncated_png(path):
    Image.new("RGB", (32, 32), (10, 200, 30)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_raises_user_error_naming_the_file(tmp_path, damage):
    root = _image_folder(tmp_path / "imgs")
    bad = root / "dog" / "bad.png"
    if damage == "garbage":
        bad.write_bytes(b"this is not a png")
    else:
        _truncated_png(bad)
    with pytest.raises(UserError) as exc:
        load_arrays(str(root), image_size=(4, 4), channels=3)
    assert "bad.png" in _one_line_user_error(exc)


def test_missing_source_raises_user_error(tmp_path):
    with pytest.raises(UserError) as exc:
        load_arrays(str(tmp_path / "nope.npz"))
    msg = _one_line_user_error(exc)
    assert "does not exist" in msg and "nope.npz" in msg


def test_unsupported_file_raises_user_error(tmp_path):
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(UserError) as exc:
        load_arrays(str(tmp_path / "data.csv"))
    assert "data.csv" in _one_line_user_error(exc)


def _load_error(tmp_path, x, y) -> str:
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(UserError) as exc:
        load_arrays(str(tmp_path / "d.npz"))
    return _one_line_user_error(exc)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_counted_and_the_file_named(tmp_path, bad):
    x = np.zeros((6, 2, 2), np.float32)
    x[1, 0, 0] = x[4, 1, 1] = bad
    msg = _load_error(tmp_path, x, np.arange(6) % 2)
    assert str(tmp_path / "d.npz") in msg and "x holds NaN or Inf" in msg and "in 2 of its 24 values" in msg


def test_inputs_beyond_float32_are_refused_not_turned_into_inf(tmp_path):
    msg = _load_error(tmp_path, np.array([[1.0], [1e300], [2.0], [3.0]]), np.arange(4) % 2)
    assert "beyond float32's range" in msg and "1 of its 4 values" in msg


@pytest.mark.parametrize(
    "x,y,expect",
    [
        (np.float32(1.0), np.arange(4) % 2, "x is a single value (a 0-d array)"),
        (np.zeros((4, 2), np.float32), np.int64(1), "expected numbers with one row per sample"),
        (np.zeros((4, 2), np.complex64), np.arange(4) % 2, "expected real numbers"),
        (np.zeros((4, 2), bool), np.arange(4) % 2, "expected real numbers"),
        (np.zeros((4, 2), np.float32), np.zeros(4, np.int64), "every sample has the label 0"),
        (np.zeros((4, 2), np.float32), np.array([0, 1, 0, 2**64 - 1], np.uint64), "with C at most 1,000,000"),
        (np.zeros((4, 2), np.float32), np.array([0, 1, 0, 10**12]), "y holds label 1000000000000"),
    ],
)
def test_npz_that_cannot_teach_is_one_line(tmp_path, x, y, expect):
    assert expect in _load_error(tmp_path, x, y)


def test_an_empty_class_folder_is_named(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    (root / "emu").mkdir()
    (root / "emu" / "notes.txt").write_text("the images are still on the camera")
    with pytest.raises(UserError) as exc:
        load_arrays(str(root), image_size=(4, 4), channels=1)
    msg = _one_line_user_error(exc)
    assert f"class folder {root / 'emu'} holds no images" in msg


def test_one_class_folder_is_a_single_class(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    for file in (root / "dog").iterdir():
        file.unlink()
    (root / "dog").rmdir()
    with pytest.raises(UserError) as exc:
        load_arrays(str(root), image_size=(4, 4), channels=1)
    assert "every sample has the label cat" in _one_line_user_error(exc)


def test_hidden_folders_are_not_classes(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    (root / ".ipynb_checkpoints").mkdir()
    _, y, classes = load_arrays(str(root), image_size=(4, 4), channels=1)
    assert classes == ("cat", "dog") and set(y.tolist()) == {0, 1}

