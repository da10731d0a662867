"""Built-in student families for teachers whose weights a generator cannot start from (an ONNX,
recorded or query-only teacher): fresh models sized by a width knob, shaped by the data's input
and the teacher's number of outputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgedistill.errors import UserError


class ConvNet(nn.Module):
    """Conv-BN-ReLU blocks (two, pooled after each once the map is at least 4 wide) and a linear
    head, for (C, H, W) inputs. `width` scales every channel count."""

    def __init__(self, input_shape: tuple[int, ...], outputs: int, width: float) -> None:
        super().__init__()
        channels, height, wide = input_shape
        c1, c2, hidden = (max(2, round(c * width)) for c in (32, 64, 128))
        layers: list[nn.Module] = []
        for c_in, c_out in ((channels, c1), (c1, c2)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            if min(height, wide) >= 4:
                layers.append(nn.MaxPool2d(2))
                height, wide = height // 2, wide // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * height * wide, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Two hidden layers on the flattened input; `width` scales both."""

    def __init__(self, input_shape: tuple[int, ...], outputs: int, width: float) -> None:
        super().__init__()
        size = 1
        for d in input_shape:
            size *= d
        h1, h2 = (max(2, round(c * width)) for c in (256, 128))
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(size, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


FAMILIES: dict[str, Callable[[tuple[int, ...], int, float], nn.Module]] = {"cnn": ConvNet, "mlp": MLP}


def build(name: str, input_shape: tuple[int, ...], outputs: int, width: float) -> nn.Module:
    """A member of family `name` for inputs of `input_shape` with `outputs` outputs."""
    if name == "cnn" and len(input_shape) != 3:
        raise UserError(f"the cnn family takes (channels, height, width) inputs, not {input_shape}: use family mlp")
    return FAMILIES[name](input_shape, outputs, width)


def default_family(input_shape: tuple[int, ...]) -> str:
    """cnn for image-shaped inputs, mlp for everything else."""
    return "cnn" if len(input_shape) == 3 else "mlp"
