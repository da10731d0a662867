"""The parity check every exported file carries: how far it strays from its source, and how far it may."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Parity:
    """A file's parity check against its source: `max_abs_err` is the largest absolute difference
    of their outputs on the check inputs and `tolerance` the largest allowed, both absolute.

    `max_abs_err` None: not checked here (a TensorRT engine's script, which onnxruntime cannot
    run; an int8 file, whose check is its score), which passes.
    """

    max_abs_err: float | None
    tolerance: float | None

    def __post_init__(self) -> None:
        # `passed` compares the two, so an error without its bound is a caller's mistake, caught here.
        if self.max_abs_err is not None and self.tolerance is None:
            raise ValueError(f"a parity error ({self.max_abs_err}) needs the tolerance it was checked against")

    @classmethod
    def unchecked(cls) -> Parity:
        """No parity check was made here."""
        return cls(None, None)

    @property
    def checked(self) -> bool:
        """True when the file was compared with its source here."""
        return self.max_abs_err is not None

    @property
    def passed(self) -> bool:
        """True when not checked, or when the error is within the tolerance."""
        return self.max_abs_err is None or self.max_abs_err <= self.tolerance
