"""Data-free distillation inputs: DeepInversion (Yin et al., CVPR 2020).

Inputs are optimised, from noise, until the teacher's BatchNorm layers see the statistics they
saw in training (each layer's running mean and variance), the teacher classifies them as a chosen
class, and an image prior (total variation, L2) keeps them smooth and near the data's mean. The
teacher's outputs on them then train a student without a single real training sample. Beyond the
paper, the batch's per-channel mean and variance are held to the input prior's, as if a BatchNorm
sat at the input.

A teacher without BatchNorm gives no layer statistics: then its class outputs, those input
statistics and the prior alone shape the inputs. Measured (benchmarks/RESULTS.md, figure 9: held-out
accuracy, 3 seeds): digits CNN students (width 0.25 / 0.125) distilled on DeepInversion inputs alone
reach 96.1 % / 92.5 %, against 98.4 % / 97.9 % from the real training split and 69.7 % / 59.3 % from
the prior's noise; without the BatchNorm terms the same teacher gave about 94 % at width 0.25
(tuning, 2 seeds). On the noisy-20 MLP teacher (no BatchNorm) the input statistics are what make it
work: cross-entropy alone drove the inputs off the data, to students worse than noise (49 % against
72 %, tuning); with them the student reaches 87.7 %, against 91.3 % from real data and 79.7 % from
noise. Its BatchNorm variant does worse (83.9 %): on an MLP the hidden layers' statistics added nothing.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from edgedistill.compress.budget import measure
from edgedistill.errors import UserError
from edgedistill.finite import nonfinite
from edgedistill.teachers import OnnxTeacher
from edgedistill.threads import choose, torch_threads

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ADAM_BETAS = (0.5, 0.9)  # DeepInversion's: a short memory suits inputs that the jitter keeps moving


class SynthesisConfig(BaseModel):
    """How synthetic training inputs are made from the teacher alone (DeepInversion)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int = Field(..., ge=1, description="Synthetic training inputs to make.")
    real: int | None = Field(
        None, ge=0, description="Real training samples kept beside the synthetic ones; None = all of them, 0 = none."
    )
    steps: int = Field(200, ge=1, description="Optimisation steps per batch of synthetic inputs.")
    batch_size: int = Field(256, ge=1, description="Inputs optimised together; the BatchNorm statistics are matched per batch.")
    lr: float = Field(0.1, gt=0, description="Adam learning rate on the inputs (cosine-annealed), in units of the prior's std.")
    bn_weight: float = Field(
        10.0, ge=0,
        description="Weight of the statistics loss, summed over the teacher's BatchNorm layers and the input "
        "(held to the prior's mean and std); tuned on small networks: a deep teacher's sum is larger and may want less.",
    )
    tv_weight: float = Field(1.0, ge=0, description="Weight of the total-variation prior (images and 1-D signals).")
    l2_weight: float = Field(0.01, ge=0, description="Weight of the L2 prior, which pulls inputs towards the prior's mean.")


@dataclass(frozen=True)
class InputPrior:
    """What is known of the inputs without training data: per-channel (axis 1) mean, std, min and max."""

    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> InputPrior:
        """The prior of samples `x` (N, C, ...), e.g. of the validation split."""
        axes = (0, *range(2, x.ndim))
        stats = (x.mean(axes), x.std(axes), x.min(axes), x.max(axes))
        return cls(*(np.asarray(s, dtype=np.float32) for s in stats))

    def tensors(self, ndim: int) -> tuple[torch.Tensor, ...]:
        """mean, std (a zero std taken as 1), low and high, shaped to broadcast over (N, C, ...)."""
        shape = (1, -1, *([1] * (ndim - 2)))
        std = np.where(self.std > 0, self.std, 1.0)
        arrays = (self.mean, std, self.low, self.high)
        return tuple(torch.from_numpy(np.asarray(a, dtype=np.float32)).reshape(shape) for a in arrays)


@dataclass(frozen=True)
class Synthetic:
    """Synthetic training inputs, the class each was optimised towards, and how they were made."""

    x: np.ndarray  # (N, *input_shape) float32
    targets: np.ndarray  # (N,) int64
    how: str  # one sentence for the report: what the inputs were made to match
    batchnorm_layers: int  # teacher BatchNorm layers whose statistics were matched
    agreement: float  # share of inputs the teacher classifies as their target
    seconds: float


