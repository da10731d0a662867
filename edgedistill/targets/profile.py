"""Device profiles: a `Target` is data loaded from TOML; reaching the device is the runners' job.

Built-in profiles live in `targets/profiles/*.toml`; a user adds one by giving a path to their own
file wherever a target name is accepted.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgedistill.errors import UserError
from edgedistill.export.formats import FORMATS
from edgedistill.targets.host import host_specs
from edgedistill.targets.specs import Precision, Specs

class ArtifactSpec(BaseModel):
    """One file a target runs: its format and precision."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = Field(description="A registered format: onnx, ort (ONNX Runtime Mobile), pte (ExecuTorch), mlpackage (Core ML) or tensorrt (an engine, or its trtexec build).")
    precision: Precision = Field(description="fp32, fp16 or int8.")

    @model_validator(mode="after")
    def _registered(self) -> "ArtifactSpec":
        # The format registry says which formats exist and at which precisions each is made.
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} is unknown: use one of {', '.join(FORMATS)}")
        entry = FORMATS[self.format]
        if self.precision not in (*entry.staged, *entry.precisions):
            raise ValueError(f"{self.format} is not made at {self.precision}: use one of {', '.join((*entry.staged, *entry.precisions))}")
        return self


class SshSettings(BaseModel):
    """How the ssh runner logs in and runs there, beyond the address: for a device whose login
    needs more than the user's ssh defaults (`~/.ssh/config` still applies)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    python: str = Field("python3", description="The device's Python, with numpy and onnxruntime.")
    identity: str | None = Field(None, description="Private key file to log in with.")
    options: tuple[str, ...] = Field((), description='Extra ssh options, e.g. ["-o", "StrictHostKeyChecking=accept-new"].')
    workdir: str = Field("/tmp/edgedistill", description="Folder on the device the model is copied to.")


class Target(BaseModel):
    """One device: what runs there, and which artifacts it wants."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Name used in configs, reports and on the command line.")
    description: str = Field(description="The device and the part of it that runs the model.")
    kind: Literal["cpu", "mobile-cpu", "gpu", "npu", "mcu"] = Field(
        description="What executes the model (npu: a neural accelerator, such as Apple's Neural Engine; mcu: a microcontroller's core)."
    )
    runtime: Literal["onnxruntime", "ort-mobile", "tensorrt", "coreml", "litert", "litert-micro"] = Field(
        description="Inference runtime on the device."
    )
    execution_provider: str = Field(description="onnxruntime execution provider, the TensorRT builder, or Core ML's compute units.")
    artifacts: tuple[ArtifactSpec, ...] = Field(min_length=1, description="Files to make for it, preferred first.")
    threads: int = Field(0, ge=0, description="Threads the runtime uses there; 0 = the runtime's default.")
    runner: Literal["local", "ssh", "adb", "none"] = Field(
        "none", description="How a latency is measured there: local (this machine), ssh, adb, or none."
    )
    ssh: SshSettings = Field(default_factory=SshSettings, description="ssh runner: the device's Python, key and options.")
    specs: Specs | None = Field(
        None, description="Compute, bandwidth and memory, with sources; read from the machine for host-cpu."
    )


def builtin_names() -> tuple[str, ...]:
    """Names of the profiles that ship with edgedistill."""
    folder = resources.files("edgedistill.targets") / "profiles"
    return tuple(sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")))


def load_target(name_or_path: str) -> Target:
    """A built-in profile by name, or a user profile from a .toml path."""
    if name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            raise UserError(f"target profile {path} does not exist: give a .toml profile or one of {', '.join(builtin_names())}")
        return _parse(path.read_text(), str(path))
    if name_or_path not in builtin_names():
        raise UserError(f"unknown target {name_or_path!r}: use one of {', '.join(builtin_names())}, or the path of a .toml profile")
    text = (resources.files("edgedistill.targets") / "profiles" / f"{name_or_path}.toml").read_text()
    target = _parse(text, name_or_path)
    if target.specs is None and target.runner == "local":
        target = target.model_copy(update={"specs": host_specs()})
    return target


def _parse(text: str, origin: str) -> Target:
    try:
        return Target.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"target profile {origin} is not valid TOML ({exc}): fix its syntax") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise UserError(f"target profile {origin}: {where}: {err['msg']}") from exc
