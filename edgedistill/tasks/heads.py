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


def tensors_of(out: object) -> list[torch.Tensor]:
    """A model's outputs in their order: a tensor alone, or a tuple, list or dict of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    parts = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (tuple, list)) else None
    if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
        raise UserError(f"the model returns {type(out).__name__}: return a tensor, or a tuple or dict of tensors")
    return parts


def join(out: object) -> torch.Tensor:
    """A model's output as one tensor: a tensor as it is; a tuple, list or dict of tensors (in
    their order) flattened per sample and concatenated along axis 1."""
    if isinstance(out, torch.Tensor):
        return out
    parts = tensors_of(out)
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
class Labelled:
    """Where one output's labels lie in the joined label rows, their shape per sample and whether
    they are integers (class indices, stored exactly as float32 there)."""

    start: int
    stop: int
    shape: tuple[int, ...]
    integer: bool


@dataclass(frozen=True)
class Part:
    """One output as the run learns it: the head, its task, its weight in the loss and score, and
    its labels where the data has them."""

    head: Head
    task: ArrayTask
    weight: float
    labels: Labelled | None = None

    def labels_of(self, joined: np.ndarray | torch.Tensor | None) -> np.ndarray | torch.Tensor | None:
        """This output's labels out of joined label rows, in their own shape and type."""
        if isinstance(joined, torch.Tensor) and self.labels is not None:
            return joined[:, self.labels.start : self.labels.stop].reshape(len(joined), *self.labels.shape).to(self.task.label_dtype)
        return labels_in(self.labels, joined)


def labels_in(where: Labelled | None, joined: np.ndarray | None) -> np.ndarray | None:
    """One output's labels out of joined label rows (None where it has none), integers as int64."""
    if joined is None or where is None:
        return None
    part = joined[:, where.start : where.stop].reshape(len(joined), *where.shape)
    return part.astype(np.int64) if where.integer else part


@dataclass(frozen=True)
class Several:
    """Several outputs, each distilled by its own task from the teacher's same output and, where the
    data labels it (`y_<output>`), trained on its labels. The score is the weight-averaged score of
    the outputs (each on its labels, or against the teacher); the columns are each output's own,
    prefixed by its name."""

    parts: tuple[Part, ...]
    label_dtype: torch.dtype = torch.float32
    # Unused: each output softens at its own task's temperature unless distill.temperature is set.
    temperature: float = 1.0

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

    def _references(self, ref: Reference) -> list[Reference]:
        """Each output's own reference: the teacher's same output and its labels."""
        teachers = self.split(ref.teacher) if ref.teacher is not None else [None] * len(self.parts)
        return [Reference(t, p.labels_of(ref.labels)) for p, t in zip(self.parts, teachers)]

    def score(self, out: np.ndarray, ref: Reference) -> float:
        """The weighted mean of every output's score (on its labels, or against the teacher)."""
        scores = [p.task.score(o, r) for p, o, r in zip(self.parts, self.split(out), self._references(ref))]
        return float(np.average(scores, weights=[p.weight for p in self.parts]))

    def metrics(self, out: np.ndarray, ref: Reference) -> dict[str, float]:
        """The score, then each output's columns under its name."""
        metrics = {"score": self.score(out, ref)}
        for p, o, r in zip(self.parts, self.split(out), self._references(ref)):
            metrics |= {f"{p.head.name} {k}": v for k, v in p.task.metrics(o, r).items()}
        return metrics

    def weakness(self, metrics: dict[str, float], ref: Reference) -> str | None:
        """Weak when every output is: one output that teaches is a lesson."""
        said = [
            p.task.weakness({k.removeprefix(f"{p.head.name} "): v for k, v in metrics.items() if k.startswith(f"{p.head.name} ")}, r)
            for p, r in zip(self.parts, self._references(ref))
        ]
        return None if any(s is None for s in said) else "; ".join(f"{p.head.name}: {s}" for p, s in zip(self.parts, said))

    def distill(self, out: torch.Tensor, teacher: torch.Tensor, temperature: float | None) -> torch.Tensor:
        """The weighted sum of every output's own loss to the teacher's, per sample."""
        losses = [p.weight * p.task.distill(o, t, temperature) for p, o, t in zip(self.parts, self.split(out), self.split(teacher))]
        return torch.stack(losses).sum(dim=0)

    def supervised(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The weighted sum of every labelled output's own label loss, per sample (an output
        without labels learns from the teacher alone)."""
        losses = [
            p.weight * p.task.supervised(o, p.labels_of(labels)) for p, o in zip(self.parts, self.split(out)) if p.labels is not None
        ]
        return torch.stack(losses).sum(dim=0) if losses else torch.zeros(len(out))

    def check(self, out_shape: tuple[int, ...], labels: np.ndarray | None) -> str | None:
        """The joined outputs of every head; each labelled output's labels of its task."""
        size = sum(p.head.size for p in self.parts)
        if out_shape != (size,):
            return f"the teacher's outputs join to {out_shape} per sample, not ({size},)"
        if labels is not None and not any(p.labels is not None for p in self.parts):
            return (
                f"the teacher has {len(self.parts)} outputs ({', '.join(self.names)}) and one set of labels, which "
                "cannot be split between them: save each output's labels as y_<output> (numpy.savez(path, x=x, "
                "y_boxes=..., y_scores=...)), or leave y out"
            )
        for p in self.parts:
            problem = p.task.check(p.head.shape, p.labels_of(labels))
            if problem is not None:
                return f"output {p.head.name}: {problem}"
        return None
