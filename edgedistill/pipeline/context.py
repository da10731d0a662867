"""What every stage of one run reads, built once when the run starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgedistill.config import RunConfig
from edgedistill.data.base import EpochProgress, FitOrder, Inputs, Parts, Prepared, Trained
from edgedistill.distributed import World
from edgedistill.progress import Progress
from edgedistill.rundir import RunDir
from edgedistill.targets.latency import LatencyService
from edgedistill.targets.profile import Target


@dataclass(frozen=True)
class Trainer:
    """Training on every rank: in a distributed world, rank 0 first sends the others the order."""

    entry: Inputs
    world: World

    def fit(self, parts: Parts, order: FitOrder, progress: EpochProgress | None) -> Trained:
        """Train `order` on `parts` here, and on the other ranks' own copy of them under torchrun."""
        if self.world.distributed:
            self.world.send(order)
        return self.entry.fit(parts, order, progress, self.world)


@dataclass(frozen=True)
class Context:
    """The run's config, run directory, inputs entry and what it prepared, the targets and the
    latency service that reaches or predicts them, progress and the trainer."""

    cfg: RunConfig
    rd: RunDir
    entry: Inputs
    prep: Prepared
    targets: tuple[Target, ...]
    latency: LatencyService
    progress: Progress
    trainer: Trainer

    def folder(self, tier: str) -> str:
        """A tier's folder in the run directory."""
        return f"students/{tier}"

    def onnx(self, folder: str, stem: str = "model") -> Path:
        """Where a model of `folder` is exported to."""
        return self.rd.path(self.entry.onnx_name(folder, stem))
