"""How many threads torch trains with: the config's setting, or a rule on the work of one training
step, the same on every run of a config on a machine, so a run stays repeatable: a convolution's
gradients are summed in another order at another thread count, and the weights differ.

Why a rule and not torch's default of every core: on a shared machine (a CI runner, a laptop
building something else) a thread waits for a core, and there every core made an epoch of the
digits students 16-112x slower than one thread (benchmarks/RESULTS.md, figure 6), while on an idle
2-core machine two threads gain 1.4-2x (width 0.5: 0.70x the time; width 8: 0.48x). Small steps
lose most and gain least, so they take one thread; large steps, whose operators are long enough to
share, take every core.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

# Multiply-accumulates of one training step's forward pass (per sample x batch) from which every
# core is used: the digits CNN at width 2 (9.7M a sample, 623M a step of 64) is below it, and was
# still 16x slower at two threads on a loaded machine; a MiniLM-sized encoder is far above.
EVERY_CORE_MACS = 1e9


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count training ran with and why, as the report says it."""

    threads: int
    how: str


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or taskset limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block, then restored (the setting is process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def choose(setting: int, step_macs: float, distributed: bool = False) -> ThreadChoice:
    """`setting` threads when it is set (> 0); else one thread for a step of fewer than
    EVERY_CORE_MACS multiply-accumulates, every core for a larger one. A distributed rank keeps
    what its launcher set (torchrun sets one thread per process unless told otherwise)."""
    if setting > 0:
        return ThreadChoice(setting, "set by the config's threads")
    if distributed:
        return ThreadChoice(torch.get_num_threads(), "as the launcher set it for each process")
    every = cores()
    if step_macs < EVERY_CORE_MACS or every == 1:
        return ThreadChoice(1, f"a training step of {step_macs / 1e6:,.0f}M MACs: one thread below {EVERY_CORE_MACS / 1e6:,.0f}M")
    return ThreadChoice(every, f"a training step of {step_macs / 1e6:,.0f}M MACs: every core from {EVERY_CORE_MACS / 1e6:,.0f}M")
