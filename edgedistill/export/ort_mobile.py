"""ONNX -> ONNX Runtime Mobile: an .ort file plus the operator list of a minimal runtime build.

The conversion is onnxruntime's own (`onnxruntime.tools.convert_onnx_models_to_ort`), called as
a Python function; the result is loaded back with onnxruntime and compared with the source ONNX
on real inputs.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgedistill.errors import UserError
from edgedistill.export.onnx import load_onnx_checked
from edgedistill.export.parity import Parity, max_abs_err
from edgedistill.fileio import quiet, scratch_dir
from edgedistill.ortsession import Feed, feed_len, open_session, run_batched

# Max |.ort - .onnx| on the check inputs. Both files run the same optimized graph (the .onnx is
# optimized at load, the .ort was optimized at conversion), so only float re-association differs:
# measured 0 for int8 QDQ models (TinyCNN, MLP), 6e-8 and 3.3e-6 for fp32 TinyCNNs (logits up to
# 0.18 and 8.9). 1e-4 is the ONNX export's own parity tolerance, 30x above the worst of those.
DEFAULT_TOLERANCE = 1e-4

# "Fixed" bakes every optimization (QDQ groups fused into QLinearConv/QGemm, Conv+activation into
# FusedConv) into the file, which is what ORT Mobile's default CPU provider runs and what a
# minimal build needs: no optimizer code on the phone, and the config lists the fused kernels.
# "Runtime" is onnxruntime's advice only for NNAPI/CoreML (compiling providers that want the
# unfused QDQ groups); its fusions replay only when the app opts in.
_OPTIMIZATION_STYLE = "Fixed"
# Phones are ARM: the converter then leaves out the x86-only NCHWc layout (the file would not be
# portable) and sets QDQIsInt8Allowed, its ARM setting for int8 QDQ fusions.
_TARGET_PLATFORM = "arm"
# onnxruntime.tools' logger; it reports each config file it writes at INFO.
_CONVERTER_LOGGER = "ort_format_model.utils"
_X86 = frozenset({"x86_64", "amd64", "i386", "i686"})


@dataclass(frozen=True)
class OrtArtifact:
    """An .ort model, its required-operators config and its parity check against the ONNX file."""

    path: Path
    bytes: int
    ops_config: Path
    parity: Parity


def export_ort(
    onnx_path: Path, out: Path, check_inputs: Feed, tolerance: float = DEFAULT_TOLERANCE
) -> OrtArtifact:
    """Convert `onnx_path` to an ORT-format model at `out` and check it on `check_inputs` (one
    array, or arrays by input name).

    The required-operators config (the `--include_ops_by_config` input of a minimal ONNX Runtime
    build) is written beside it as `<stem>.required_operators.config`. Both files appear only
    when the conversion succeeded. A failed parity check does not raise: the artifact records it.
    """
    onnx_path, out = Path(onnx_path), Path(out)
    _check_arguments(onnx_path, out, check_inputs, tolerance)
    proto = load_onnx_checked(onnx_path)
    if platform.machine().lower() in _X86 and any(
        init.data_type == onnx.TensorProto.FLOAT16 for init in proto.graph.initializer
    ):
        # The converter assigns kernels on this host: x86's CPU provider has no fp16 Conv, Gemm
        # or Relu, so it casts to fp32 and folds the casts into fp32 weights, baked into the file.
        raise UserError(
            f"{onnx_path.name} is fp16, and an .ort made on this x86 host would run in fp32 (the "
            "CPU provider here has no fp16 kernels): convert the fp32 or int8 model instead"
        )
    ops_config = out.with_name(f"{out.stem}.required_operators.config")
    out.parent.mkdir(parents=True, exist_ok=True)
    # In out's directory, so the renames below are atomic; removed on exit, also on failure.
    with scratch_dir(out.parent, f".{out.name}.") as tmp:
        # Absolute, as the converter writes the model's path into the config's header.
        converted, config = _convert(onnx_path, Path(tmp).resolve())
        err = _parity_max_abs_err(onnx_path, converted, check_inputs)
        # The config's header names the model it came from: the final file, not the temporary one.
        config.write_text(config.read_text().replace(str(converted), out.name))
        os.replace(config, ops_config)  # config first: an .ort never appears without its config
        os.replace(converted, out)
    return OrtArtifact(
        path=out,
        bytes=out.stat().st_size,
        ops_config=ops_config,
        parity=Parity(err, tolerance),
    )


def _check_arguments(onnx_path: Path, out: Path, check_inputs: Feed, tolerance: float) -> None:
    if onnx_path.suffix.lower() != ".onnx":
        # The converter only picks up files named *.onnx.
        raise UserError(f"{onnx_path.name} is not named *.onnx: rename it so onnxruntime's converter accepts it")
    if out.suffix != ".ort":
        # onnxruntime recognises the ORT format by this suffix when it loads the file.
        raise UserError(f"{out.name} must end in .ort: name the output {out.stem}.ort")
    if feed_len(check_inputs) == 0:
        raise UserError("no check inputs to compare the .ort model on: the data split is empty")
    if tolerance < 0:
        raise UserError(f"the parity tolerance must be >= 0, got {tolerance}")


def _convert(onnx_path: Path, workdir: Path) -> tuple[Path, Path]:
    """Run onnxruntime's converter into `workdir`; return the .ort file and its config."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    from onnxruntime.tools.convert_onnx_models_to_ort import (  # slow import, only needed here
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    # Importing onnxruntime.tools calls logging.basicConfig(), which would make every library's
    # warnings print in our CLI; undo that.
    root.handlers[:] = handlers
    try:
        with quiet(_CONVERTER_LOGGER):
            convert_onnx_models_to_ort(
                onnx_path,
                output_dir=workdir,
                optimization_styles=[OptimizationStyle[_OPTIMIZATION_STYLE]],
                target_platform=_TARGET_PLATFORM,
            )
    except Exception as exc:  # onnxruntime raises several unrelated types
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"onnxruntime could not convert {onnx_path.name} to .ort ({detail}): check that the "
            "model runs with onnxruntime on the CPU"
        ) from exc
    (converted,) = workdir.glob("*.ort")
    (config,) = workdir.glob("*.required_operators.config")
    return converted, config


def _parity_max_abs_err(onnx_path: Path, ort_path: Path, check_inputs: Feed) -> float:
    """Max |.ort - .onnx| over the first output on `check_inputs`; inf when the shapes differ or
    either holds NaN or Inf."""
    want = run_batched(open_session(onnx_path), check_inputs)
    got = run_batched(open_session(ort_path), check_inputs)
    return max_abs_err(got, want)
