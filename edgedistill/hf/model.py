"""A Hugging Face transformer teacher: an encoder with its task head, fed token ids alone.

`HFModel.forward(input_ids)` derives the attention mask in the graph (`input_ids != pad`), so the
exported ONNX model, the FLOP counter and the distillation loop all see one LongTensor input.
Folders are read with `local_files_only=True`: nothing is downloaded.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING, MODEL_MAPPING
from transformers.utils import logging as hf_logging

from edgedistill.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TaskKind = Literal["embedding", "classification"]
Pooling = Literal["mean", "cls", "max"]

TASK_FILE = "edgedistill_task.json"
TOKEN_MAP_FILE = "token_map.npy"
# the embedding projection's tensors: "weight" (out_features, in_features) and, where it has one,
# "bias" (out_features,), as nn.Linear names them; edgedistill_task.json's "projection" entry
# records its in/out features and whether it has a bias (null without a projection)
PROJECTION_FILE = "projection.safetensors"
_TASKS = ("embedding", "classification")
_POOLINGS = ("mean", "cls", "max")
# sentence-transformers' pooling modes (legacy boolean keys and the newer "pooling_mode" names) -> ours
_LEGACY_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# sentence-transformers modules an embedding folder may list; any other (Dense, ...) would change
# the embedding in a way HFModel does not reproduce, so it is refused
_ST_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class HFTask:
    """What the model's output is: a pooled sentence embedding or classification logits."""

    kind: TaskKind
    pooling: Pooling = "mean"  # embedding only
    normalize: bool = False  # L2-normalise the pooled embedding
    labels: tuple[str, ...] = ()  # classification: id2label names in order

    def __post_init__(self) -> None:
        if self.kind not in _TASKS:
            raise UserError(f"unknown Hugging Face task {self.kind!r}: use one of {', '.join(_TASKS)}")
        if self.pooling not in _POOLINGS:
            raise UserError(f"unknown pooling {self.pooling!r}: use one of {', '.join(_POOLINGS)}")


