"""What a device can do: the `Specs` of a target profile, or of this machine (`host.host_specs`).

Its own module so that `profile` (which reads specs from TOML) and `host` (which reads them from
the machine) both import it, and neither imports the other back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["fp32", "fp16", "int8"]


class Specs(BaseModel):
    """What the device can do, each figure with its public source (`sources`, figure -> where)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cores: int = Field(ge=1, description="CPU cores, or GPU streaming multiprocessors.")
    threads: int = Field(ge=1, description="Threads the runtime uses there (1 for a GPU).")
    peak_gflops: dict[Precision, float] = Field(
        description="Peak giga-operations per second at each precision, for those threads (dense, no sparsity)."
    )
    bandwidth_gbs: float = Field(gt=0, description="Memory bandwidth, GB/s.")
    memory_bytes: int = Field(gt=0, description="Memory size, bytes.")
    flash_bytes: int | None = Field(
        None, gt=0, description="A microcontroller's flash for the model file: the deployed file must fit (a hard budget)."
    )
    sram_bytes: int | None = Field(
        None, gt=0, description="A microcontroller's SRAM for the activation arena: the deployed file's arena must fit (a hard budget)."
    )
    sources: dict[str, str] = Field(description="Where each figure comes from.")