def synthesize(
    teacher: nn.Module, input_shape: tuple[int, ...], num_classes: int, cfg: SynthesisConfig,
    prior: InputPrior, seed: int, progress: Callable[[int, int], None] | None = None,
) -> Synthetic:
    """`cfg.samples` inputs of `input_shape` optimised through `teacher` (DeepInversion), seeded.

    Targets are balanced over the classes. The teacher is run in eval mode with its parameters
    frozen, and left as it was. A teacher without BatchNorm falls back on its outputs, the input
    statistics and the prior (`how` says which was used). `progress(done, total)` is called
    after each batch. Non-finite inputs or outputs raise UserError.
    """
    _check(teacher, input_shape, prior)
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    targets = _targets(cfg.samples, num_classes, seed)
    sizes = _batch_sizes(cfg.samples, cfg.batch_size)
    parts, done = [], 0
    # Threads by fit's rule on one step's work: repeatable on a machine, and one thread for the small
    # steps that every core slows down on a shared machine (edgedistill.threads).
    threads = choose(0, measure(teacher, input_shape).macs * max(sizes))
    with _frozen(teacher), torch_threads(threads.threads):
        with _BatchNormTaps(teacher) as taps:
            for i, size in enumerate(sizes):
                batch = torch.from_numpy(targets[done : done + size])
                parts.append(_optimise(teacher, taps, batch, input_shape, prior, cfg, gen))
                done += size
                if progress is not None:
                    progress(i + 1, len(sizes))
        with torch.no_grad():
            logits = np.concatenate([teacher(torch.from_numpy(p)).float().numpy() for p in parts])
    x = np.concatenate(parts)
    layers = len(taps.layers)
    if nonfinite(x) or nonfinite(logits):
        raise UserError(
            f"data.synthetic: the synthetic inputs or the teacher's outputs on them became NaN or Inf: "
            f"lower data.synthetic.lr (now {cfg.lr:g}), e.g. to {cfg.lr / 10:g}"
        )
    agreement = float((logits.argmax(axis=1) == targets).mean())
    return Synthetic(x, targets, _how(layers, len(input_shape)), layers, agreement, time.perf_counter() - started)


def _check(teacher: object, input_shape: tuple[int, ...], prior: InputPrior) -> None:
    """Refuse, in one line, a teacher that gradients cannot flow through and a prior of the wrong shape."""
    if isinstance(teacher, OnnxTeacher):
        raise UserError(
            "data.synthetic needs a PyTorch teacher (factory or .pt2) to optimise inputs through; an ONNX teacher "
            "gives no gradients: export the teacher with torch.export (.pt2) or give training data"
        )
    if not isinstance(teacher, nn.Module) or not any(True for _ in teacher.parameters()):
        raise UserError(
            "data.synthetic needs a PyTorch teacher with weights (factory or .pt2) to optimise inputs through; "
            f"this teacher ({type(teacher).__name__}) has none: give training data instead"
        )
    channels = input_shape[0] if input_shape else 0
    if any(len(a) != channels for a in (prior.mean, prior.std, prior.low, prior.high)):
        raise UserError(
            f"data.synthetic: the input prior has {len(prior.mean)} channels, the inputs {channels} (axis 1 of {input_shape}): "
            "take the prior from samples of the teacher's inputs"
        )


def _targets(samples: int, num_classes: int, seed: int) -> np.ndarray:
    """Classes round-robin over a seeded class order: every batch holds the classes in equal shares."""
    order = np.random.default_rng(seed).permutation(num_classes)
    return order[np.arange(samples) % num_classes].astype(np.int64)


def _batch_sizes(samples: int, batch_size: int) -> list[int]:
    """Near-equal batches of at most `batch_size`: a small last batch would match poor statistics."""
    batches = math.ceil(samples / batch_size)
    return [len(b) for b in np.array_split(np.arange(samples), batches)]


