"""How long work reports progress: the library calls these hooks; the CLI draws them with rich."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Advance = Callable[[int, str], None]


class Progress:
    """Silent progress: the default for library callers. The CLI subclasses it."""

    def stage(self, text: str) -> None:
        """A stage begins (or is resumed from the run directory)."""

    @contextlib.contextmanager
    def task(self, text: str, total: int) -> Iterator[Advance]:
        """A bar of `total` steps; call the yielded function with (steps done, status text)."""
        yield lambda _done, _status: None
