"""Teachers with several outputs (a detector's raw heads: box regression and class logits): each
output is distilled with its own task and weight, and exported under its own name.

Inside the run a model's outputs travel as one array, each output flattened per sample and joined
along axis 1 in the model's order (`join`); `Several` splits that array back into the outputs
(`Head`s) for every loss, score and column. onnxruntime's outputs are joined the same way
(`join_arrays`), so parity, int8 tolerance and the deployment choice see every output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from edgedistill.errors import UserError
from edgedistill.tasks.base import ArrayTask, Reference


def join(out: object) -> torch.Tensor:
    """A model's output as one tensor: a tensor as it is; a tuple, list or dict of tensors (in
    their order) flattened per sample and concatenated along axis 1."""
    if isinstance(out, torch.Tensor):
        return out
    parts = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (tuple, list)) else None
    if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
        raise UserError(f"the model returns {type(out).__name__}: return a tensor, or a tuple or dict of tensors")
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p.reshape(len(p), -1) for p in parts], dim=1)


def join_arrays(outs: list[np.ndarray]) -> np.ndarray:
    """onnxruntime's outputs of one run as one array, as `join` joins a module's."""
    if len(outs) == 1:
        return outs[0]
    return np.concatenate([o.reshape(len(o), -1) for o in outs], axis=1)


@dataclass(frozen=True)
class Head:
    """One output of a model: its name and its shape per sample."""

    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def heads_of(out: object) -> tuple[Head, ...]:
    """The outputs of one forward pass, named by a dict's keys or as output_0, output_1, ...; one
    tensor is the single head "output"."""
    if isinstance(out, torch.Tensor):
        return (Head("output", tuple(out.shape[1:])),)
    if isinstance(out, dict):
        return tuple(Head(str(k), tuple(v.shape[1:])) for k, v in out.items())
    if isinstance(out, (tuple, list)):
        return tuple(Head(f"output_{i}", tuple(v.shape[1:])) for i, v in enumerate(out))
    raise UserError(f"the teacher returns {type(out).__name__}: return a tensor, or a tuple or dict of tensors")


@dataclass(frozen=True)
class Part:
    """One output as the run learns it: the head, its task and its weight in the loss and score."""

    head: Head
    task: ArrayTask
    weight: float


@dataclass(frozen=True)
class Several:
    """Several outputs, each distilled by its own task from the teacher's same output. The score is
    the weight-averaged score of the outputs; the columns are each output's own, prefixed by its
    name. Labels are not split per output: students learn from the teacher alone."""

    parts: tuple[Part, ...]
    label_dtype: torch.dtype = torch.float32

    @property
    def name(self) -> str:
        return "several outputs"

    @property
    def quality(self) -> str:
        each = ", ".join(f"{p.head.name} {p.task.name} ×{p.weight:g}" for p in self.parts)
        return f"weighted mean of each output's score against the teacher ({each})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.head.name for p in self.parts)

    def split(self, joined: np.ndarray | torch.Tensor) -> list:
        """Each output of a joined array, in its own shape."""
        out, start = [], 0
        for p in self.parts:
            out.append(joined[:, start : start + p.head.size].reshape(len(joined), *p.head.shape))
            start += p.head.size
        return out

    def score(self, out: np.ndarray, ref: Reference) -> float:
        """The weighted mean of every output's score against the teacher's same output."""
        scores = [p.task.score(o, Reference(t)) for p, o, t in zip(self.parts, self.split(out), self.split(ref.teacher))]
        return float(np.average(scores, weights=[p.weight for p in self.parts]))

    def metrics(self, out: np.ndarray, ref: Reference) -> dict[str, float]:
        """The score, then each output's columns under its name."""
        metrics = {"score": self.score(out, ref)}
        for p, o, t in zip(self.parts, self.split(out), self.split(ref.teacher)):
            metrics |= {f"{p.head.name} {k}": v for k, v in p.task.metrics(o, Reference(t)).items()}
        return metrics

    def weakness(self, metrics: dict[str, float], ref: Reference) -> str | None:
        """Weak when every output is: one output that teaches is a lesson."""
        if ref.teacher is None:
            return None
        said = [p.task.weakness({}, Reference(t)) for p, t in zip(self.parts, self.split(ref.teacher))]
        return None if any(s is None for s in said) else "; ".join(f"{p.head.name}: {s}" for p, s in zip(self.parts, said))

    def distill(self, out: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        """The weighted sum of every output's own loss to the teacher's, per sample."""
        losses = [p.weight * p.task.distill(o, t, temperature) for p, o, t in zip(self.parts, self.split(out), self.split(teacher))]
        return torch.stack(losses).sum(dim=0)

    def supervised(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Never called: a teacher of several outputs teaches without labels (`check` refuses them)."""
        raise UserError("labels of a teacher with several outputs are not split per output: leave y out")

    def check(self, out_shape: tuple[int, ...], labels: np.ndarray | None) -> str | None:
        """The joined outputs of every head, and no labels."""
        if labels is not None:
            return (
                f"the teacher has {len(self.parts)} outputs ({', '.join(self.names)}) and one set of labels, which "
                "cannot be split between them: leave y out (or set data.labels = false), students learn from the teacher"
            )
        size = sum(p.head.size for p in self.parts)
        return None if out_shape == (size,) else f"the teacher's outputs join to {out_shape} per sample, not ({size},)"
