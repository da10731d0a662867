"""Student generators: each technique is a config plus a handler registered for its type.

A handler turns one knob (keep ratio, width) that sizes the student: the larger the knob, the
larger the student. `search` turns it until the student fits a budget.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from typing import Annotated, Callable, Literal, Protocol, TypeVar

import torch
import torch_pruning as tp
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from torch import nn

from edgedistill.errors import UserError
from edgedistill.tasks.heads import tensors_of
from edgedistill.importing import import_object


class Prune(BaseModel):
    """Structured channel pruning of a copy of the teacher; it starts from the teacher's weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["prune"] = Field("prune", description="Generator: structured channel pruning of the teacher.")
    importance: Literal["l1", "l2"] = Field("l2", description="Norm of the weights that ranks channels.")
    min_keep: float = Field(0.05, gt=0.0, le=1.0, description="Smallest share of channels the search may keep.")
    ignore: tuple[str, ...] = Field(
        (), description='Module names (as in named_modules(), e.g. "head.1") never pruned; the output layer never is.'
    )


class Scale(BaseModel):
    """A fresh model from a width-scalable family: `family(width=knob)`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["scale"] = Field("scale", description="Generator: a width multiplier of a model family.")
    family: str = Field(description='"package.module:function" taking width= and returning an nn.Module.')
    min_width: float = Field(0.05, gt=0.0, description="Smallest width the search may try.")
    max_width: float = Field(1.0, gt=0.0, description="Largest width the search may try.")

    @model_validator(mode="after")
    def _ordered(self) -> "Scale":
        if self.min_width > self.max_width:
            raise ValueError(f"min_width {self.min_width} is above max_width {self.max_width}: swap them")
        return self


class Custom(BaseModel):
    """A student the user builds: `factory()`; it has no knob."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["custom"] = Field("custom", description="Generator: a user factory, used as it is.")
    factory: str = Field(description='"package.module:function" taking no arguments and returning an nn.Module.')


