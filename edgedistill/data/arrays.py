"""Data sources (built-in digits, .npz and .npy arrays, image folders) and seeded splits.

Labels are what the task makes of them: class indices (N,), 0/1 tags (N, K), values of any
shape (regression), label maps (N, H, W); or none at all (`.npz` with x alone, a `.npy` of
inputs, a folder of images without class folders), where students learn from the teacher alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from edgedistill.errors import UserError
from edgedistill.finite import nonfinite

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
MAX_CLASSES = 1_000_000


@dataclass(frozen=True)
class Dataset:
    """Inputs as float32 (N, ...) and labels, one row per sample (None: the data has none)."""

    x: np.ndarray
    y: np.ndarray | None

    def __len__(self) -> int:
        return len(self.x)

    @property
    def labels(self) -> np.ndarray | None:
        """The labels, as every part of the run's data names them."""
        return self.y


@dataclass(frozen=True)
class Splits:
    """Train, validation and calibration splits of one source, made with a fixed seed."""

    train: Dataset
    val: Dataset
    calib: Dataset
    # Classes of one-per-sample integer labels; 0 (and no names) for any other labels or none.
    num_classes: int
    classes: tuple[str, ...]
    source: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch axis."""
        return tuple(self.train.x.shape[1:])


def load_arrays(source: str, image_size: tuple[int, int] = (32, 32), channels: int = 3, labels: bool = True) -> tuple[
    np.ndarray, np.ndarray | None, tuple[str, ...]
]:
    """Load all inputs and labels of a source: a built-in one ("digits", "sensor-digits"), a `.npz`
    file (x, and y where labelled), a `.npy` of inputs, or a folder of class folders (or of images
    alone); `labels` False drops whatever labels the source has.

    Inputs with NaN or Inf, non-finite labels and class labels of a single class are refused in
    one line (UserError)."""
    if source in BUILTIN:
        x, y, classes = BUILTIN[source]()
        return (x, y, classes) if labels else (x, None, ())
    path = Path(source)
    if not path.exists():
        raise UserError(f"data source {source!r} does not exist: give \"digits\", a .npz or .npy file or an image folder")
    if path.is_dir():
        x, y, classes = _image_folder(path, image_size, channels)
    elif path.suffix == ".npz":
        x, y, classes = _npz(path)
    elif path.suffix == ".npy":
        x, y, classes = _npy(path), None, ()
    else:
        raise UserError(
            f"data source {source!r} is not a .npz or .npy file or a folder: give \"digits\", a .npz with x (and y), "
            "a .npy of inputs, or an image folder"
        )
    if not labels:
        y, classes = None, ()
    _check_loaded(path, x, y, classes)
    return x, y, classes


def class_labels(y: np.ndarray | None) -> bool:
    """Whether labels are one class index per sample (what stratified splits and class counts take)."""
    return y is not None and y.ndim == 1 and y.dtype.kind in "iu"


def _check_loaded(path: Path, x: np.ndarray, y: np.ndarray | None, classes: tuple[str, ...]) -> None:
    """Refuse what would train a NaN teacher or teach nothing: non-finite inputs or labels, one class."""
    bad = nonfinite(x)
    if bad:
        raise UserError(
            f"{path}: x holds NaN or Inf (or numbers beyond float32's range) in {bad:,} of its {x.size:,} values: "
            "replace them or drop those samples"
        )
    if y is not None and y.dtype.kind == "f" and nonfinite(y):
        raise UserError(f"{path}: y holds NaN or Inf in {nonfinite(y):,} of its {y.size:,} values: replace them or drop those samples")
    if not class_labels(y):
        return
    present = np.unique(y)
    if len(present) < 2:
        name = classes[present[0]] if classes else str(present[0])
        raise UserError(
            f"{path}: every sample has the label {name}: distillation scores a classifier against its labels, "
            "which needs two or more classes: add samples of the other classes"
        )


def split(
    x: np.ndarray,
    y: np.ndarray,
    classes: tuple[str, ...],
    source: str,
    val_fraction: float,
    calib_fraction: float,
    seed: int,
) -> Splits:
    """Stratified train / validation / calibration splits; the same seed gives the same splits."""
    n = len(x)
    n_val, n_calib = round(n * val_fraction), round(n * calib_fraction)
    if n_val < 1 or n_calib < 1 or n - n_val - n_calib < 1:
        raise UserError(
            f"data source {source!r} has {n} samples, too few for val_fraction={val_fraction} and "
            f"calib_fraction={calib_fraction}: give more data or change the fractions"
        )
    idx = np.arange(n)
    stratify = y if _can_stratify(y, min(n_val, n_calib)) else None
    rest, val_idx = train_test_split(idx, test_size=n_val, random_state=seed, stratify=stratify)
    rest_strat = y[rest] if stratify is not None else None
    train_idx, calib_idx = train_test_split(rest, test_size=n_calib, random_state=seed, stratify=rest_strat)
    num_classes = max(len(classes), int(y.max()) + 1) if class_labels(y) else 0

    def part(rows: np.ndarray) -> Dataset:
        return Dataset(x[rows], y[rows] if y is not None else None)

    return Splits(
        train=part(train_idx), val=part(val_idx), calib=part(calib_idx), num_classes=num_classes,
        classes=classes or tuple(str(c) for c in range(num_classes)), source=source,
    )


def _can_stratify(y: np.ndarray | None, smallest_split: int) -> bool:
    """Stratify class labels when every class can appear in every split; a tiny split (or labels
    that are not classes) falls back to a plain shuffle."""
    if not class_labels(y):
        return False
    counts = np.bincount(y)
    return bool(counts[counts > 0].min() >= 3 and smallest_split >= int((counts > 0).sum()))


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; scale to [0, 1] and add the channel axis the CNN expects.
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return x, digits.target.astype(np.int64), tuple(str(c) for c in range(10))


def _sensor_digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The digits as a cheap, noisy 8x8 sensor reads them: each image with Gaussian read noise of
    0.3 of full scale (seeded, so every run sees the same samples).

    Harder than the clean digits (a teacher reaches well under 99 %), which leaves the smallest
    students points to lose trained alone, and the teacher points to give back. One noisy copy
    per image, not several: copies of one image would land in both training and validation."""
    x, y, classes = _digits()
    noise = np.random.default_rng(SENSOR_SEED).normal(0.0, SENSOR_NOISE, x.shape).astype(np.float32)
    return x + noise, y, classes


