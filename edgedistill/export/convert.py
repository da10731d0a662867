"""`edgedistill export`: one model (.pt2, .onnx, or a run's student folder) to one artifact, outside a run.

The artifact is made by the same makers a run uses for its targets (`deploy`), so a file made here
is the file a run would ship.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from edgedistill.compress.quantize import QuantizeConfig, quantize
from edgedistill.errors import UserError
from edgedistill.export.deploy import DeployArtifact, Sources, deploy
from edgedistill.export.lint import LintResult, lint
from edgedistill.export.onnx import export_onnx, load_onnx_checked
from edgedistill.export.ort_mobile import export_ort
from edgedistill.export.tensorrt import TrtArtifact, TrtBuild, build_tensorrt
from edgedistill.fileio import atomic_path
from edgedistill.ortsession import open_session, run_batched
from edgedistill.teachers import TeacherConfig, load_teacher

Format = Literal["onnx", "ort", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8"]
_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "DynamicQuantizeLinear", "QLinearConv"}
_RANDOM_INPUTS = 16


@dataclass(frozen=True)
class ExportRequest:
    """What to export: `model` to `format` at `precision` into the folder `out`. `data` is a .npz
    with `x` (and optionally `y`): real inputs for parity checks and int8 calibration."""

    model: Path
    format: Format
    precision: Precision
    out: Path
    data: Path | None = None


@dataclass(frozen=True)
class ExportOutcome:
    """The artifact written, with its checks."""

    path: Path
    format: str
    precision: str
    bytes: int
    parity_max_abs_err: float | None
    parity_tolerance: float | None
    lint: tuple[LintResult, ...]
    build: TrtArtifact | None
    inputs: str

    @property
    def passed(self) -> bool:
        return self.parity_max_abs_err is None or self.parity_max_abs_err <= self.parity_tolerance


def export_model(req: ExportRequest) -> ExportOutcome:
    """Make one artifact from `req.model`; the sources it needs (fp32/int8 ONNX) are made in `req.out`."""
    req.out.mkdir(parents=True, exist_ok=True)
    fp32, int8 = _sources(req)
    x, y, described = _inputs(req, fp32 or int8)
    if fp32 is None and (req.precision != "int8" or req.format == "onnx"):
        if req.format == "onnx" and req.precision == "int8":
            final = _place(int8, req.out)
            return ExportOutcome(final, "onnx", "int8", final.stat().st_size, None, None, (), None, described)
        raise UserError(f"{req.model} is an int8 model: {req.format} {req.precision} needs the fp32 model")
    if fp32 is None:
        # An int8 model given as it is: TensorRT or .ort straight from it, nothing re-quantized.
        return _from_int8(req, int8, x, described)
    src = _sources_for(req, fp32, int8, x, y)
    if req.precision == "int8" and req.format != "tensorrt" and int8 is None:
        _require_data(req)
        int8 = quantize(
            fp32, req.out / "model.int8.onnx", QuantizeConfig().methods_for(fp32), src.calib_x, src.score, src.val_x
        ).path
        src = replace(src, int8=int8)
    if req.format == "onnx" and req.precision in ("fp32", "int8"):
        final = _place(fp32 if req.precision == "fp32" else int8, req.out)
        return ExportOutcome(final, "onnx", req.precision, final.stat().st_size, None, None, (), None, described)
    if req.format == "tensorrt" and req.precision == "int8":
        _require_data(req)
    made = deploy(src, {(req.format, req.precision): ()}).made
    return _outcome(made[0], described)


def _from_int8(req: ExportRequest, int8: Path, x: np.ndarray, described: str) -> ExportOutcome:
    if req.format == "ort":
        art = export_ort(int8, req.out / f"{int8.stem}.ort", x)
        return ExportOutcome(
            art.path, "ort", "int8", art.bytes, art.parity_max_abs_err, art.parity_tolerance,
            (lint(int8, "ort-mobile"),), None, described,
        )
    build = build_tensorrt(TrtBuild(int8, "int8"), req.out, timing_cache=req.out / "tensorrt.cache")
    path = build.engine if build.built else build.command_path
    return ExportOutcome(path, "tensorrt", "int8", path.stat().st_size, None, None, (lint(int8, "tensorrt"),), build, described)


def _sources_for(req: ExportRequest, fp32: Path, int8: Path | None, x: np.ndarray, y: np.ndarray | None) -> Sources:
    """Half the inputs calibrate, half check; scored on labels, or on agreement with fp32 without them."""
    half = max(1, len(x) // 2)
    calib_x, val_x = x[:half], x[half:] if len(x) > 1 else x
    labels = (y[half:] if len(x) > 1 else y) if y is not None else run_batched(open_session(fp32), val_x).argmax(axis=1)
    return Sources(
        fp32, int8, req.out, val_x, calib_x,
        lambda out: float((out.argmax(axis=1) == labels).mean()), QuantizeConfig().symmetric(),
    )


def _require_data(req: ExportRequest) -> None:
    if req.data is None:
        raise UserError("int8 from an fp32 model needs calibration inputs: pass --data inputs.npz (x, and y for accuracy)")


def _outcome(d: DeployArtifact, inputs: str) -> ExportOutcome:
    return ExportOutcome(
        d.path, d.format, d.precision, d.path.stat().st_size, d.parity_max_abs_err, d.parity_tolerance, d.lint, d.build, inputs
    )


def _sources(req: ExportRequest) -> tuple[Path | None, Path | None]:
    """(fp32 ONNX, int8 ONNX) to start from; either may be None."""
    model = req.model
    if model.is_dir():
        fp32, int8 = model / "model.onnx", model / "model.int8.onnx"
        if not fp32.is_file():
            raise UserError(f"{model} holds no model.onnx: give a run's student folder (runs/<name>/students/<tier>), a .onnx or a .pt2")
        return fp32, int8 if int8.is_file() else None
    if model.suffix == ".onnx":
        proto = load_onnx_checked(model)
        return (None, model) if any(n.op_type in _INT8_OPS for n in proto.graph.node) else (model, None)
    if model.suffix == ".pt2":
        return _from_pt2(req), None
    raise UserError(f"{model} is not a .onnx, a .pt2 or a run's student folder: give one of those")


def _from_pt2(req: ExportRequest) -> Path:
    module = load_teacher(TeacherConfig(path=str(req.model)))
    x = _data(req.data)[0] if req.data else None
    if x is None:
        raise UserError(f"exporting {req.model} needs example inputs: pass --data inputs.npz (an array x shaped as the model's input)")
    return export_onnx(module, x[:2], x[:_RANDOM_INPUTS * 4], req.out / "model.onnx").path


def _inputs(req: ExportRequest, onnx_path: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Real inputs from --data, else random ones of the graph's input shape (said in the outcome)."""
    if req.data is not None:
        x, y = _data(req.data)
        return x, y, f"{len(x)} inputs from {req.data}"
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim[1:]
    if any(not d.dim_value for d in dims):
        raise UserError(f"{onnx_path.name} has a symbolic non-batch input dimension: pass --data inputs.npz for its checks")
    shape = (_RANDOM_INPUTS, *(d.dim_value for d in dims))
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32), None, f"{_RANDOM_INPUTS} random normal inputs"


def _data(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays.files:
                raise UserError(f"{path} has no array x: save it with numpy.savez(path, x=inputs[, y=labels])")
            return arrays["x"].astype(np.float32), arrays["y"] if "y" in arrays.files else None
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz ({exc}): save it with numpy.savez(path, x=inputs)") from exc


def _place(source: Path, out: Path) -> Path:
    final = out / source.name
    if final.resolve() != source.resolve():
        with atomic_path(final) as tmp:
            shutil.copyfile(source, tmp)
    return final
