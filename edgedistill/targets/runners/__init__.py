"""How a device is reached: one module per runner kind, each registered in `base.RUNNERS` under the
name target profiles give as `runner`. Importing this package registers them all."""

from edgedistill.targets.runners import adb, local, ssh  # noqa: F401  (registration)
from edgedistill.targets.runners.base import RUNNERS, Measurement, Reach, Runner, register_runner

__all__ = ["RUNNERS", "Measurement", "Reach", "Runner", "register_runner"]
