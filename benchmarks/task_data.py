"""The data and models of figure 13's cases, made by this script or from scikit-learn's digits
(nothing downloaded): vibration windows (regression on 1-D signals), digits canvases with label maps
(segmentation), and digits placed on canvases with their ink's box and class (a teacher of two
outputs)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmarks import fixtures
from benchmarks.fixtures import Split
from edgedistill.data.arrays import Dataset, split
from edgedistill.tasks import ARRAY_TASKS
from edgedistill.tasks.heads import Head, Labelled, Part, Several

@dataclass(frozen=True)
class Vibration:
    """Seeded windows of a 3-axis vibration sensor: two tones (the dominant one and a weaker one,
    at independent frequencies), mixed onto each axis with its own gains and phases, plus a linear
    drift, an offset and white noise. The target is the dominant tone's frequency in Hz."""

    samples: int = 3000
    channels: int = 3
    length: int = 128
    rate_hz: float = 200.0
    band_hz: tuple[float, float] = (5.0, 40.0)
    # the weaker tone's amplitude as a share of the dominant one's
    second: tuple[float, float] = (0.2, 0.8)
    # the dominant tone's amplitude, per window (a gain the target must not depend on)
    amplitude: tuple[float, float] = (0.5, 2.0)
    noise: float = 0.5
    drift: float = 1.0


VIBRATION = Vibration()


@dataclass(frozen=True)
class Canvas:
    """Two 8x8 digits side by side on a 16x16 canvas, each at a seeded height; the label map is 0
    (background) or 1 + the digit at each ink pixel (value >= `ink` of full scale)."""

    size: int = 16
    ink: float = 0.25
    # canvases made per split from that split's digit images: no digit image is in two splits
    per_image: float = 2.0


CANVAS = Canvas()
SEGMENT_CLASSES = 11


def _split(x: np.ndarray, y: np.ndarray, name: str) -> Split:
    """`x, y` split as the figures split: the example's validation share and seed, HELD_OUT_FRACTION held out."""
    cfg = fixtures.example()
    s = split(x, y, (), name, cfg.data.val_fraction, fixtures.HELD_OUT_FRACTION, cfg.seed)
    return Split(s.train, s.val, s.calib, s.num_classes)