class HFModel(nn.Module):
    """A transformers encoder with its task head.

    forward(input_ids: LongTensor (B, T)) -> (B, D) pooled (and normalised if the task says)
    embedding, or (B, C) logits. The attention mask is derived in the graph: input_ids != pad_token_id.
    `token_map` (int64, one entry per tokenizer id) maps a token id to its row of a pruned
    embedding table; None leaves ids as they are.
    `projection` (embedding task only) maps the pooled embedding (B, hidden) to (B, D) before the
    L2 normalisation, as a sentence-transformers Dense module before Normalize does: a student
    narrower than its teacher uses it to give the teacher's embedding size. D is `embedding_dim`.
    """

    token_map: torch.Tensor | None
    projection: nn.Linear | None

    def __init__(
        self,
        backbone: transformers.PreTrainedModel,
        task: HFTask,
        pad_token_id: int,
        token_map: torch.Tensor | None = None,
        projection: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.task = task
        self.pad_token_id = int(pad_token_id)
        if token_map is not None and token_map.dim() != 1:
            raise ValueError(f"token_map must be one-dimensional, got shape {tuple(token_map.shape)}")
        self.register_buffer("token_map", None if token_map is None else token_map.to(torch.long))
        if projection is not None:
            if task.kind != "embedding":
                raise ValueError(f"a projection applies to an embedding task only, not {task.kind}")
            if not isinstance(projection, nn.Linear):
                raise ValueError(f"projection must be an nn.Linear, got {type(projection).__name__}")
            hidden = int(backbone.config.hidden_size)
            if projection.in_features != hidden:
                raise ValueError(f"projection takes {projection.in_features} features but the backbone's hidden size is {hidden}")
        # a submodule: its parameters are the model's (budgets, training, state_dict)
        self.register_module("projection", projection)
        # the wrapper takes the backbone's mode, so a loaded (eval) backbone gives an eval model
        self.train(backbone.training)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Pooled embedding (B, D) or logits (B, C) of a batch of token ids (B, T)."""
        inputs = self._inputs(input_ids)
        out = self.backbone(**inputs, return_dict=True)
        if self.task.kind == "classification":
            return out.logits
        return self._pool(out.last_hidden_state, inputs["attention_mask"])

    def hidden_states(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(embedding output, layer 1, ..., layer L), each (B, T, H): the targets of feature distillation."""
        out = self.backbone(**self._inputs(input_ids), output_hidden_states=True, return_dict=True)
        return tuple(out.hidden_states)

    @property
    def num_layers(self) -> int:
        """The encoder's layer count."""
        return int(self.backbone.config.num_hidden_layers)

    @property
    def embedding_dim(self) -> int:
        """The size of the embedding forward returns: the projection's output, else the hidden size.

        (Embedding task; a classifier's forward gives its labels' logits instead.)
        """
        return int(self.projection.out_features) if self.projection is not None else int(self.backbone.config.hidden_size)

    def save(self, folder: Path) -> None:
        """Write the backbone (save_pretrained), the task, the token map and the projection to
        `folder`; not the tokenizer. The projection goes to projection.safetensors, its shape to
        edgedistill_task.json's "projection" entry (null when there is none)."""
        folder = Path(folder)
        self.backbone.save_pretrained(folder)
        projection = None
        if self.projection is not None:
            p = self.projection
            projection = {"in_features": p.in_features, "out_features": p.out_features, "bias": p.bias is not None}
            tensors = {"weight": p.weight.detach().cpu().contiguous()}
            if p.bias is not None:
                tensors["bias"] = p.bias.detach().cpu().contiguous()
            save_file(tensors, str(folder / PROJECTION_FILE))
        else:
            (folder / PROJECTION_FILE).unlink(missing_ok=True)  # a stale one from an earlier save
        meta = {
            **asdict(self.task), "labels": list(self.task.labels), "pad_token_id": self.pad_token_id,
            "projection": projection,
        }
        (folder / TASK_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if self.token_map is not None:
            np.save(folder / TOKEN_MAP_FILE, self.token_map.cpu().numpy())
        else:
            (folder / TOKEN_MAP_FILE).unlink(missing_ok=True)  # load_saved reads the map when the file is there

    def _inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        # the mask comes from the tokenizer's ids, before any mapping into a pruned table
        mask = (input_ids != self.pad_token_id).long()
        ids = input_ids if self.token_map is None else self.token_map[input_ids]
        return {"input_ids": ids, "attention_mask": mask}

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool token states as sentence-transformers does, then L2-normalise if the task says."""
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        if self.task.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.task.pooling == "max":
            pooled = hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
        else:
            pooled = (hidden * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9)
        if self.projection is not None:
            pooled = self.projection(pooled)
        return F.normalize(pooled, p=2, dim=1) if self.task.normalize else pooled


def is_hf_folder(path: Path) -> bool:
    """Whether `path` is a directory holding a Hugging Face config.json."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def load_hf(folder: Path, task: str | None = None) -> tuple[HFModel, "PreTrainedTokenizerBase"]:
    """Load a transformers model folder as an HFModel in eval mode, with its tokenizer.

    `task` None detects it: a sentence-transformers folder is an embedding model with its pooling
    and normalisation; a *ForSequenceClassification architecture a classifier; anything else an
    embedding model with mean pooling. "embedding" or "classification" overrides the detection.
    """
    folder = Path(folder)
    config = _config(folder)
    kind = _task_kind(folder, config, task)
    tokenizer = _tokenizer(folder)
    backbone = _backbone(folder, config, kind)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
    if pad is None:
        raise UserError(f"the tokenizer in {folder} has no pad token: set pad_token in its tokenizer_config.json")
    return HFModel(backbone, _task(folder, backbone.config, kind), pad), tokenizer


def load_saved(folder: Path) -> HFModel:
    """Reload what HFModel.save wrote to `folder` (a file without a "projection" entry has none)."""
    folder = Path(folder)
    meta_file = folder / TASK_FILE
    if not meta_file.is_file():
        raise UserError(f"{folder} has no {TASK_FILE}: it was not written by HFModel.save; load it with load_hf")
    try:
        meta = json.loads(meta_file.read_text())
        task = HFTask(meta["kind"], meta["pooling"], bool(meta["normalize"]), tuple(meta["labels"]))
        pad = int(meta["pad_token_id"])
        shape = meta.get("projection")
        if shape is not None:
            shape = (int(shape["in_features"]), int(shape["out_features"]), bool(shape["bias"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{meta_file} is unreadable ({exc}): write it again with HFModel.save") from exc
    backbone = _backbone(folder, _config(folder), task.kind)
    map_file = folder / TOKEN_MAP_FILE
    token_map = torch.from_numpy(np.load(map_file)) if map_file.is_file() else None
    projection = None if shape is None else _load_projection(folder, *shape)
    try:
        return HFModel(backbone, task, pad, token_map, projection)
    except ValueError as exc:
        raise UserError(f"{folder} does not hold a consistent model ({exc}): write it again with HFModel.save") from exc


def _load_projection(folder: Path, in_features: int, out_features: int, bias: bool) -> nn.Linear:
    """The nn.Linear HFModel.save wrote to PROJECTION_FILE, checked against the shape its task file records."""
    path = folder / PROJECTION_FILE
    if not path.is_file():
        raise UserError(f"{folder}/{TASK_FILE} records a projection but {PROJECTION_FILE} is missing: write the model again with HFModel.save")
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise UserError(f"{path} does not load ({_first_line(exc)}): write the model again with HFModel.save") from exc
    projection = nn.Linear(in_features, out_features, bias=bias)
    try:
        projection.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise UserError(
            f"{path} does not hold a {in_features} -> {out_features} projection ({_first_line(exc)}): "
            "write the model again with HFModel.save"
        ) from exc
    return projection.eval()


def _config(folder: Path) -> transformers.PretrainedConfig:
    if not folder.is_dir():
        raise UserError(f"Hugging Face model folder {folder} does not exist: give the folder save_pretrained wrote")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json: give a folder written by save_pretrained")
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{folder}/config.json cannot be read ({_first_line(exc)}): fix or re-save the model") from exc


def _task_kind(folder: Path, config: transformers.PretrainedConfig, task: str | None) -> TaskKind:
    if task is not None:
        if task not in _TASKS:
            raise UserError(f"unknown Hugging Face task {task!r}: use one of {', '.join(_TASKS)} (or leave it out to detect)")
        return task  # type: ignore[return-value]
    if _is_sentence_transformers(folder):
        return "embedding"
    architectures = config.architectures or []
    return "classification" if any(a.endswith("ForSequenceClassification") for a in architectures) else "embedding"


def _task(folder: Path, config: transformers.PretrainedConfig, kind: TaskKind) -> HFTask:
    if kind == "classification":
        labels = tuple(str(config.id2label[i]) for i in range(config.num_labels))
        return HFTask("classification", labels=labels)
    if not _is_sentence_transformers(folder):
        return HFTask("embedding")
    modules = _st_modules(folder)
    normalize = any(_st_type(m) == "Normalize" for m in modules)
    return HFTask("embedding", pooling=_st_pooling(folder, modules), normalize=normalize)


def _is_sentence_transformers(folder: Path) -> bool:
    return (folder / "modules.json").is_file() or any(folder.glob("*_Pooling/config.json"))


def _st_modules(folder: Path) -> list[dict]:
    """modules.json's entries ([] without one), checked to be modules HFModel reproduces."""
    path = folder / "modules.json"
    if not path.is_file():
        return []
    try:
        modules = json.loads(path.read_text())
        types = [_st_type(m) for m in modules]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UserError(f"{path} is unreadable ({exc}): fix it or remove it") from exc
    unsupported = [t for t in types if t not in _ST_MODULES]
    if unsupported:
        raise UserError(
            f"{path} lists sentence-transformers modules {unsupported} that edgedistill does not reproduce: "
            f"only {', '.join(_ST_MODULES)} are supported"
        )
    for module in modules:
        if _st_type(module) == "Transformer" and module.get("path", "") not in ("", "."):
            raise UserError(
                f"{path} keeps the transformer in the subfolder {module['path']!r}: re-save the model with a "
                "current sentence-transformers, which puts it at the top of the folder"
            )
    return modules


def _st_type(module: dict) -> str:
    """The class name of a modules.json entry, e.g. "Pooling" for sentence_transformers.models.Pooling."""
    return str(module["type"]).rsplit(".", 1)[-1]


def _st_pooling(folder: Path, modules: list[dict]) -> Pooling:
    paths = [folder / m.get("path", "") / "config.json" for m in modules if _st_type(m) == "Pooling"]
    paths = paths or sorted(folder.glob("*_Pooling/config.json"))
    if not paths:
        return "mean"  # a Transformer module alone: sentence-transformers adds mean pooling itself
    try:
        config = json.loads(paths[0].read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{paths[0]} is unreadable ({exc}): fix it or re-save the model") from exc
    modes = config.get("pooling_mode") or [mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if len(modes) != 1 or modes[0] not in _POOLINGS:
        raise UserError(
            f"{paths[0]} asks for pooling {'+'.join(modes) or 'none'}, which edgedistill does not support: "
            f"use one of {', '.join(_POOLINGS)}"
        )
    return modes[0]


def _tokenizer(folder: Path) -> "PreTrainedTokenizerBase":
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UserError(
            f"no usable tokenizer in {folder} ({_first_line(exc)}): save it there with tokenizer.save_pretrained(folder)"
        ) from exc


def _backbone(folder: Path, config: transformers.PretrainedConfig, kind: TaskKind) -> transformers.PreTrainedModel:
    """The transformers model for `kind`, with every weight loaded from `folder`, eager attention, eval mode."""
    mapping = MODEL_MAPPING if kind == "embedding" else MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
    try:
        model_class = mapping[type(config)]
    except KeyError:
        raise UserError(
            f"transformers has no {kind} model for the {config.model_type!r} architecture in {folder}: "
            "use a supported encoder (BERT, RoBERTa, DistilBERT, ...)"
        ) from None
    extra = {}
    # a pooler the checkpoint lacks would be randomly initialised; embedding tasks never use it
    if kind == "embedding" and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        extra["add_pooling_layer"] = False
    # quiet: transformers warns of unused tensors (a pooler we leave out, a classifier head under
    # task="embedding"), which are expected here; missing ones are checked below
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(
            folder, config=config, local_files_only=True, attn_implementation="eager", output_loading_info=True, **extra
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise UserError(f"the weights in {folder} do not load ({_first_line(exc)}): re-save the model with save_pretrained") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = info["missing_keys"] + [key for key, *_ in info["mismatched_keys"]]
    if missing:
        raise UserError(
            f"the weights in {folder} lack {len(missing)} tensors of a {kind} model (e.g. {missing[0]!r}): "
            f"the folder does not hold a trained {kind} model; pick the task that matches it"
        )
    return model.eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
