"""What an inputs entry provides: the run's data, split and fed to models, and everything about a
model that depends on what its samples are (running it, training it, exporting it, keeping it).

Two entries today: arrays (`data.arrays`: images, `.npz`, digits; PyTorch modules) and text
(`data.text`: token ids of a Hugging Face tokenizer; Hugging Face models). The run calls these
methods and never asks which entry it has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from edgedistill.compress.budget import Footprint
from edgedistill.compress.distill import DistillConfig, TeacherOutputs
from edgedistill.data.text import FixedLength
from edgedistill.distributed import World
from edgedistill.export.parity import Parity
from edgedistill.tasks import Reference, Task
from edgedistill.threads import ThreadChoice

if TYPE_CHECKING:
    from edgedistill.config import ExportConfig, RunConfig, TierConfig
    from edgedistill.progress import Progress
    from edgedistill.rundir import RunDir

# What onnxruntime is fed: one array (a single-input graph), or arrays by input name.
Feed = np.ndarray | Mapping[str, np.ndarray]
# Progress of training: (epoch, of epochs, validation score).
EpochProgress = Callable[[int, int, float], None]


class Part(Protocol):
    """One split: its samples and, where the data has them, labels."""

    @property
    def labels(self) -> np.ndarray | None: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Parts:
    """Train, validation and calibration parts of the run's data."""

    train: Part
    val: Part
    calib: Part


@dataclass(frozen=True)
class TeacherSide:
    """The teacher as the run uses it: the model (None where it cannot run on new inputs), its
    stage key and size (None where unknown), and its outputs: on the training split (cached),
    and the validation reference students are judged against."""

    model: nn.Module | None
    key: str
    footprint: Footprint | None
    outputs: TeacherOutputs
    reference: Reference
    outputs_key: str
    info: dict


@dataclass(frozen=True)
class Prepared:
    """The data and teacher of one run, as its inputs entry made them."""

    parts: Parts
    task: Task
    teacher: TeacherSide
    data_key: str
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    # The report's "data" section.
    report: dict
    # Lengths of the dynamic sequence axis latencies are measured at (text); () for fixed shapes.
    seq_lens: tuple[int, ...] = ()
    # What exports and saved students carry beside the model (a tokenizer), or None.
    companion: Any = field(default=None, compare=False)
    # The names of the model's outputs, as exported graphs name them.
    output_names: tuple[str, ...] = ("output",)
    # How named feeds are padded to `input_shape` for files made at fixed shapes (text); None for arrays.
    fixed: FixedLength | None = None


@dataclass(frozen=True)
class Trained:
    """A trained copy of a student with its best validation weights, and how it got there."""

    model: nn.Module
    best_epoch: int
    epochs_run: int
    val_score: float
    metric: str
    threads: ThreadChoice
    # What the entry says of the trained model for the report (a transformer's depth and width).
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Exported:
    """A model's ONNX file, checked against the model: the run's fp32 artifact."""

    path: Path
    inputs: tuple[str, ...]
    parity: Parity


@dataclass(frozen=True)
class Start:
    """The model a tier's search starts from, and what was done to it first (for the report)."""

    model: nn.Module | None
    details: dict


@dataclass(frozen=True)
class FitOrder:
    """One training job, as rank 0 sends it to every rank under torchrun."""

    model: nn.Module
    cfg: DistillConfig
    seed: int
    outputs: TeacherOutputs | None
    reference: Reference | None
    # The teacher as a model, run on augmented batches when distill.augment is on (None: cached outputs only).
    teacher: nn.Module | None = None
    # The run's task, whose loss and score train the model (None: the entry's own, where it has one).
    task: Task | None = None
    # The model as given competes as epoch 0 and is kept where no epoch scores better: QAT's
    # calibrated start, which fine-tuning at a low rate can make worse before it makes it better.
    start_competes: bool = False


# Training as the run offers it to an entry: on these parts, this order (on every rank, under torchrun).
Fit = Callable[[Parts, FitOrder, EpochProgress], Trained]


class Inputs(Protocol):
    """One kind of input, and what the run does with models of it."""

    name: str
    # Why its students cannot train with int8 in the loop (quantize.qat); None where they can.
    qat_refused: str | None

    def prepare(self, cfg: RunConfig, rd: RunDir, progress: Progress, fit: Fit) -> Prepared:
        """Load and split the data, load (or train) the teacher and have its outputs, cached."""
        ...

    def parts(self, cfg: RunConfig) -> Parts:
        """The splits alone (the other ranks of a torchrun train on them)."""
        ...

    def fit(self, parts: Parts, order: FitOrder, progress: EpochProgress | None, world: World) -> Trained:
        """Distil (or train) a copy of `order.model` on the training part."""
        ...

    def predict(self, model: nn.Module, part: Part) -> np.ndarray:
        """The model's outputs on a part, batched, in eval mode."""
        ...

    def feed(self, part: Part, names: Sequence[str], count: int | None = None) -> Feed:
        """onnxruntime's feed of a part (its first `count` samples) for graph inputs `names`."""
        ...

    def student(self, prep: Prepared, cfg: RunConfig, tier: TierConfig, weights: bool) -> BaseModel:
        """The tier's generator: its own, or this entry's default; one line where it cannot serve."""
        ...

    def start(self, prep: Prepared, teacher: nn.Module | None, spec: BaseModel) -> Start:
        """The model a tier's search starts from."""
        ...

    def onnx_name(self, folder: str, stem: str) -> str:
        """The run-relative path of a model's ONNX file in `folder` (`stem`: teacher or model)."""
        ...

    def export(self, prep: Prepared, model: nn.Module, dst: Path, cfg: ExportConfig) -> Exported:
        """The model as ONNX at `dst` (a file, or a folder with its companion), checked."""
        ...

    def save(self, prep: Prepared, model: nn.Module, rd: RunDir, folder: str) -> Path:
        """Keep a trained student in the run directory; returns what was written."""
        ...

    def load(self, rd: RunDir, folder: str) -> nn.Module:
        """A student kept by `save`."""
        ...
