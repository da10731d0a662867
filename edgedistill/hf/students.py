"""The `hf` student generator: a smaller config of a transformers teacher, initialised from its weights.

Two shrinks, one knob each (the student grows with the knob):
- depth: keep a share of the layers, spread evenly over the teacher's (DistilBERT-style);
- width: keep a share of the attention heads and MLP neurons in every layer, and the hidden channels
  those heads span (Minitron-style structured pruning). Channels, heads and neurons are ranked by
  the magnitude of their weights, not by activations: no data is needed to make a student.

Both are one operation, `shrink`: pick layers, then slice every tensor along its hidden, head and
MLP axes. Which axis of which tensor is which lives in one table per architecture (`_LAYOUTS`).

An embedding student narrower than the teacher's embedding gets a projection (HFModel.projection)
back to the teacher's embedding size, so its output can be compared with the teacher's and can
replace it in an existing vector index. It starts as the selection matrix that puts each kept
hidden channel back at its place, so the untrained student already embeds close to the teacher.

`prune_vocabulary` drops the embedding rows of tokens a corpus never uses; the tokenizer is kept
as it is, so tokenization is unchanged and only unseen tokens collapse onto [UNK].
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from edgedistill.compress.students import HFShrink, register
from edgedistill.errors import UserError
from edgedistill.hf.model import HFModel

Axis = Literal["hidden", "heads", "mlp"]


@dataclass(frozen=True)
class _Layout:
    """Where an architecture keeps its weights.

    `layer` matches the per-layer part of a tensor name (group 1: the layer index); `norm` the
    gamma of a LayerNorm on the hidden axis (its beta is named alike with "bias"); `rules` give,
    for each tensor name (first matching pattern wins), the axis each dimension of the tensor runs
    along, None for a dimension that is never sliced (vocabulary, positions, labels).
    `config` names the config fields of the hidden size, head count, MLP size and layer count.
    """

    layer: re.Pattern[str]
    norm: re.Pattern[str]
    rules: tuple[tuple[re.Pattern[str], tuple[Axis | None, ...]], ...]
    config: dict[str, str]

    def axes(self, name: str) -> tuple[Axis | None, ...]:
        """The axis of each dimension of tensor `name`."""
        for pattern, axes in self.rules:
            if pattern.search(name):
                return axes
        raise UserError(f"the hf generator does not know how to shrink tensor {name!r}: use prune, scale or custom")


def _rules(*rules: tuple[str, tuple[Axis | None, ...]]) -> tuple[tuple[re.Pattern[str], tuple[Axis | None, ...]], ...]:
    return tuple((re.compile(pattern), axes) for pattern, axes in rules)


_BERT = _Layout(
    layer=re.compile(r"encoder\.layer\.(\d+)\."),
    norm=re.compile(r"LayerNorm\.weight$"),
    rules=_rules(
        (r"embeddings\.\w+_embeddings\.weight$", (None, "hidden")),
        (r"LayerNorm\.(weight|bias)$", ("hidden",)),
        (r"attention\.self\.(query|key|value)\.weight$", ("heads", "hidden")),
        (r"attention\.self\.(query|key|value)\.bias$", ("heads",)),
        (r"attention\.output\.dense\.weight$", ("hidden", "heads")),
        (r"intermediate\.dense\.weight$", ("mlp", "hidden")),
        (r"intermediate\.dense\.bias$", ("mlp",)),
        (r"output\.dense\.weight$", ("hidden", "mlp")),
        (r"(output|pooler)\.dense\.bias$", ("hidden",)),
        (r"pooler\.dense\.weight$", ("hidden", "hidden")),
        (r"classifier\.weight$", (None, "hidden")),
        (r"classifier\.bias$", (None,)),
    ),
    config={"hidden": "hidden_size", "heads": "num_attention_heads", "mlp": "intermediate_size", "layers": "num_hidden_layers"},
)
# backbone class name -> layout; BERT's task models share its tensor names under a "bert." prefix
_LAYOUTS = {"BertModel": _BERT, "BertForSequenceClassification": _BERT}


@register(HFShrink)
class _HFShrinkHandler:
    # a transformer's word embeddings are often half its weights, and depth never shrinks them
    shrink_hint = 'lower min_knob, use shrink = "width", or vocab = "corpus" to drop unused embedding rows'

    def knob_range(self, cfg: HFShrink) -> tuple[float, float]:
        return (cfg.min_knob, 1.0)

    def make(self, cfg: HFShrink, teacher: nn.Module, knob: float, input_shape: tuple[int, ...]) -> nn.Module:
        if not isinstance(teacher, HFModel):
            raise UserError(
                f"the hf generator needs a Hugging Face teacher folder; use prune/scale/custom for a "
                f"{type(teacher).__name__} teacher"
            )
        layout = _layout(teacher)
        config = teacher.backbone.config
        total = teacher.num_layers
        heads, mlp = getattr(config, layout.config["heads"]), getattr(config, layout.config["mlp"])
        if cfg.shrink == "depth":
            return shrink(teacher, spread_layers(total, max(1, round(total * knob))), heads, mlp)
        layers = cfg.layers or total
        if layers > total:
            raise UserError(f"hf.layers = {layers} is more than the teacher's {total} layers: give at most {total}")
        return shrink(teacher, spread_layers(total, layers), max(1, round(heads * knob)), max(1, round(mlp * knob)))


def spread_layers(total: int, keep: int) -> tuple[int, ...]:
    """`keep` distinct layer indices out of `total`, spread evenly: the first, and from two on the last.

    Index i is round(i * (total - 1) / (keep - 1)); the step is at least 1, so no two collide.
    One layer keeps the first: its input is the embedding output it was trained on, so the
    student computes exactly the teacher's first layer.
    """
    if not 1 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} layers")
    if keep == 1:
        return (0,)
    return tuple(round(i * (total - 1) / (keep - 1)) for i in range(keep))


def shrink(teacher: HFModel, layers: Sequence[int], heads: int, intermediate: int) -> HFModel:
    """A new HFModel with the teacher's `layers`, `heads` heads and `intermediate` MLP neurons a layer.

    The hidden size becomes heads * head_dim (BERT ties the attention width to it). Kept heads,
    neurons and hidden channels are the teacher's most important ones by weight magnitude; their
    weights are copied. With every layer, head and neuron kept, the student equals the teacher.
    The teacher is not modified.

    An embedding student whose hidden size differs from the teacher's embedding size (the
    teacher's projection output, else its hidden size), or whose teacher has a projection, gets a
    projection to the teacher's embedding size (`_projection`); its parameters count in the
    student's. A classifier, and a student of the teacher's width with no teacher projection
    (every depth student of a plain teacher), gets none.
    """
    layout = _layout(teacher)
    config = teacher.backbone.config
    head_dim = getattr(config, layout.config["hidden"]) // getattr(config, layout.config["heads"])
    state = _pick_layers(teacher.backbone.state_dict(), layout, layers)
    keep = _kept_channels(state, layout, heads, head_dim, intermediate)
    sliced = {name: _slice(tensor, layout.axes(name), keep, _layer_of(name, layout)) for name, tensor in state.items()}
    new_config = copy.deepcopy(config)
    for axis, size in (("hidden", heads * head_dim), ("heads", heads), ("mlp", intermediate), ("layers", len(layers))):
        setattr(new_config, layout.config[axis], size)
    backbone = _same_class(teacher.backbone, new_config)
    backbone.load_state_dict(sliced, strict=True)
    token_map = None if teacher.token_map is None else teacher.token_map.clone()
    projection = _projection(teacher, keep.hidden, heads * head_dim)
    if projection is not None:
        projection = projection.to(device=backbone.device, dtype=backbone.dtype)
    return HFModel(backbone, teacher.task, teacher.pad_token_id, token_map, projection).train(teacher.training)


def _projection(teacher: HFModel, kept: torch.Tensor, hidden: int) -> nn.Linear | None:
    """The projection of a student of width `hidden` that kept the teacher's hidden channels `kept`.

    Pooling works channel by channel, so the student's pooled vector starts as the teacher's on
    the kept channels. The weight (teacher_dim x hidden) puts channel j back at index kept[j]
    (zeros elsewhere), bias zero; a teacher projection (W, b) is composed in: W[:, kept] and b.
    With every channel kept that is the identity (or the teacher's own projection), so the
    student starts as the teacher. None where none is needed (see shrink).
    """
    if teacher.task.kind != "embedding":
        return None
    if teacher.projection is None and hidden == teacher.embedding_dim:
        return None
    kept = kept.to(torch.long)
    if teacher.projection is None:
        projection = nn.Linear(hidden, teacher.embedding_dim)
        weight = torch.zeros(teacher.embedding_dim, hidden)
        weight[kept, torch.arange(hidden)] = 1.0
        bias: torch.Tensor | None = torch.zeros(teacher.embedding_dim)
    else:
        source = teacher.projection
        projection = nn.Linear(hidden, source.out_features, bias=source.bias is not None)
        weight = source.weight.detach().index_select(1, kept.to(source.weight.device)).cpu().float()
        bias = None if source.bias is None else source.bias.detach().cpu().float()
    with torch.no_grad():
        projection.weight.copy_(weight)
        if bias is not None:
            projection.bias.copy_(bias)
    return projection


def _layout(teacher: HFModel) -> _Layout:
    name = type(teacher.backbone).__name__
    if name not in _LAYOUTS:
        raise UserError(
            f"the hf generator cannot shrink a {name} yet (supported: {', '.join(_LAYOUTS)}): "
            "use prune, or a custom student"
        )
    return _LAYOUTS[name]


def _layer_of(name: str, layout: _Layout) -> int | None:
    match = layout.layer.search(name)
    return None if match is None else int(match.group(1))


def _pick_layers(state: dict[str, torch.Tensor], layout: _Layout, layers: Sequence[int]) -> dict[str, torch.Tensor]:
    """The tensors of the kept layers renumbered 0, 1, ..., and every tensor outside the layers."""
    new_index = {old: new for new, old in enumerate(layers)}
    picked = {}
    for name, tensor in state.items():
        match = layout.layer.search(name)
        if match is None:
            picked[name] = tensor
        elif int(match.group(1)) in new_index:
            picked[f"{name[: match.start(1)]}{new_index[int(match.group(1))]}{name[match.end(1):]}"] = tensor
    return picked


@dataclass(frozen=True)
class _Kept:
    """Indices kept along each axis: hidden channels for the whole model, heads' rows and MLP neurons per layer."""

    hidden: torch.Tensor
    heads: dict[int, torch.Tensor]
    mlp: dict[int, torch.Tensor]

    def index(self, axis: Axis, layer: int | None) -> torch.Tensor:
        if axis == "hidden":
            return self.hidden
        return (self.heads if axis == "heads" else self.mlp)[layer]  # type: ignore[index]


def _kept_channels(state: dict[str, torch.Tensor], layout: _Layout, heads: int, head_dim: int, intermediate: int) -> _Kept:
    """Rank hidden channels, heads and MLP neurons by weight magnitude and keep the top ones.

    A head scores the L2 norm of its q/k/v rows and output-projection columns; an MLP neuron the
    norm of its input row times that of its output column (biases shift, they do not scale a
    channel, so only weights rank). Hidden channels rank by `_hidden_score`.
    """
    head_sq: dict[int, torch.Tensor] = {}
    mlp_score: dict[int, torch.Tensor] = {}
    for name, tensor in state.items():
        if not name.endswith("weight"):
            continue
        layer = _layer_of(name, layout)
        for dim, axis in enumerate(layout.axes(name)):
            if axis == "heads":
                norms = _channel_norms(tensor.detach().float(), dim)
                head_sq[layer] = head_sq.get(layer, 0) + norms.square().reshape(-1, head_dim).sum(dim=1)
            elif axis == "mlp":
                mlp_score[layer] = mlp_score.get(layer, 1) * _channel_norms(tensor.detach().float(), dim)
    return _Kept(
        hidden=_top(_hidden_score(state, layout), heads * head_dim),
        heads={layer: _head_rows(_top(score, heads), head_dim) for layer, score in head_sq.items()},
        mlp={layer: _top(score, intermediate) for layer, score in mlp_score.items()},
    )


def _hidden_score(state: dict[str, torch.Tensor], layout: _Layout) -> torch.Tensor:
    """Each hidden channel's typical magnitude in the residual stream, from the LayerNorms alone.

    Every layer reads a LayerNorm's output g * x + b, with x of zero mean and unit variance, so
    sqrt(g**2 + b**2) is that channel's RMS there; the score sums it over every LayerNorm. On
    MiniLM it ranks channels as their measured mean |activation| does, and it beat the summed L2
    norms of every weight touching the channel, which the large embedding tables skew.
    """
    score = torch.zeros(())
    for name, gamma in state.items():
        if layout.norm.search(name):
            beta = state[name.removesuffix("weight") + "bias"]
            score = score + (gamma.detach().float().square() + beta.detach().float().square()).sqrt()
    return score


def _channel_norms(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """The L2 norm of each slice of `tensor` along `dim`."""
    return tensor.movedim(dim, 0).reshape(tensor.shape[dim], -1).norm(dim=1)


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` highest scores, in their original order (so the student keeps the teacher's order)."""
    return torch.sort(torch.topk(score, k).indices).values


def _head_rows(kept_heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The q/k/v rows of the kept heads: head h owns rows h*head_dim .. (h+1)*head_dim - 1."""
    return (kept_heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def _slice(tensor: torch.Tensor, axes: tuple[Axis | None, ...], keep: _Kept, layer: int | None) -> torch.Tensor:
    for dim, axis in enumerate(axes):
        if axis is not None:
            tensor = tensor.index_select(dim, keep.index(axis, layer))
    return tensor


def _same_class(backbone: nn.Module, config: object) -> nn.Module:
    """A fresh model of the backbone's class for `config`, without a pooler if the backbone has none."""
    cls = type(backbone)
    extra = {}
    if getattr(backbone, "pooler", "absent") is None and "add_pooling_layer" in inspect.signature(cls.__init__).parameters:
        extra["add_pooling_layer"] = False
    return cls(config, **extra)


def prune_vocabulary(model: HFModel, keep_ids: Iterable[int], *, unk_id: int, special_ids: Iterable[int] = ()) -> HFModel:
    """A new HFModel whose word-embedding table holds only the rows of `keep_ids`.

    `keep_ids` are tokenizer ids (e.g. every id in the tokenized training text). The pad token
    (model.pad_token_id), `unk_id` and `special_ids` (pass tokenizer.all_special_ids: cls, sep,
    mask, ...) are always kept. Every other id maps, through the new `token_map`, onto the [UNK]
    row: the tokenizer is unchanged, so sentences made only of kept tokens give the same output.
    Pruning an already pruned model composes the maps.
    """
    table = model.backbone.get_input_embeddings()
    current = model.token_map if model.token_map is not None else torch.arange(table.num_embeddings)
    wanted = sorted({*keep_ids, *special_ids, unk_id, model.pad_token_id})
    if wanted[0] < 0 or wanted[-1] >= len(current):
        raise UserError(f"token ids must lie in 0..{len(current) - 1}, got {wanted[0]}..{wanted[-1]}: use ids of the model's tokenizer")
    rows = torch.unique(current[torch.tensor(wanted)])
    new_row = torch.full((table.num_embeddings,), -1, dtype=torch.long)
    new_row[rows] = torch.arange(len(rows))
    token_map = new_row[current]
    token_map[token_map < 0] = new_row[current[unk_id]]
    padding_idx = None if table.padding_idx is None else int(new_row[table.padding_idx])
    embedding = nn.Embedding(len(rows), table.embedding_dim, padding_idx=None if padding_idx == -1 else padding_idx)
    with torch.no_grad():
        embedding.weight.copy_(table.weight[rows])
    backbone = copy.deepcopy(model.backbone)
    backbone.set_input_embeddings(embedding)
    backbone.config.vocab_size = len(rows)
    # the embedding is rebuilt from the config when the model is saved and loaded again
    backbone.config.pad_token_id = embedding.padding_idx
    projection = None if model.projection is None else copy.deepcopy(model.projection)
    return HFModel(backbone, model.task, model.pad_token_id, token_map, projection).train(model.training)


def unknown_share(token_map: torch.Tensor, input_ids: torch.Tensor, pad_id: int, unk_id: int) -> float:
    """The share of non-pad tokens in `input_ids` that `token_map` sends to [UNK] although they are not [UNK]."""
    ids = input_ids[input_ids != pad_id]
    if ids.numel() == 0:
        return 0.0
    lost = (token_map[ids] == token_map[unk_id]) & (ids != unk_id)
    return lost.float().mean().item()
