"""The built-in digits example: a small CNN family on scikit-learn's 8x8 digits.

`cnn(width)` is a `scale` family; `teacher()` is its full-width member, which the example trains.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Three conv blocks and a two-layer head for 1x8x8 inputs, channel counts scaled by `width`."""

    def __init__(self, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3, hidden = (max(2, round(c * width)) for c in (32, 64, 128, 128))
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.BatchNorm2d(c3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * 4, hidden),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def cnn(width: float = 1.0) -> nn.Module:
    """A member of the digits CNN family; `width` scales every layer's channels."""
    return DigitsCNN(width=width)


def teacher() -> nn.Module:
    """The full-width digits CNN (about 160k parameters), untrained."""
    return DigitsCNN(width=1.0)


def config_path(name: str = "digits") -> Path:
    """Path of a built-in example's run config."""
    path = resources.files("edgedistill.examples") / f"{name}.toml"
    return Path(str(path))