def vibration_windows(n: int, seed: int, v: Vibration = VIBRATION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` windows (n, channels, length), their dominant frequencies in Hz (n,), and whether the
    weaker tone carries more energy than the dominant one summed over the axes (n,): the per-axis
    gains can turn the order round, and there the window does not show which tone is the target."""
    rng = np.random.default_rng(seed)
    t = np.arange(v.length) / v.rate_hz
    f0, f1 = (rng.uniform(*v.band_hz, (n, 1, 1)) for _ in range(2))
    gain = rng.uniform(*v.amplitude, (n, 1, 1))
    ratio = rng.uniform(*v.second, (n, 1, 1))
    g0, g1 = (rng.uniform(0.2, 1.0, (n, v.channels, 1)) for _ in range(2))
    p0, p1 = (rng.uniform(0, 2 * np.pi, (n, v.channels, 1)) for _ in range(2))
    tones = g0 * np.sin(2 * np.pi * f0 * t + p0) + ratio * g1 * np.sin(2 * np.pi * f1 * t + p1)
    slope = rng.uniform(-v.drift, v.drift, (n, v.channels, 1))
    offset = rng.uniform(-1.0, 1.0, (n, v.channels, 1))
    x = gain * tones + slope * (t / t[-1] - 0.5) + offset + rng.normal(0.0, v.noise, (n, v.channels, v.length))
    swapped = ((ratio * g1) ** 2).sum(axis=(1, 2)) > (g0**2).sum(axis=(1, 2))
    return x.astype(np.float32), f0.reshape(n), swapped


@functools.cache
def vibration() -> Split:
    """The vibration windows split 60 / 20 / 20, targets standardised with the training split's
    mean and std (`frequency_scale` turns them back into Hz)."""
    x, hz, _ = vibration_windows(VIBRATION.samples, fixtures.example().seed)
    s = _split(x, hz, "vibration")
    mean, std = frequency_scale()
    return Split(*(Dataset(d.x, ((d.y - mean) / std).astype(np.float32)) for d in (s.train, s.val, s.test)), 0)


@functools.cache
def frequency_scale() -> tuple[float, float]:
    """Mean and std (Hz) of the training split's dominant frequencies."""
    x, hz, _ = vibration_windows(VIBRATION.samples, fixtures.example().seed)
    train = _split(x, hz, "vibration").train.y
    return float(train.mean()), float(train.std())


def canvases(images: Dataset, n: int, seed: int, c: Canvas = CANVAS) -> Dataset:
    """`n` canvases of two digits drawn from `images` (1x8x8 in [0, 1]), and their label maps."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, c.size, c.size), np.float32)
    y = np.zeros((n, c.size, c.size), np.int64)
    for half in (0, 1):
        pick = rng.integers(0, len(images), n)
        rows = rng.integers(0, c.size - 8 + 1, n)
        col = half * (c.size // 2)
        for i, (k, r) in enumerate(zip(pick, rows)):
            digit = images.x[k, 0]
            x[i, 0, r : r + 8, col : col + 8] = digit
            y[i, r : r + 8, col : col + 8] = np.where(digit >= c.ink, 1 + images.y[k], 0)
    return Dataset(x, y)


@functools.cache
def segments() -> Split:
    """Canvases made within each of the digits' splits (figure 1's 60 / 20 / 20), so no held-out
    canvas holds a digit image seen in training; CANVAS.per_image canvases per image of the split."""
    seed, d = fixtures.example().seed, fixtures.digits()
    parts = [canvases(p, round(CANVAS.per_image * len(p)), seed + i) for i, p in enumerate((d.train, d.val, d.test))]
    return Split(*parts, SEGMENT_CLASSES)


class TwoHeads(nn.Module):
    """A detector-like model of 1x16x16 canvases: a conv trunk and two raw heads returned as a dict,
    "boxes" (top, left, bottom, right of the digit's ink, as shares of the canvas) and "scores"
    (10 class logits). `width` scales every channel count."""

    def __init__(self, width: float) -> None:
        super().__init__()
        c1, c2, hidden = (max(2, round(c * width)) for c in (32, 64, 128))
        self.trunk = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * 16, hidden), nn.ReLU(),
        )
        self.boxes, self.scores = nn.Linear(hidden, 4), nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {"boxes": self.boxes(features), "scores": self.scores(features)}


def placed(images: Dataset, seed: int, c: Canvas = CANVAS) -> Dataset:
    """Each 8x8 digit of `images` on its own 16x16 canvas at a seeded place, labelled with its ink's
    bounding box (top, left, bottom, right over the canvas side; ink: at least `c.ink`) and its
    class, joined per sample as the library joins a .npz's y_boxes and y_scores."""
    rng = np.random.default_rng(seed)
    n = len(images)
    x = np.zeros((n, 1, c.size, c.size), np.float32)
    at = rng.integers(0, c.size - 8 + 1, (n, 2))
    for i, (r, col) in enumerate(at):
        x[i, 0, r : r + 8, col : col + 8] = images.x[i, 0]
    on = x[:, 0] >= c.ink
    rows, cols = on.any(axis=2), on.any(axis=1)  # which canvas rows and columns hold ink
    edges = [rows.argmax(axis=1), cols.argmax(axis=1), c.size - rows[:, ::-1].argmax(axis=1), c.size - cols[:, ::-1].argmax(axis=1)]
    boxes = np.stack(edges, axis=1) / c.size
    return Dataset(x, np.concatenate([boxes, images.y[:, None]], axis=1).astype(np.float32))


# Labels joined per sample as the library joins them (`y_boxes` then `y_scores` of a .npz).
TWO_HEADS = Several((
    Part(Head("boxes", (4,)), ARRAY_TASKS["regression"], 1.0, Labelled(0, 4, (4,), False)),
    Part(Head("scores", (10,)), ARRAY_TASKS["classification"], 1.0, Labelled(4, 5, (), True)),
))


@functools.cache
def boxes_and_classes() -> Split:
    """The digits (figure 1's split), each placed on a canvas within its own split."""
    seed, d = fixtures.example().seed, fixtures.digits()
    return Split(*(placed(p, seed + i) for i, p in enumerate((d.train, d.val, d.test))), 10)
