"""Quantization-aware training that emulates onnxruntime's own static int8 QDQ arithmetic.

`fake_quantized` wraps every Conv/Linear of a copy of the student so that, in forward, its input
activation and its weight sit on the int8 grid onnxruntime's `quantize_static` will put them on
(`compress.quantize`), as does the model's final output; training under `distill.fit` then learns
weights that survive that grid. `unwrapped` gives the plain student back for export, which is
quantized by onnxruntime as usual (calibrated again on the calibration split).

Matched from onnxruntime/quantization (quant_utils.compute_scale_zp and get_qmin_qmax_for_qType,
qdq_quantizer, operators/conv.py and gemm.py), with reduce_range False as quantize.py leaves it:
- weights: int8 symmetric, zero point 0, scale = 2 * absmax / 254 (the symmetric range
  [-127, 127]) per output channel: axis 0 for Conv and for Linear (Gemm with transB=1), axis 1
  for ConvTranspose, whose weights are (in, out, ...); an all-zero channel gets scale 1;
- uint8 activations (Int8Static): the range [min(lo, 0), max(hi, 0)], scale = (hi - lo) / 255,
  zero point round(-lo / scale) (half to even), values saturating to [0, 255];
- int8 activations (Int8StaticSymmetric): scale = 2 * absmax / 254, zero point 0, values
  saturating to [-128, 127] as QuantizeLinear does at run time;
- bias: int32, scale input_scale * weight_scale, with Int8Static; float with the symmetric method
  (QuantizeBias False). Scales are computed in float64 and stored as float32, as there.
Not emulated, as each needs the exported graph rather than the modules: onnxruntime's widening of
a weight scale whose bias would overflow int32 (near-zero weights only); with int8 activations it
keeps each ReLU and also quantizes the Conv/Gemm output before it (a coarser grid when the
pre-activation's negative side is the wider); a Linear on inputs of rank other than 2 exports as
MatMul + Add, whose product, bias and sum it quantizes apart; the inputs and output of a residual
Add and the input of a pooling op, which it quantizes too (benchmarks/RESULTS.md §11: the fake-
quantized and onnxruntime's int8 MobileNet-v2-style student agree on 98.6-99.2 % of samples).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call

from edgedistill.compress.quantize import Int8Dynamic, Int8Static, Int8StaticSymmetric, QuantMethod, QuantResult
from edgedistill.errors import UserError

Activations = Literal["uint8", "int8"]
_INT32 = (-(2**31), 2**31 - 1)
_TINY = float(np.finfo(np.float32).tiny)  # a smaller scale makes onnxruntime use 1 (and zero point 0)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True)
class QatScheme:
    """The int8 scheme to emulate. `activations` "uint8": asymmetric per tensor (what `Int8Static`
    makes); "int8": symmetric per tensor, zero point 0 (`Int8StaticSymmetric`). Weights are int8
    symmetric with one scale per output channel (`per_channel`) or one per tensor. `momentum`
    weights each training batch's min and max in the running range (0 keeps the first one)."""

    activations: Activations
    per_channel: bool = True
    momentum: float = 0.01

    def __post_init__(self) -> None:
        if self.activations not in ("uint8", "int8"):
            raise UserError(f"QAT activations {self.activations!r} are unknown: use 'uint8' or 'int8'")
        if not 0 <= self.momentum <= 1:
            raise UserError(f"QAT momentum must be between 0 and 1, got {self.momentum}")

    @property
    def quantize_bias(self) -> bool:
        """Int8Static puts the bias on int32; Int8StaticSymmetric leaves it float (quantize.py)."""
        return self.activations == "uint8"


def scheme_for(method: QuantMethod) -> QatScheme:
    """The QAT scheme that emulates one of quantize.py's methods."""
    if isinstance(method, Int8Dynamic):
        raise UserError("QAT emulates static int8 only (dynamic int8 quantizes activations at run time): use int8-static")
    if isinstance(method, Int8StaticSymmetric):  # first: it subclasses Int8Static
        return QatScheme("int8", method.per_channel)
    if isinstance(method, Int8Static):
        return QatScheme("uint8", method.per_channel)
    raise UserError(f"no QAT scheme for {type(method).__name__}: use int8-static or int8-static-symmetric")


def activation_qparams(lo: torch.Tensor, hi: torch.Tensor, activations: Activations) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32), each of shape (1,), of an observed range [lo, hi],
    as onnxruntime's compute_scale_zp makes them."""
    lo = torch.clamp(lo.detach().double(), max=0.0)  # the range always holds 0
    hi = torch.clamp(hi.detach().double(), min=0.0)
    if activations == "uint8":
        scale = (hi - lo) / 255
        zero_point = torch.round(-lo / torch.clamp(scale, min=_TINY))
    else:
        scale = 2 * torch.maximum(-lo, hi) / 254
        zero_point = torch.zeros_like(scale)
    tiny = scale < _TINY
    scale = torch.where(tiny, torch.ones_like(scale), scale)
    zero_point = torch.where(tiny, torch.zeros_like(zero_point), zero_point)
    return scale.float().reshape(1), zero_point.to(torch.int32).reshape(1)


