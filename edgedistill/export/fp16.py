"""fp32 ONNX -> fp16 ONNX for GPUs, checked against the fp32 model on real inputs.

The conversion is onnxruntime's (`onnxruntime.transformers.float16`), the converter the field
uses; the check runs both models with onnxruntime on the CPU (slow in fp16, but exact enough).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgedistill.errors import UserError
from edgedistill.export.onnx import load_onnx_checked
from edgedistill.export.parity import Parity, max_abs_err
from edgedistill.fileio import atomic_path, quiet
from edgedistill.ortsession import Feed, feed_len, open_session, run_batched

# The tolerance is relative to the output's scale: max |fp16 - fp32| <= tolerance * max |fp32|.
# An absolute bound is fragile in fp16, whose error grows with the magnitude of the values: the
# same conversion gave 4.7e-5 on an untrained TinyCNN (logits up to 0.18) and 3e-3 on the trained
# MLP (logits up to 17). Relative to the scale the measured errors are 1.8e-4 (trained MLP),
# 2.6e-4 and 3.2e-4 (TinyCNN untrained and trained) with fp32 inputs/outputs, and 5e-4 to 1e-3
# without: 0.4 to 2 units of fp16 rounding (2^-11 = 4.9e-4). 1e-2 (about 20 units) leaves room
# for deeper students, while a real defect (an overflow to inf, a layer cast wrongly) errs by a
# good fraction of the scale.
DEFAULT_TOLERANCE = 1e-2

# Op types that only int8 models contain (QDQ, dynamic and QOperator formats), besides QLinear*.
_QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QGemm"}
)
# onnxruntime's fp16 converter logs (and warns about values it clamps to the fp16 range) here.
_CONVERTER_LOGGER = "onnxruntime.transformers.float16"


@dataclass(frozen=True)
class Fp16Artifact:
    """An fp16 ONNX file and its parity check against the fp32 model.

    `parity.max_abs_err` is max |fp16 - fp32| over the check inputs and `output_scale` is
    max |fp32| over the same outputs. `parity.tolerance` is absolute, like every artifact's:
    the relative tolerance `to_fp16` was given times `output_scale`.
    """

    path: Path
    bytes: int
    keep_io_types: bool
    parity: Parity
    output_scale: float


def quantized_ops(graph: onnx.GraphProto) -> set[str]:
    """The op types of `graph` that mark it as an int8 model (QDQ, dynamic or QOperator)."""
    return {
        node.op_type
        for node in graph.node
        if node.op_type in _QUANTIZED_OPS or node.op_type.startswith("QLinear")
    }


def to_fp16(
    onnx_path: Path,
    out: Path,
    check_inputs: Feed,
    keep_io_types: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Fp16Artifact:
    """Convert the fp32 model at `onnx_path` to fp16, write it to `out` and check it.

    `tolerance` is relative: the check passes when max |fp16 - fp32| <= tolerance * max |fp32|
    over the outputs on `check_inputs` (one array, or arrays by input name). With `keep_io_types`
    the float inputs and outputs stay float32 (Cast nodes at the edges), so callers feed and read
    the same arrays as for the fp32 model.
    Ops onnxruntime knows to be unsafe in fp16 stay in fp32. A failed parity check does not
    raise: the artifact records it.
    """
    onnx_path, out = Path(onnx_path), Path(out)
    if feed_len(check_inputs) == 0:
        raise UserError("no check inputs to compare the fp16 model on: the data split is empty")
    if tolerance < 0:
        raise UserError(f"the parity tolerance must be >= 0, got {tolerance}")
    proto = load_onnx_checked(onnx_path)
    quantized = quantized_ops(proto.graph)
    if quantized:
        raise UserError(
            f"{onnx_path.name} is an int8 model ({', '.join(sorted(quantized))}): fp16 applies to "
            "fp32 models; convert the fp32 ONNX file instead"
        )
    # Slow imports, only needed here.
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    with quiet(_CONVERTER_LOGGER):
        half = OnnxModel(convert_float_to_float16(proto, keep_io_types=keep_io_types))
        # The converter appends the input Casts after their consumers; the ONNX checker (and
        # TensorRT's parser) want the nodes in topological order.
        half.topological_sort(is_deterministic=True)
    with atomic_path(out) as tmp:
        onnx.save_model(half.model, str(tmp), save_as_external_data=False)
        load_onnx_checked(tmp)
        err, scale = _parity(onnx_path, tmp, check_inputs)
    return Fp16Artifact(
        path=out,
        bytes=out.stat().st_size,
        keep_io_types=keep_io_types,
        parity=Parity(err, tolerance * scale),
        output_scale=scale,
    )


def _parity(fp32_path: Path, fp16_path: Path, check_inputs: Feed) -> tuple[float, float]:
    """(max |fp16 - fp32|, max |fp32|) over the first output; the error is inf when the shapes
    differ or fp16 overflowed."""
    want = run_batched(open_session(fp32_path), check_inputs).astype(np.float64)
    got = run_batched(open_session(fp16_path), check_inputs).astype(np.float64)
    return max_abs_err(got, want), float(np.max(np.abs(want)))
