"""Data sources (built-in digits, .npz arrays, image folders) and seeded splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from edgedistill.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass(frozen=True)
class Dataset:
    """Inputs as float32 (N, ...) and integer labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    @property
    def labels(self) -> np.ndarray:
        """The labels, as every part of the run's data names them."""
        return self.y


@dataclass(frozen=True)
class Splits:
    """Train, validation and calibration splits of one source, made with a fixed seed."""

    train: Dataset
    val: Dataset
    calib: Dataset
    num_classes: int
    classes: tuple[str, ...]
    source: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch axis."""
        return tuple(self.train.x.shape[1:])


def load_arrays(source: str, image_size: tuple[int, int] = (32, 32), channels: int = 3) -> tuple[
    np.ndarray, np.ndarray, tuple[str, ...]
]:
    """Load all inputs and labels of a source: "digits", a `.npz` file or a folder of class folders."""
    if source == "digits":
        return _digits()
    path = Path(source)
    if not path.exists():
        raise UserError(f"data source {source!r} does not exist: give \"digits\", a .npz file or an image folder")
    if path.is_dir():
        return _image_folder(path, image_size, channels)
    if path.suffix == ".npz":
        return _npz(path)
    raise UserError(f"data source {source!r} is not a .npz file or a folder: give \"digits\", a .npz with x and y, or an image folder")


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
    # Stratify when every class can appear in every split; a tiny split falls back to a plain shuffle.
    counts = np.bincount(y)
    classes_present = int((counts > 0).sum())
    can_stratify = counts[counts > 0].min() >= 3 and min(n_val, n_calib) >= classes_present
    stratify = y if can_stratify else None
    rest, val_idx = train_test_split(idx, test_size=n_val, random_state=seed, stratify=stratify)
    rest_strat = y[rest] if stratify is not None else None
    train_idx, calib_idx = train_test_split(rest, test_size=n_calib, random_state=seed, stratify=rest_strat)
    num_classes = max(len(classes), int(y.max()) + 1)
    return Splits(
        train=Dataset(x[train_idx], y[train_idx]),
        val=Dataset(x[val_idx], y[val_idx]),
        calib=Dataset(x[calib_idx], y[calib_idx]),
        num_classes=num_classes,
        classes=classes or tuple(str(c) for c in range(num_classes)),
        source=source,
    )


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; scale to [0, 1] and add the channel axis the CNN expects.
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return x, digits.target.astype(np.int64), tuple(str(c) for c in range(10))


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = {"x", "y"} - set(arrays.files)
            if missing:
                raise UserError(f"{path} lacks array(s) {', '.join(sorted(missing))}: save it with numpy.savez(path, x=inputs, y=labels)")
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz of numeric arrays ({exc}): save it with numpy.savez(path, x=inputs, y=labels)") from exc
    if len(x) == 0:
        raise UserError(f"{path} holds no samples: x and y are empty")
    if not np.issubdtype(x.dtype, np.number):
        raise UserError(f"{path}: x has dtype {x.dtype}, expected numbers: store inputs as a float array")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise UserError(f"{path}: y must be a 1-D integer array of class indices, got {y.dtype} with shape {y.shape}")
    if len(x) != len(y):
        raise UserError(f"{path}: x has {len(x)} samples but y has {len(y)}: give one label per input")
    if y.min() < 0:
        raise UserError(f"{path}: y holds negative label {int(y.min())}: labels must be class indices 0..C-1")
    return x.astype(np.float32), y.astype(np.int64), ()


def _image_folder(path: Path, image_size: tuple[int, int], channels: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(d for d in path.iterdir() if d.is_dir())
    if not class_dirs:
        raise UserError(f"image folder {path} has no class folders: put each class's images in {path}/<class>/")
    mode = {1: "L", 3: "RGB"}[channels]
    xs, ys = [], []
    for label, class_dir in enumerate(class_dirs):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    arr = np.asarray(img.convert(mode).resize(image_size[::-1]), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise UserError(f"{file} is not a readable image ({exc}): remove or replace it") from exc
            xs.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise UserError(f"image folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return np.stack(xs), np.asarray(ys, dtype=np.int64), tuple(d.name for d in class_dirs)