def _optimise(
    teacher: nn.Module, taps: _BatchNormTaps, targets: torch.Tensor, input_shape: tuple[int, ...],
    prior: InputPrior, cfg: SynthesisConfig, gen: torch.Generator,
) -> np.ndarray:
    """One batch: inputs from the prior's noise, optimised by Adam, clamped to the prior's range."""
    mean, std, low, high = prior.tensors(len(input_shape) + 1)
    # Optimised in units of the prior's std, so one learning rate suits pixels in [0, 1] and in [0, 255].
    lo, hi = (low - mean) / std, (high - mean) / std
    z = torch.randn((len(targets), *input_shape), generator=gen)
    z = torch.maximum(torch.minimum(z, hi), lo).requires_grad_()
    optimizer = torch.optim.Adam([z], lr=cfg.lr, betas=ADAM_BETAS)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.steps)
    spatial = tuple(range(2, z.dim()))
    for _ in range(cfg.steps):
        seen = _jitter(z, spatial, gen) if len(spatial) >= 2 else z
        logits = teacher(seen * std + mean)
        loss = _loss(logits, targets, taps.loss() + _input_statistics(z, spatial), z, spatial, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, hi), lo))
    return (z.detach() * std + mean).numpy().astype(np.float32)


def _jitter(z: torch.Tensor, spatial: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """DeepInversion's random shift (with wrap-around), up to 1/8 of each side: the teacher must
    recognise the input wherever it lies, which keeps the optimisation off pixel-exact adversarial patterns."""
    most = [max(1, z.shape[d] // 8) for d in spatial]
    shifts = [int(torch.randint(-m, m + 1, (1,), generator=gen)) for m in most]
    return torch.roll(z, shifts, spatial)


def _input_statistics(z: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """The batch's per-channel mean and variance against the prior's, as if a BatchNorm sat at the
    input: the one statistic every teacher has, and the only one a teacher without BatchNorm gives."""
    dims = [0, *spatial]
    return torch.linalg.vector_norm(z.mean(dims)) + torch.linalg.vector_norm(z.var(dims, unbiased=False) - 1)


def _loss(
    logits: torch.Tensor, targets: torch.Tensor, bn: torch.Tensor, z: torch.Tensor, spatial: tuple[int, ...], cfg: SynthesisConfig
) -> torch.Tensor:
    """Cross-entropy to the targets + statistics (BatchNorm and input) + priors (TV over the spatial axes, L2)."""
    loss = F.cross_entropy(logits, targets) + cfg.bn_weight * bn + cfg.l2_weight * z.pow(2).mean()
    for d in spatial:
        loss = loss + cfg.tv_weight * torch.diff(z, dim=d).pow(2).mean()
    return loss


def _how(layers: int, input_dims: int) -> str:
    """One sentence for the report: what the inputs were made to match."""
    priors = {1: "an L2 prior", 2: "a signal prior (1-D total variation, L2)"}
    prior = priors.get(input_dims, "an image prior (total variation, L2)")
    if layers:
        return (
            f"inputs optimised from noise to match the teacher's BatchNorm running statistics ({layers} layers), "
            f"its class outputs, the input prior's per-channel mean and std, and {prior} (DeepInversion)"
        )
    return (
        "the teacher has no BatchNorm layers (nn.BatchNorm1d/2d/3d modules), so only its class outputs, the input prior's "
        f"per-channel mean and std and {prior} shaped the inputs, with no layer statistics to match"
    )


@contextlib.contextmanager
def _frozen(teacher: nn.Module) -> Iterator[None]:
    """The teacher in eval mode with its parameters frozen; each module's mode and flag restored after."""
    modes = [(m, m.training) for m in teacher.modules()]
    flags = [(p, p.requires_grad) for p in teacher.parameters()]
    teacher.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


class _BatchNormTaps:
    """Forward hooks on the teacher's BatchNorm layers: the distance of each batch's per-channel
    input statistics from the layer's running ones, ||mean - running_mean|| + ||var - running_var||."""

    def __init__(self, teacher: nn.Module) -> None:
        self.layers = [m for m in teacher.modules() if isinstance(m, BATCHNORMS) and m.running_mean is not None]
        self.terms: list[torch.Tensor] = []
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _BatchNormTaps:
        self.handles = [m.register_forward_hook(self._hook) for m in self.layers]
        return self

    def __exit__(self, *_exc: object) -> None:
        for h in self.handles:
            h.remove()

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        x = inputs[0]
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        norm = torch.linalg.vector_norm
        self.terms.append(norm(mean - module.running_mean) + norm(var - module.running_var))

    def loss(self) -> torch.Tensor:
        """The summed distance over the layers since the last call (zero without BatchNorm)."""
        total = torch.stack(self.terms).sum() if self.terms else torch.zeros(())
        self.terms = []
        return total
