"""Distillation of transformer students on token ids: MSE and cosine on the pooled embedding for
sentence encoders, KD on logits for classifiers. The teacher's outputs are computed once
(`outputs`) and reused by every student and epoch, as in `compress.distill`.

Batches hold sentences of similar length and are cut to their longest sentence before the forward
pass: padding costs time, not accuracy, and most sentences are far shorter than the tokenizer's
maximum length.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.compress.budget import measure
from edgedistill.compress.distill import DistillConfig, ProgressFn, kd_loss
from edgedistill.distributed import World
from edgedistill.finite import check_epoch
from edgedistill.threads import ThreadChoice, choose, torch_threads
from edgedistill.tasks.similarity import mean_cosine
from edgedistill.hf.model import HFModel

_EVAL_BATCH = 64
# Training batches are drawn from pools of this many batches, sorted by length within a pool: a
# batch's sentences are of similar length, yet the pools are shuffled, so order stays random.
_POOL_BATCHES = 16


@dataclass(frozen=True)
class HFTrainResult:
    """A trained copy of the student with its best validation weights, and how it got there."""

    model: HFModel
    best_epoch: int
    epochs_run: int
    val_score: float
    metric: str
    threads: ThreadChoice


def outputs(model: HFModel, ids: np.ndarray, batch_size: int = _EVAL_BATCH) -> np.ndarray:
    """The model's embeddings or logits for token ids (N, T), batched, in eval mode, as float32."""
    was_training = model.training
    model.eval()
    # Shortest first, so each batch is cut short; the rows are put back in order at the end.
    order = np.argsort((ids != model.pad_token_id).sum(axis=1), kind="stable")
    parts = []
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            batch = torch.from_numpy(ids[order[start : start + batch_size]])
            parts.append(model(_trim(batch, model.pad_token_id)).float().numpy())
    model.train(was_training)
    out = np.empty_like(np.concatenate(parts))
    out[order] = np.concatenate(parts)
    return out


def fit(
    model: HFModel,
    train_ids: np.ndarray,
    teacher_train: np.ndarray,
    val_ids: np.ndarray,
    teacher_val: np.ndarray,
    cfg: DistillConfig,
    seed: int,
    progress: ProgressFn | None = None,
    train_labels: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    world: World = World(),
) -> HFTrainResult:
    """Train a copy of `model` against the teacher's cached outputs; early-stop on the validation
    score: mean cosine to the teacher's embeddings, or accuracy on labels (agreement with the
    teacher's classes where the text has no labels).

    In a distributed `world` every rank calls this with the same arguments: each takes its share
    of every epoch's batches and the gradients are averaged, so the ranks' weights stay equal.
    A loss, validation outputs or weights that stop being finite raise `finite.Diverged` (exit 1)."""
    step_macs = measure(model, train_ids.shape[1:], torch.int64).macs * min(cfg.batch_size, len(train_ids))
    threads = choose(cfg.threads, step_macs, world.distributed)
    texts = _Texts(train_ids, teacher_train, val_ids, teacher_val, train_labels, val_labels)
    with torch_threads(threads.threads):
        trained = _fit(model, texts, cfg, seed, progress, world)
    return HFTrainResult(*trained, threads)


@dataclass(frozen=True)
class _Texts:
    """What `fit` trains on: token ids, the teacher's outputs and labels of both splits."""

    train_ids: np.ndarray
    teacher_train: np.ndarray
    val_ids: np.ndarray
    teacher_val: np.ndarray
    train_labels: np.ndarray | None
    val_labels: np.ndarray | None


def _fit(
    model: HFModel, texts: _Texts, cfg: DistillConfig, seed: int, progress: ProgressFn | None, world: World
) -> tuple[HFModel, int, int, float, str]:
    """The training loop of `fit`: the best model, its epoch, the epochs run, its score, the metric."""
    train_ids, teacher_train, val_ids, teacher_val = texts.train_ids, texts.teacher_train, texts.val_ids, texts.teacher_val
    train_labels, val_labels = texts.train_labels, texts.val_labels
    torch.manual_seed(seed)
    student = copy.deepcopy(model).train()
    embedding = student.task.kind == "embedding"
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    generator = torch.Generator().manual_seed(seed)
    ids_t, target_t = torch.from_numpy(train_ids), torch.from_numpy(teacher_train)
    labels_t = torch.from_numpy(train_labels) if train_labels is not None else None
    val_target = val_labels if val_labels is not None else (None if embedding else teacher_val.argmax(axis=1))

    best, best_state, best_epoch, epochs_run = -np.inf, None, 0, 0
    for epoch in range(1, cfg.epochs + 1):
        student.train()
        total, count = 0.0, 0
        for idx in _shard(_batches(ids_t, student.pad_token_id, cfg.batch_size, generator), world):
            out = student(_trim(ids_t[idx], student.pad_token_id))
            if embedding:
                loss = embedding_loss(out, target_t[idx])
            else:
                loss = kd_loss(out, labels_t[idx] if labels_t is not None else None, target_t[idx], cfg)
            optimizer.zero_grad()
            loss.backward()
            if world.distributed:
                world.average_gradients(list(student.parameters()))
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
        scheduler.step()
        epochs_run = epoch
        val_out = outputs(student, val_ids)
        check_epoch(epoch, total / max(1, count), val_out, student, cfg.lr)
        score = mean_cosine(val_out, teacher_val) if embedding else float((val_out.argmax(axis=1) == val_target).mean())
        if progress is not None:
            progress(epoch, cfg.epochs, score)
        if score > best:
            best, best_epoch, best_state = score, epoch, copy.deepcopy(student.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            break
    student.load_state_dict(best_state)
    metric = "cosine" if embedding else ("accuracy" if val_labels is not None else "agreement")
    return student.eval(), best_epoch, epochs_run, float(best), metric


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared distance (summed over the embedding) plus 1 - cosine, both averaged over the batch:
    the first matches scale and direction, the second direction alone, which is what retrieval uses."""
    mse = F.mse_loss(student, teacher, reduction="none").sum(dim=1).mean()
    return mse + (1 - F.cosine_similarity(student, teacher, dim=1)).mean()


def _batches(ids: torch.Tensor, pad: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of row indices: shuffled, then sorted by length within pools of
    _POOL_BATCHES batches, and the batches shuffled again."""
    lengths = (ids != pad).sum(dim=1)
    pools = torch.randperm(len(ids), generator=generator).split(size * _POOL_BATCHES)
    batches = [b for pool in pools for b in pool[lengths[pool].argsort(stable=True)].split(size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def _shard(batches: list[torch.Tensor], world: World) -> list[torch.Tensor]:
    """This rank's share of each batch, so the effective batch (and the schedule) is that of one
    process. Every rank takes the same number of steps, as the gradients are averaged step by
    step: a batch too small to give every rank a row is left out on all of them."""
    if not world.distributed:
        return batches
    return [torch.tensor_split(b, world.size)[world.rank] for b in batches if len(b) >= world.size]


def _trim(ids: torch.Tensor, pad: int) -> torch.Tensor:
    """The batch cut after its last non-pad column."""
    used = (ids != pad).any(dim=0).nonzero()
    return ids[:, : int(used.max()) + 1] if len(used) else ids[:, :1]