BUILTIN = {"digits": _digits, "sensor-digits": _sensor_digits}
SENSOR_NOISE, SENSOR_SEED = 0.3, 0


@dataclass(frozen=True)
class OutputLabels:
    """The labels of one output of a teacher with several, saved as `y_<output>` in a `.npz`:
    where they lie in the joined label rows, their shape per sample and whether they are integers."""

    name: str
    start: int
    shape: tuple[int, ...]
    integer: bool

    @property
    def stop(self) -> int:
        return self.start + int(np.prod(self.shape))


OUTPUT_PREFIX = "y_"


def output_labels(source: str) -> tuple[OutputLabels, ...]:
    """The per-output labels (`y_<output>` arrays) of a `.npz` source, in the order `load_arrays`
    joins them; () for any other source."""
    if not source.endswith(".npz"):
        return ()
    with np.load(source, allow_pickle=False) as arrays:
        keys = [k for k in arrays.files if k.startswith(OUTPUT_PREFIX)] if "y" not in arrays.files else []
        parts, start = [], 0
        for key in keys:
            a = arrays[key]
            parts.append(OutputLabels(key.removeprefix(OUTPUT_PREFIX), start, tuple(a.shape[1:]), a.dtype.kind in "biu"))
            start = parts[-1].stop
    return tuple(parts)


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays.files:
                raise UserError(f"{path} lacks array x: save it with numpy.savez(path, x=inputs, y=labels) (y may be left out)")
            x, y = arrays["x"], arrays["y"] if "y" in arrays.files else _joined(path, arrays)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz of numeric arrays ({exc}): save it with numpy.savez(path, x=inputs, y=labels)") from exc
    x = _inputs(path, x)
    if y is None:
        return x, None, ()
    # Integers, floats and bools (0/1 tags): a complex value or a string is no label.
    if y.dtype.kind not in "biuf" or y.ndim == 0:
        raise UserError(f"{path}: y has dtype {y.dtype} and shape {y.shape}, expected numbers with one row per sample")
    if len(x) != len(y):
        raise UserError(f"{path}: x has {len(x)} samples but y has {len(y)}: give one label (row) per input")
    if class_labels(y) and y.min() < 0:
        raise UserError(f"{path}: y holds negative label {int(y.min())}: labels must be class indices 0..C-1")
    if class_labels(y) and y.max() >= MAX_CLASSES:
        # Larger labels are ids, not class indices: every split, count and output row would take that many.
        raise UserError(f"{path}: y holds label {int(y.max())}: labels must be class indices 0..C-1, with C at most {MAX_CLASSES:,}")
    return x, _labels(y), ()


