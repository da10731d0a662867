"""Teacher loading: a Python factory ("package.module:function", optional state dict) or a .pt2 file."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from edgedistill.errors import UserError
from edgedistill.importing import import_object


class TeacherConfig(BaseModel):
    """Where the teacher comes from; give exactly one of `factory` and `path`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    factory: str | None = Field(None, description='"package.module:function" returning an nn.Module.')
    weights: str | None = Field(None, description="State dict (.pt) to load into the factory's module.")
    path: str | None = Field(None, description="A torch.export program saved with torch.export.save (.pt2).")
    train: bool = Field(
        False,
        description="Train the factory's module on the data's labels first (cached in the run directory).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherConfig":
        if (self.factory is None) == (self.path is None):
            raise ValueError('give exactly one of teacher.factory ("module:function") and teacher.path (.pt2)')
        if self.path is not None and (self.weights or self.train):
            raise ValueError("teacher.weights and teacher.train apply to teacher.factory, not to a .pt2 teacher.path")
        return self


def load_teacher(cfg: TeacherConfig, base: Path = Path(".")) -> nn.Module:
    """Build or load the teacher in eval mode; relative paths are resolved against `base`."""
    if cfg.path is not None:
        return _load_pt2(base / cfg.path)
    model = import_object(cfg.factory)()
    if not isinstance(model, nn.Module):
        raise UserError(f"teacher factory {cfg.factory!r} returned {type(model).__name__}, not a torch.nn.Module: return the model")
    if cfg.weights:
        try:
            model.load_state_dict(_load_state_dict(base / cfg.weights))
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise UserError(f"teacher weights {cfg.weights} do not fit {cfg.factory!r} ({first}): give the matching factory") from exc
    return model.eval()


def _load_pt2(path: Path) -> nn.Module:
    if not path.exists():
        raise UserError(f"teacher file {path} does not exist: save one with torch.export.save(program, path)")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise UserError(f"{path} is not a torch.export program ({type(exc).__name__}): save it with torch.export.save") from exc
    return ExportedTeacher(program.module())


class ExportedTeacher(nn.Module):
    """A torch.export program as a teacher. Its graph was fixed at export (in eval mode), so
    train()/eval() only set this wrapper's flag: the exported module refuses to be switched."""

    def __init__(self, graph_module: nn.Module) -> None:
        super().__init__()
        self.program = graph_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> "ExportedTeacher":
        self.training = mode
        return self


def _load_state_dict(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"teacher weights {path} do not exist: give the path of a saved state dict")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path} is not a torch state dict ({type(exc).__name__}): save it with torch.save(model.state_dict(), path)") from exc