def weight_scales(weight: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Symmetric int8 scales (float32) of `weight`: one per index of `axis`, or one (shape (1,))."""
    w = weight.detach().abs()
    absmax = w.amax() if axis is None else w.amax(dim=[d for d in range(w.dim()) if d != axis])
    scale = 2 * absmax.double() / 254
    return torch.where(scale < _TINY, torch.ones_like(scale), scale).float().reshape(-1)


class _Range(nn.Module):
    """A per-tensor range observer that fake-quantizes what passes through it.

    Training: the range is an exponential moving average of each batch's min and max, started from
    the first batch. Eval: the stored range, unchanged. Buffers, so state_dict, deepcopy, pickle and
    DDP's buffer broadcast carry it; ranks training shards all-reduce each batch's extremes. Never
    observed (e.g. budget.measure's probe): a pass-through.
    """

    def __init__(self, activations: Activations, momentum: float) -> None:
        super().__init__()
        self.activations, self.momentum = activations, momentum
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("batches", torch.zeros(()))  # float, not bool: every backend broadcasts it
        self.calibrating = False  # True only inside `calibrate`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self._observe(x, widen=True)
            return x
        if self.training:
            self._observe(x, widen=False)
        if not self.batches:
            return x
        scale, zero_point = self.qparams()
        qmin, qmax = (0, 255) if self.activations == "uint8" else (-128, 127)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)

    @torch.no_grad()
    def _observe(self, x: torch.Tensor, widen: bool) -> None:
        lo, hi = torch.aminmax(x.detach().float())
        if not widen and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Training on shards: every rank takes the whole batch's extremes, so the ranges stay
            # equal across ranks, as fit's early stopping needs (equal validation on every rank).
            extremes = torch.stack([-lo, hi])
            dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
            lo, hi = -extremes[0], extremes[1]
        if not self.batches:
            self.lo.copy_(lo)
            self.hi.copy_(hi)
        elif widen:  # onnxruntime's MinMax calibration: the least min, the greatest max
            torch.minimum(self.lo, lo, out=self.lo)
            torch.maximum(self.hi, hi, out=self.hi)
        else:
            self.lo.lerp_(lo, self.momentum)
            self.hi.lerp_(hi, self.momentum)
        self.batches += 1

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point of the stored range."""
        return activation_qparams(self.lo, self.hi, self.activations)


class _FakeQuantLayer(nn.Module):
    """One Conv/Linear whose input, weight and (where Int8Static quantizes it) bias are fake-quantized."""

    def __init__(self, layer: nn.Module, scheme: QatScheme) -> None:
        super().__init__()
        self.layer = layer
        self.inputs = _Range(scheme.activations, scheme.momentum)
        self.axis = 1 if isinstance(layer, _TRANSPOSED) else 0
        self.per_channel, self.quantize_bias = scheme.per_channel, scheme.quantize_bias

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        x = self.inputs(x)
        if self.inputs.calibrating:  # calibration runs the float model, as onnxruntime's does
            return self.layer(x, *args, **kwargs)
        return functional_call(self.layer, self.fake_params(), (x, *args), kwargs)

    def fake_params(self) -> dict[str, torch.Tensor]:
        """The weight, and the bias where it is quantized, as int8 (int32) values dequantized.
        torch's fake-quant ops pass gradients straight through inside the range."""
        weight, bias = self.layer.weight, self.layer.bias
        scale = weight_scales(weight, self.axis if self.per_channel else None)
        zeros = torch.zeros(scale.shape, dtype=torch.int32, device=weight.device)
        if self.per_channel:
            params = {"weight": torch.fake_quantize_per_channel_affine(weight, scale, zeros, self.axis, -128, 127)}
        else:
            params = {"weight": torch.fake_quantize_per_tensor_affine(weight, scale, zeros, -128, 127)}
        if bias is not None and self.quantize_bias and self.inputs.batches:
            bias_scale = (self.inputs.qparams()[0] * scale).expand(bias.shape).contiguous()
            zeros = torch.zeros(bias.shape, dtype=torch.int32, device=bias.device)
            params["bias"] = torch.fake_quantize_per_channel_affine(bias, bias_scale, zeros, 0, *_INT32)
        return params


class _FakeQuantModel(nn.Module):
    """The student with its layers wrapped and its output fake-quantized, as QDQ quantizes the
    output of the last Gemm/Conv."""

    def __init__(self, model: nn.Module, scheme: QatScheme) -> None:
        super().__init__()
        self.model = model
        self.outputs = _Range(scheme.activations, scheme.momentum)
        self.scheme = scheme

    def forward(self, *args: object, **kwargs: object) -> object:
        out = self.model(*args, **kwargs)
        return self.outputs(out) if isinstance(out, torch.Tensor) else out


def _wrappable(module: nn.Module) -> bool:
    # A grouped ConvTranspose has out_channels biases but out / groups axis-1 weight scales in
    # onnxruntime, so there is no one int8 form to emulate: it stays float.
    if type(module) in _TRANSPOSED:
        return module.groups == 1
    return type(module) in (*_CONVS, nn.Linear)


def _wrap(module: nn.Module, scheme: QatScheme) -> None:
    for name, child in module.named_children():
        if _wrappable(child):
            setattr(module, name, _FakeQuantLayer(child, scheme))
        else:
            _wrap(child, scheme)


def fake_quantized(model: nn.Module, scheme: QatScheme) -> nn.Module:
    """A deep copy of `model` whose Conv/Linear/ConvTranspose layers see int8 fake-quantized inputs
    and weights, and whose output is fake-quantized, as onnxruntime's static QDQ int8 model computes.

    Ranges follow the batches of training-mode forwards (`fit` trains it as it is); `calibrate` sets
    them as onnxruntime's calibration would. BatchNorm stays unfolded: onnxruntime folds it into the
    preceding Conv before quantizing, and per-channel symmetric scales follow that per-channel folding
    exactly (round(g * w / (|g| * s)) = sign(g) * round(w / s)), so the unfolded conv's weight grid
    is the folded one's. With one scale per tensor the folded grid differs: approximate there.
    """
    if any(isinstance(m, (_FakeQuantModel, _FakeQuantLayer)) for m in model.modules()):
        raise UserError("the model is already fake-quantized: pass the plain student")
    copied = copy.deepcopy(model)
    if _wrappable(copied):
        copied = _FakeQuantLayer(copied, scheme)
    else:
        _wrap(copied, scheme)
    return _FakeQuantModel(copied, scheme)


def unwrapped(model: nn.Module) -> nn.Module:
    """The plain student of a `fake_quantized` model: a deep copy with every wrapper replaced by its
    layer, carrying the trained weights, of the original class and with its state_dict keys."""
    plain = copy.deepcopy(model.model if isinstance(model, _FakeQuantModel) else model)
    if isinstance(plain, _FakeQuantLayer):
        return plain.layer
    _unwrap(plain)
    return plain


def _unwrap(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, _FakeQuantLayer):
            setattr(module, name, child.layer)
        else:
            _unwrap(child)


@contextlib.contextmanager
def calibrating(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every forward pass of a `fake_quantized` model runs it in float and in
    eval mode (BatchNorm on its running statistics) and widens each range to the least min and
    greatest max seen, as onnxruntime's MinMax calibration does; the ranges start afresh. The
    train/eval flags are restored after. Any loop over the calibration inputs can run in it."""
    ranges = [m for m in model.modules() if isinstance(m, _Range)]
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    for r in ranges:
        r.batches.zero_()
        r.calibrating = True
    try:
        with torch.no_grad():
            yield model
    finally:
        for r in ranges:
            r.calibrating = False
        for m, training in flags:
            m.training = training


def calibrate(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512) -> nn.Module:
    """Set every range of a `fake_quantized` model as onnxruntime's MinMax calibration would on `x`
    (see `calibrating`). Returns `model`; its eval outputs then emulate the int8 model onnxruntime
    makes calibrated on the same `x`."""
    x = torch.as_tensor(x)
    with calibrating(model):
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size])
    return model


@dataclass(frozen=True)
class QatResult:
    """The quantization-aware student's int8 file beside the post-training one, how it was
    trained, and whether it shipped (the run's QAT stage, `pipeline.qat`)."""

    int8: QuantResult
    method: str
    post_training_score: float
    post_training_kept_float: tuple[str, ...]
    # the fake-quantized student's validation score in PyTorch, at its best epoch
    trained_score: float
    best_epoch: int
    epochs_run: int
    lr: float
    seconds: float
    shipped: bool
    why: str
    # the trained student's fp32 ONNX, that `int8` was quantized from, and its weights
    # (torch.save of its state_dict): the files made for targets at int8 come from them
    fp32: Path | None = None
    weights: Path | None = None
    # op types the post-training int8 left in float graph-wide (QuantResult.float_ops)
    post_training_float_ops: tuple[str, ...] = ()