def _joined(path: Path, arrays: np.lib.npyio.NpzFile) -> np.ndarray | None:
    """The labels of several outputs (`y_<output>` arrays), each flattened per sample and joined
    as float32 rows (class indices stay exact), as the outputs themselves are joined; None without any."""
    keys = [k for k in arrays.files if k.startswith(OUTPUT_PREFIX)]
    if not keys:
        return None
    parts = [arrays[k] for k in keys]
    for key, a in zip(keys, parts):
        if a.dtype.kind not in "biuf" or a.ndim == 0 or len(a) != len(parts[0]):
            raise UserError(f"{path}: {key} has dtype {a.dtype} and shape {a.shape}, expected numbers with one row per sample as every y_ array")
    with np.errstate(over="ignore"):
        return np.concatenate([a.reshape(len(a), -1).astype(np.float32) for a in parts], axis=1)


def _labels(y: np.ndarray) -> np.ndarray:
    """Labels as training takes them: integers as int64, tags and values as float32."""
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    with np.errstate(over="ignore"):
        return y.astype(np.float32)


def _npy(path: Path) -> np.ndarray:
    """A `.npy` of inputs alone (no labels)."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npy of numbers ({exc}): save the inputs with numpy.save(path, inputs)") from exc
    return _inputs(path, x)


def _inputs(path: Path, x: np.ndarray) -> np.ndarray:
    """Inputs checked for a sample axis and real numbers, as float32."""
    if x.ndim == 0:
        raise UserError(f"{path}: x is a single value (a 0-d array), not samples: save x with one row per sample, shape (N, ...)")
    if len(x) == 0:
        raise UserError(f"{path} holds no samples: x is empty")
    # Integers and floats only: a complex value would lose its imaginary part, a bool or a date is no input.
    if x.dtype.kind not in "iuf":
        raise UserError(f"{path}: x has dtype {x.dtype}, expected real numbers: store inputs as a float array")
    # Values beyond float32's range become Inf here, which `_check_loaded` reports.
    with np.errstate(over="ignore"):
        return x.astype(np.float32)


def _image_folder(path: Path, image_size: tuple[int, int], channels: int) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """Class folders of images (labelled by folder), or images alone in the folder (unlabelled)."""
    # Hidden folders (.ipynb_checkpoints, .git) are a tool's, not a class.
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        files = _images_in(path)
        if not files:
            raise UserError(
                f"image folder {path} has no class folders and no images: put each class's images in {path}/<class>/, "
                "or unlabelled images in the folder itself"
            )
        return np.stack([_image(f, image_size, channels) for f in files]), None, ()
    xs, ys = [], []
    for label, class_dir in enumerate(class_dirs):
        files = _images_in(class_dir)
        if not files:
            # An empty class would still take a label and an output, which nothing could teach.
            raise UserError(
                f"class folder {class_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): add its images or remove the folder"
            )
        xs += [_image(f, image_size, channels) for f in files]
        ys += [label] * len(files)
    return np.stack(xs), np.asarray(ys, dtype=np.int64), tuple(d.name for d in class_dirs)


def _images_in(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]


def _image(file: Path, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as float32 (channels, height, width) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    mode = {1: "L", 3: "RGB"}[channels]
    try:
        with Image.open(file) as img:
            arr = np.asarray(img.convert(mode).resize(image_size[::-1]), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{file} is not a readable image ({exc}): remove or replace it") from exc
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
