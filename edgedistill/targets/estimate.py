"""Latency prediction for a device we cannot reach: a graph's cost, the device's specs, and
(when there is one) a calibration fitted to measurements on that device.

The model is a per-node roofline. For each node that runs a kernel (`NodeCost.fused` is False):

    compute = flops / (peak_gflops[precision] · 1e9 · efficiency[op class])
    memory  = (bytes_read + bytes_written) / (bandwidth_gbs · 1e9)
    time    = max(compute, memory) + overhead

and the prediction is the sum over nodes. Uncalibrated, `bandwidth_gbs` is the profile's (DRAM)
figure; a calibration replaces it with the effective bandwidth it fitted, because the weights and
activations of edge-sized models mostly stay in cache, several times faster than DRAM.

Op classes:
- "conv": Conv and its quantized/fused forms, ConvTranspose — tiled, cache-friendly kernels;
- "gemm": Gemm, MatMul and quantized forms (also attention's batched products);
- "elementwise": one arithmetic op per element (Add, Relu, Q/DQ, ...): bound by memory in practice;
- "other": everything else: pooling, reductions, Softmax, normalisations, data movement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgedistill.errors import UserError
from edgedistill.targets.cost import CONV_OPS, CONV_TRANSPOSE_OPS, ELEMENTWISE_OPS, GEMM_OPS, GraphCost

OP_CLASSES = ("conv", "gemm", "elementwise", "other")

# Uncalibrated defaults. Tuned kernels (MLAS, XNNPACK, cuDNN) reach 50-90 % of peak on mid-sized
# layers (host-cpu's calibration suite: ~90 %) and less on tiny ones, so 0.5 for conv/gemm;
# elementwise and "other" kernels are simple loops, rarely vectorised as well, so 0.1.
DEFAULT_EFFICIENCY = {"conv": 0.5, "gemm": 0.5, "elementwise": 0.1, "other": 0.1}
# Per-kernel dispatch cost: onnxruntime's CPU executor spends ~2 µs per node (fitted on host-cpu);
# phones' slower cores about twice that; a GPU kernel launch about 10 µs. A neural accelerator
# (Apple's Neural Engine) has no public per-layer figure: assumed a GPU launch's until a
# calibration fitted on the device replaces it.
# mcu: LiteRT Micro's interpreter dispatches each kernel in a few hundred cycles at 480 MHz (assumed, uncalibrated).
DEFAULT_OVERHEAD_MS = {"cpu": 0.002, "mobile-cpu": 0.004, "gpu": 0.010, "npu": 0.010, "mcu": 0.001}
# Uncalibrated, the suite on host-cpu came out within 3x for all but one model: the profile's DRAM
# bandwidth makes cache-resident, memory-bound graphs (8 MB of fp32 weights) up to 8x too slow.
# So the band is a factor of 3, and it errs towards predicting too slow.
DEFAULT_ERROR_BAND = 2.0


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """A predicted latency, never to be shown as a measured one.

    The band is multiplicative: low = p50 / (1 + error_band), high = p50 · (1 + error_band).
    `calibration` names the calibration used ("<target> <created>"), or None for the defaults.
    """

    target: str
    p50_ms: float
    low_ms: float
    high_ms: float
    source: str = "predicted"
    profile: str
    calibration: str | None
    error_band: float


@dataclass(frozen=True)
class Calibration:
    """Fitted roofline parameters for one target and how well they fit its models (fitted by
    `calibration.fit`, kept by `calibration.save` and `calibration.load`).

    `bandwidth_gbs` is the effective memory bandwidth fitted (caches included).
    `median_abs_error` is the median of |predicted / measured - 1| over `models`; `worst_ratio`
    the largest max(predicted / measured, measured / predicted). `created` is ISO 8601 UTC.
    """

    target: str
    efficiency: dict[str, float]
    overhead_ms: float
    bandwidth_gbs: float
    models: tuple[str, ...]
    median_abs_error: float
    worst_ratio: float
    created: str


@dataclass(frozen=True)
class NodeTerms:
    """One running node's roofline inputs: its op class, its compute time in ms at 100 %
    efficiency, and the bytes it moves."""

    op_class: str
    compute_ms: float
    bytes: int


def op_class(op: str) -> str:
    """The op class of an ONNX op type (see the module docstring)."""
    if op in CONV_OPS or op in CONV_TRANSPOSE_OPS:
        return "conv"
    if op in GEMM_OPS:
        return "gemm"
    if op in ELEMENTWISE_OPS:
        return "elementwise"
    return "other"


def node_terms(cost: GraphCost, target: Any) -> tuple[NodeTerms, ...]:
    """The roofline terms of every node of `cost` that runs a kernel on `target`."""
    specs = _specs(target)
    terms = []
    for node in cost.nodes:
        if node.fused:
            continue  # no kernel of its own: its work is part of its neighbour's
        peak = specs.peak_gflops.get(node.precision)
        if not peak or peak <= 0:
            raise UserError(
                f"target {target.name!r} has no peak_gflops for {node.precision}: add it to the profile's specs"
            )
        terms.append(
            NodeTerms(
                op_class=op_class(node.op),
                compute_ms=node.flops / (peak * 1e9) * 1e3,
                bytes=node.bytes_read + node.bytes_written,
            )
        )
    return tuple(terms)


def roofline_ms(
    terms: tuple[NodeTerms, ...], efficiency: dict[str, float], overhead_ms: float, bandwidth_gbs: float
) -> float:
    """Predicted ms of a graph from its node terms and the model's parameters."""
    per_byte_ms = 1e3 / (bandwidth_gbs * 1e9)
    return sum(max(t.compute_ms / efficiency[t.op_class], t.bytes * per_byte_ms) + overhead_ms for t in terms)


def predict(cost: GraphCost, target: Any, calibration: Calibration | None = None) -> Prediction:
    """Predict the p50 latency of the graph `cost` on `target`, with its error band.

    With a `calibration` for this target, its fitted efficiencies and overhead are used and the
    band is the worst ratio it saw on its own models; without one, conservative defaults and a
    factor-of-3 band.
    """
    if calibration is not None:
        if calibration.target != target.name:
            raise UserError(
                f"calibration is for {calibration.target!r}, not {target.name!r}: calibrate {target.name} first"
            )
        efficiency, overhead, bandwidth = calibration.efficiency, calibration.overhead_ms, calibration.bandwidth_gbs
        band, label = calibration.worst_ratio - 1.0, f"{calibration.target} {calibration.created}"
    else:
        efficiency = DEFAULT_EFFICIENCY
        overhead = DEFAULT_OVERHEAD_MS.get(target.kind, DEFAULT_OVERHEAD_MS["cpu"])
        bandwidth = _specs(target).bandwidth_gbs
        band, label = DEFAULT_ERROR_BAND, None
    p50 = roofline_ms(node_terms(cost, target), efficiency, overhead, bandwidth)
    return Prediction(
        target=target.name,
        p50_ms=p50,
        low_ms=p50 / (1.0 + band),
        high_ms=p50 * (1.0 + band),
        profile=target.name,
        calibration=label,
        error_band=band,
    )


def _specs(target: Any) -> Any:
    specs = getattr(target, "specs", None)
    if specs is None or not getattr(specs, "peak_gflops", None) or not getattr(specs, "bandwidth_gbs", 0) > 0:
        raise UserError(
            f"target {target.name!r} has no specs (peak_gflops, bandwidth_gbs): add them to its profile to predict latency"
        )
    return specs
