"""Built-in student families for teachers whose weights a generator cannot start from (an ONNX,
recorded or query-only teacher): fresh models sized by a width knob, shaped by the data's input
and the teacher's output (one sample's shapes, without the batch axis).

- cnn: (C, H, W) images to a vector (classification, regression).
- cnn1d: (C, L) signals to a vector.
- dense: (C, H, W) to (C', H', W') or (C, L) to (C', L') (segmentation, dense regression).
- mlp: any input to any output shape.

Every member grows with `width` (the search bisects on it), keeps at least 2 channels at tiny
widths, and is built only of ops that torch.onnx.export, onnxruntime's static int8 QDQ quantizer
and the deployment runtimes (ORT Mobile, TensorRT) all take: resampling to sizes fixed at build
time, never computed at run time, and 1-D pooling and resampling done as 2-D ops on height-1 maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.errors import UserError

Shape = tuple[int, ...]


def _scaled(width: float, *bases: int) -> tuple[int, ...]:
    """Each base channel count times `width`, at least 2: one channel would leave a BatchNorm
    (and the search) nothing to shrink, and 0 would not build."""
    return tuple(max(2, round(c * width)) for c in bases)


def _block(rank: int, c_in: int, c_out: int) -> list[nn.Module]:
    """Conv(3, same padding)-BN-ReLU for 1 or 2 spatial axes."""
    conv, norm = (nn.Conv1d, nn.BatchNorm1d) if rank == 1 else (nn.Conv2d, nn.BatchNorm2d)
    return [conv(c_in, c_out, 3, padding=1), norm(c_out), nn.ReLU()]


class _MaxPool1d(nn.Module):
    """Max pooling by 2 of (N, C, L) maps, as 2-D pooling of a height-1 map: TensorRT pools only
    2-D and 3-D maps (onnx-tensorrt's operator list, which the tensorrt lint checks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x.unsqueeze(2), (1, 2)).squeeze(2)


def _pool(rank: int) -> nn.Module:
    """Max pooling by 2 over 1 or 2 spatial axes."""
    return _MaxPool1d() if rank == 1 else nn.MaxPool2d(2)


class ConvNet(nn.Module):
    """Conv-BN-ReLU blocks (two, pooled after each once the map is at least 4 wide) and a linear
    head, for (C, H, W) inputs and (K,) outputs. `width` scales every channel count."""

    def __init__(self, input_shape: Shape, output_shape: Shape, width: float) -> None:
        super().__init__()
        channels, height, wide = input_shape
        (outputs,) = output_shape
        c1, c2, hidden = _scaled(width, 32, 64, 128)
        layers: list[nn.Module] = []
        for c_in, c_out in ((channels, c1), (c1, c2)):
            layers += _block(2, c_in, c_out)
            if min(height, wide) >= 4:
                layers.append(nn.MaxPool2d(2))
                height, wide = height // 2, wide // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * height * wide, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvNet1d(nn.Module):
    """ConvNet for (C, L) signals: Conv1d-BN-ReLU blocks (two, pooled after each once the signal
    is at least 4 long) and a linear head to (K,) outputs. `width` scales every channel count."""

    def __init__(self, input_shape: Shape, output_shape: Shape, width: float) -> None:
        super().__init__()
        channels, length = input_shape
        (outputs,) = output_shape
        c1, c2, hidden = _scaled(width, 32, 64, 128)
        layers: list[nn.Module] = []
        for c_in, c_out in ((channels, c1), (c1, c2)):
            layers += _block(1, c_in, c_out)
            if length >= 4:
                layers.append(_pool(1))
                length //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * length, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Two hidden layers on the flattened input and a linear layer to every output value,
    reshaped to `output_shape`; `width` scales both hidden layers."""

    def __init__(self, input_shape: Shape, output_shape: Shape, width: float) -> None:
        super().__init__()
        h1, h2 = _scaled(width, 256, 128)
        layers: list[nn.Module] = [
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Linear(h2, math.prod(output_shape)),
        ]
        if len(output_shape) > 1:
            # a vector head keeps the graph it always had; only dense outputs get a Reshape
            layers.append(nn.Unflatten(1, output_shape))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Resize(nn.Module):
    """Linear resampling of (N, C, L) or (N, C, H, W) maps to a spatial size fixed at build time.

    A 1-D map goes through 2-D bilinear resampling of a height-1 map: torch.export decomposes
    1-D linear upsampling into GatherND arithmetic, while the 2-D op exports as one ONNX Resize,
    which onnxruntime's QDQ quantizer and the deployment runtimes handle as a single op.
    """

    def __init__(self, size: Shape) -> None:
        super().__init__()
        self.size = tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.size) == 1:
            return F.interpolate(x.unsqueeze(2), size=(1, *self.size), mode="bilinear", align_corners=False).squeeze(2)
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class DenseNet(nn.Module):
    """A small U-Net: (C, H, W) to (C', H', W'), or (C, L) to (C', L').

    The encoder is a Conv-BN-ReLU block per level, max-pooled between levels: two downsamplings
    when the smallest spatial axis is at least 8, one when at least 4, none below. The decoder
    upsamples each level back to the size of the one above (linear interpolation to a size fixed
    at build time, so odd sizes, which pooling floors, come back exactly), concatenates
    that level's encoder output (the skip connection) and runs a block. A 1x1 convolution maps to
    C' channels, resampled to (H', W') when that differs from the input's. `width` scales every
    channel count.
    """

    def __init__(self, input_shape: Shape, output_shape: Shape, width: float) -> None:
        super().__init__()
        channels, *spatial = input_shape
        out_channels, *out_spatial = output_shape
        rank = len(spatial)
        smallest = min(spatial)
        levels = 2 if smallest >= 8 else 1 if smallest >= 4 else 0
        widths = _scaled(width, 32, 64, 128)[: levels + 1]
        sizes = [tuple(spatial)]
        for _ in range(levels):
            sizes.append(tuple(s // 2 for s in sizes[-1]))
        self.encoder = nn.ModuleList(
            [nn.Sequential(*_block(rank, channels, widths[0]))]
            + [nn.Sequential(_pool(rank), *_block(rank, widths[i - 1], widths[i])) for i in range(1, levels + 1)]
        )
        # up[j] and decoder[j] bring level `levels - j` back to the size and width of the level above
        self.up = nn.ModuleList([_Resize(sizes[i - 1]) for i in range(levels, 0, -1)])
        self.decoder = nn.ModuleList(
            [nn.Sequential(*_block(rank, widths[i] + widths[i - 1], widths[i - 1])) for i in range(levels, 0, -1)]
        )
        conv = nn.Conv1d if rank == 1 else nn.Conv2d
        # the 1x1 conv before the final resampling: the conv mixes channels at each position and the
        # resampling mixes positions in each channel (weights summing to 1, so the bias passes), so
        # they commute, and resampling C' channels is cheaper than the decoder's, usually more
        self.head = conv(widths[0], out_channels, 1)
        self.resize = _Resize(out_spatial) if tuple(out_spatial) != tuple(spatial) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.resize(self.head(x))


FAMILIES: dict[str, Callable[[Shape, Shape, float], nn.Module]] = {
    "cnn": ConvNet,
    "cnn1d": ConvNet1d,
    "dense": DenseNet,
    "mlp": MLP,
}


def default_family(input_shape: Shape, output_shape: Shape) -> str:
    """The family that fits one sample's input and output shapes.

    Vector outputs: cnn for (C, H, W) inputs, cnn1d for (C, L), mlp otherwise. Outputs of the
    input's rank, (C', H', W') for (C, H, W) or (C', L') for (C, L): dense. Anything else: mlp.
    """
    if len(output_shape) == 1:
        return {3: "cnn", 2: "cnn1d"}.get(len(input_shape), "mlp")
    if len(output_shape) == len(input_shape) and len(input_shape) in (2, 3):
        return "dense"
    return "mlp"


def _fits(name: str, input_shape: Shape, output_shape: Shape) -> str | None:
    """Why family `name` cannot map `input_shape` to `output_shape`, or None when it can."""
    if name == "cnn" and (len(input_shape) != 3 or len(output_shape) != 1):
        return "takes (channels, height, width) inputs to a vector output"
    if name == "cnn1d" and (len(input_shape) != 2 or len(output_shape) != 1):
        return "takes (channels, length) inputs to a vector output"
    if name == "dense" and (len(input_shape) not in (2, 3) or len(output_shape) != len(input_shape)):
        return (
            "takes (channels, height, width) or (channels, length) inputs to outputs of the input's rank "
            "((channels, height, width) or (channels, length))"
        )
    return None


def build(name: str, input_shape: Shape, output_shape: Shape, width: float) -> nn.Module:
    """A member of family `name` mapping one sample of `input_shape` to one of `output_shape`
    (both without the batch axis: (K,) for a vector output, (C, H, W) or (C, L) for dense ones)."""
    input_shape, output_shape = tuple(input_shape), tuple(output_shape)
    if name not in FAMILIES:
        raise UserError(f"no student family {name!r}: use one of {', '.join(sorted(FAMILIES))}")
    for what, shape in (("input", input_shape), ("output", output_shape)):
        if not shape or any(d < 1 for d in shape):
            raise UserError(f"the {name} family got the {what} shape {shape}: give one sample's shape, every size >= 1")
    why = _fits(name, input_shape, output_shape)
    if why is not None:
        fix = default_family(input_shape, output_shape)
        raise UserError(f"the {name} family {why}, not {input_shape} -> {output_shape}: use family {fix}")
    return FAMILIES[name](input_shape, output_shape, width)
