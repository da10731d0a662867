"""Training on several processes under PyTorch's own launcher (`torchrun`).

Rank 0 runs the pipeline and alone writes the run directory. The other ranks only train: each
time rank 0 trains a model it first sends them the order (model, config, teacher outputs), and
every rank trains its shard of the data with DistributedDataParallel. When rank 0 is done (or
fails), it sends an empty order and the others return.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; a world of one when not launched by torchrun."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def send(self, order: object) -> None:
        """Rank 0: hand every other rank `order` (None ends their service)."""
        dist.broadcast_object_list([order], src=0)

    def receive(self) -> object:
        """Other ranks: the next order from rank 0."""
        box: list[object] = [None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group together: a rank that exits while another still holds its
        connections makes gloo abort that one (SIGABRT) on the way out."""
        if self.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients that DistributedDataParallel does not see (feature projections)."""
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.size


def init_world() -> World:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def serve(world: World, train: Callable[[object], object]) -> None:
    """Other ranks: carry out rank 0's training orders until it sends None."""
    while (order := world.receive()) is not None:
        train(order)