class HFShrink(BaseModel):
    """A smaller config of the teacher's transformer architecture, initialised from the teacher's weights.

    Its handler lives in edgedistill.hf.students (imported with transformers, only for HF teachers).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["hf"] = Field("hf", description="Generator: fewer layers or narrower layers of a Hugging Face teacher.")
    shrink: Literal["depth", "width"] = Field(
        "depth", description='What the knob turns: "depth" keeps a share of the layers, "width" of the heads and MLP.'
    )
    layers: int | None = Field(
        None, gt=0, description='With shrink = "width": the student\'s layer count (default: the teacher\'s).'
    )
    min_knob: float = Field(0.05, gt=0.0, le=1.0, description="Smallest share of layers or width the search may try.")
    vocab: Literal["keep", "corpus"] = Field(
        "keep", description='"corpus": keep only the embedding rows of tokens seen in the training text.'
    )

    @model_validator(mode="after")
    def _layers_with_width(self) -> "HFShrink":
        if self.shrink == "depth" and self.layers is not None:
            raise ValueError('layers is set by the knob when shrink = "depth": remove layers or use shrink = "width"')
        return self


class Family(BaseModel):
    """A fresh member of a built-in family (`cnn`, `cnn1d`, `dense` or `mlp`), sized by a width
    knob: the generator for teachers without weights to start from (ONNX, recorded, query-only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["family"] = Field("family", description="Generator: a built-in student family, width-searched.")
    name: Literal["cnn", "mlp", "cnn1d", "dense"] | None = Field(
        None,
        description=(
            "cnn ((C, H, W) inputs, vector outputs), cnn1d ((C, L) inputs, vector outputs), dense (outputs "
            "of the input's rank: (C, H, W) to (C', H', W') or (C, L) to (C', L')) or mlp (any shapes); "
            "default: the one that fits the input and output shapes, mlp where none does."
        ),
    )
    outputs: PositiveInt | Annotated[tuple[PositiveInt, ...], Field(min_length=1)] | None = Field(
        None,
        description=(
            "Shape of one output: an int for a vector of that many, or a tuple (channels, height, width) "
            "for dense outputs; default: the teacher's."
        ),
    )
    min_width: float = Field(0.03, gt=0.0, description="Smallest width the search may try.")
    max_width: float = Field(1.0, gt=0.0, description="Largest width the search may try.")


StudentSpec = Annotated[Prune | Scale | Custom | Family | HFShrink, Field(discriminator="kind")]


class StudentHandler(Protocol):
    """How one kind of generator makes a student at a knob value."""

    # how to reach a smaller student than the knob's smallest, for error messages
    shrink_hint: str

    def knob_range(self, cfg: BaseModel) -> tuple[float, float]:
        """(smallest, largest) knob; the student's size grows with the knob."""
        ...

    def make(self, cfg: BaseModel, teacher: nn.Module, knob: float, input_shape: tuple[int, ...]) -> nn.Module:
        """A new student at `knob`; the teacher is not modified."""
        ...


_HANDLERS: dict[type[BaseModel], StudentHandler] = {}
_H = TypeVar("_H")


def register(config_type: type[BaseModel]) -> Callable[[type[_H]], type[_H]]:
    """Class decorator: register an instance of the handler class for `config_type`."""

    def decorate(handler_cls: type[_H]) -> type[_H]:
        _HANDLERS[config_type] = handler_cls()  # type: ignore[assignment]
        return handler_cls

    return decorate


def handler_for(cfg: BaseModel) -> StudentHandler:
    """The handler registered for the type of `cfg`."""
    if type(cfg) not in _HANDLERS and type(cfg).__name__ in _LAZY:
        importlib.import_module(_LAZY[type(cfg).__name__])
    try:
        return _HANDLERS[type(cfg)]
    except KeyError:
        raise UserError(
            f"no student generator is registered for {type(cfg).__name__}: use prune, scale, family, hf or custom"
        ) from None


# Handlers whose modules import transformers: registered on first use, so loading edgedistill stays quick.
_LAZY = {"HFShrink": "edgedistill.hf.students"}


def generators() -> tuple[type[BaseModel], ...]:
    """Every registered generator config type."""
    return tuple(_HANDLERS)


@register(Prune)
class _PruneHandler:
    shrink_hint = "lower min_keep"

    def knob_range(self, cfg: Prune) -> tuple[float, float]:
        return (cfg.min_keep, 1.0)

    def make(self, cfg: Prune, teacher: nn.Module, knob: float, input_shape: tuple[int, ...]) -> nn.Module:
        student = copy.deepcopy(teacher)
        flags = [(m, m.training) for m in student.modules()]
        # eval: the tracing forward pass must not move batch-norm statistics away from the teacher's
        student.eval()
        example = torch.zeros((1, *input_shape))
        names = dict(student.named_modules())
        missing = [name for name in cfg.ignore if name not in names]
        if missing:
            raise UserError(f"prune.ignore names {missing} that the teacher lacks: use names from model.named_modules()")
        ignored = [names[name] for name in cfg.ignore] + _output_layers(student, example)
        layers = [m for m in student.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
        pruner = tp.pruner.BasePruner(
            student,
            example,
            importance=tp.importance.MagnitudeImportance(p=1 if cfg.importance == "l1" else 2),
            pruning_ratio=1.0 - knob,
            pruning_ratio_dict={m: _ratio_keeping(_out_channels(m), knob) for m in layers if m not in ignored},
            global_pruning=False,
            iterative_steps=1,
            ignored_layers=ignored,
        )
        pruner.step()
        for module, training in flags:
            module.training = training
        return student


def _out_channels(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _ratio_keeping(channels: int, keep: float) -> float:
    """A pruning ratio that keeps round(channels * keep) channels, at least one.

    torch-pruning keeps int(channels * (1 - ratio)): with a plain 1 - keep a small keep floors to
    zero channels, which it then silently skips, so the student would grow as the knob shrinks.
    The half channel makes its floor land on our rounded count despite float error.
    """
    kept = max(1, round(channels * keep))
    return max(0.0, 1.0 - (kept + 0.5) / channels)


def _output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The Linear or convolution layers whose widths are the outputs': per returned tensor, the
    layer whose output it is (or a view of: a head reshaped shares its storage), else the last
    layer run (a single output past an activation)."""
    calls: list[tuple[nn.Module, int]] = []
    hooks = [
        m.register_forward_hook(lambda module, args, output: calls.append((module, output.untyped_storage().data_ptr())))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for hook in hooks:
            hook.remove()
    if not calls:
        raise UserError(
            "prune found no Linear or convolution module in the teacher (a .pt2 teacher has none: its graph "
            "is fixed): use a scale or custom student"
        )
    layers = []
    for tensor in tensors_of(out):
        ptr = tensor.untyped_storage().data_ptr()
        layers.append(next((m for m, p in reversed(calls) if p == ptr), calls[-1][0]))
    return layers


@register(Scale)
class _ScaleHandler:
    shrink_hint = "lower min_width"

    def knob_range(self, cfg: Scale) -> tuple[float, float]:
        return (cfg.min_width, cfg.max_width)

    def make(self, cfg: Scale, teacher: nn.Module, knob: float, input_shape: tuple[int, ...]) -> nn.Module:
        family = _callable(cfg.family, "scale.family")
        try:
            inspect.signature(family).bind(width=knob)
        except (TypeError, ValueError):
            raise UserError(f"scale.family {cfg.family!r} does not take a width= argument: give it one") from None
        return _module(family(width=knob), cfg.family, "scale.family")


@register(Family)
class _FamilyHandler:
    shrink_hint = "lower min_width"

    def knob_range(self, cfg: Family) -> tuple[float, float]:
        return (cfg.min_width, cfg.max_width)

    def make(self, cfg: Family, teacher: nn.Module | None, knob: float, input_shape: tuple[int, ...]) -> nn.Module:
        from edgedistill.compress import families

        if cfg.outputs is None:
            raise UserError("the family generator needs the shape of its outputs: set student.outputs")
        output_shape = (cfg.outputs,) if isinstance(cfg.outputs, int) else tuple(cfg.outputs)
        name = cfg.name or families.default_family(input_shape, output_shape)
        return families.build(name, input_shape, output_shape, knob)


@register(Custom)
class _CustomHandler:
    shrink_hint = "make the custom factory's model smaller"

    def knob_range(self, cfg: Custom) -> tuple[float, float]:
        return (1.0, 1.0)

    def make(self, cfg: Custom, teacher: nn.Module, knob: float, input_shape: tuple[int, ...]) -> nn.Module:
        factory = _callable(cfg.factory, "custom.factory")
        try:
            inspect.signature(factory).bind()
        except (TypeError, ValueError):
            raise UserError(f"custom.factory {cfg.factory!r} needs arguments: give one callable with none") from None
        return _module(factory(), cfg.factory, "custom.factory")


def _callable(spec: str, field: str) -> Callable[..., object]:
    obj = import_object(spec)
    if not callable(obj):
        raise UserError(f"{field} {spec!r} is a {type(obj).__name__}, not a function: name a function")
    return obj


def _module(obj: object, spec: str, field: str) -> nn.Module:
    if not isinstance(obj, nn.Module):
        raise UserError(f"{field} {spec!r} returned {type(obj).__name__}, not a torch.nn.Module: return the model")
    return obj
