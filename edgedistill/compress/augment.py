"""Consistent augmentation: one augmented view of a batch, fed to the teacher and the student alike.

"Patient and consistent" distillation (Beyer et al., CVPR 2022) makes the student match the
teacher's function on the *same* augmented input (function matching), mixup and cutmix included,
rather than on cached outputs of un-augmented inputs. `augment` makes that view from a batch and
says how labels mix; the training loop runs the teacher on it online.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from edgedistill.errors import UserError


class AugmentConfig(BaseModel):
    """`[distill.augment]`: what each training batch goes through before the teacher and the
    student see it. Everything is off by default: the teacher's outputs are then computed once
    and cached, and training is as fast as it gets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flip: bool = Field(False, description="Mirror half the samples left to right (images (N, C, H, W) only).")
    shift: int = Field(
        0, ge=0, le=64,
        description="Translate each sample by up to this many pixels (images) or steps (signals (N, C, L)), zero-filled.",
    )
    noise: float = Field(0.0, ge=0, le=10, description="Add Gaussian noise of this many times the batch's standard deviation.")
    mask: float = Field(
        0.0, ge=0, lt=1,
        description="Zero one random span of up to this share of each signal's length (or an image's width), per sample.",
    )
    mixup: float = Field(
        0.0, ge=0, le=10,
        description="Mix pairs of samples with a Beta(a, a) weight (mixup); a, e.g. 0.2 to 1; 0 = off. Labels mix alike.",
    )
    cutmix: float = Field(
        0.0, ge=0, le=10,
        description="Paste a box of one sample into another, its area drawn from Beta(a, a) (images); 0 = off. "
        "With mixup too, each batch takes one of the two.",
    )

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return self.flip or self.shift > 0 or self.noise > 0 or self.mask > 0 or self.mixup > 0 or self.cutmix > 0

    def describe(self) -> str:
        """The augmentations on, for the report: "flip, shift 1, mixup 0.2"."""
        parts = ["flip"] if self.flip else []
        for name in ("shift", "noise", "mask", "mixup", "cutmix"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name} {value:g}")
        return ", ".join(parts) or "none"


# What an augmentation needs of one sample's shape (without the batch axis): how many axes.
_NEEDS = {"flip": (3,), "cutmix": (3,), "shift": (2, 3), "mask": (2, 3)}
_SHAPES = {2: "signals (N, C, L)", 3: "images (N, C, H, W)"}


def check_shape(cfg: AugmentConfig, sample_shape: tuple[int, ...], where: str = "distill") -> None:
    """Refuse, in one line, an augmentation the inputs have no axis for (a flip of a flat vector)."""
    for name, ranks in _NEEDS.items():
        if getattr(cfg, name) and len(sample_shape) not in ranks:
            wants = " or ".join(_SHAPES[r] for r in ranks)
            raise UserError(
                f"{where}.augment.{name} needs {wants}; these inputs are {tuple(sample_shape)} per sample: "
                f"drop {name} (noise and mixup fit every input)"
            )


@dataclass(frozen=True)
class View:
    """One augmented batch. Its label loss is `lam * L(y) + (1 - lam) * L(y[partner])` per sample;
    `partner` is None when no samples were mixed."""

    x: torch.Tensor
    partner: torch.Tensor | None
    lam: torch.Tensor | None


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> View:
    """The batch `x` through the augmentations of `cfg`, drawn from `gen` (so a seed repeats a run)."""
    if cfg.flip:
        x = torch.where(_coin(len(x), gen).view(-1, 1, 1, 1), x.flip(-1), x)
    if cfg.shift:
        x = _shift(x, cfg.shift, gen)
    if cfg.mask:
        x = _mask(x, cfg.mask, gen)
    if cfg.noise:
        x = x + cfg.noise * x.std() * torch.randn(x.shape, generator=gen)
    use_cutmix = cfg.cutmix > 0 and (cfg.mixup == 0 or bool(_coin(1, gen)))
    if use_cutmix:
        return _cutmix(x, cfg.cutmix, gen)
    if cfg.mixup:
        return _mixup(x, cfg.mixup, gen)
    return View(x, None, None)


def _coin(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < 0.5


def _shift(x: torch.Tensor, most: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each sample along its last (and for images its second-to-last) axis, zero-filled."""
    spatial = x.shape[2:]
    pad = [most] * (2 * len(spatial))
    padded = F.pad(x, pad)
    offsets = torch.randint(0, 2 * most + 1, (len(x), len(spatial)), generator=gen)
    out = torch.empty_like(x)
    for i, off in enumerate(offsets.tolist()):
        window = tuple(slice(o, o + s) for o, s in zip(off, spatial))
        out[i] = padded[(i, slice(None), *window)]
    return out


def _mask(x: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """Zero one span of the last axis per sample, up to `share` of its length (SpecAugment-style)."""
    length = x.shape[-1]
    widths = (torch.rand(len(x), generator=gen) * share * length).long()
    starts = (torch.rand(len(x), generator=gen) * (length - widths + 1)).long().clamp(max=length - 1)
    steps = torch.arange(length)
    keep = (steps < starts[:, None]) | (steps >= (starts + widths)[:, None])
    return x * keep.view(len(x), *([1] * (x.dim() - 2)), length)


def _beta(a: float, gen: torch.Generator) -> float:
    # torch's Beta distribution takes no generator: numpy's, seeded from `gen`, keeps runs repeatable.
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(a, a))


def _mixup(x: torch.Tensor, a: float, gen: torch.Generator) -> View:
    lam = torch.full((len(x),), _beta(a, gen))
    partner = torch.randperm(len(x), generator=gen)
    shape = (len(x), *([1] * (x.dim() - 1)))
    return View(lam.view(shape) * x + (1 - lam.view(shape)) * x[partner], partner, lam)


def _cutmix(x: torch.Tensor, a: float, gen: torch.Generator) -> View:
    """One box per batch, of area share 1 - lam, from a partner sample; lam is the area kept."""
    h, w = x.shape[-2:]
    lam = _beta(a, gen)
    bh, bw = round(h * (1 - lam) ** 0.5), round(w * (1 - lam) ** 0.5)
    top = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
    partner = torch.randperm(len(x), generator=gen)
    out = x.clone()
    out[..., top : top + bh, left : left + bw] = x[partner][..., top : top + bh, left : left + bw]
    kept = 1 - (bh * bw) / (h * w)
    return View(out, partner, torch.full((len(x),), kept))
