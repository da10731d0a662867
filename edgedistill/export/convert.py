"""`edgedistill export`: one model (.pt2, .onnx, or a run's student folder) to one artifact, outside a run.

The artifact is made by the same makers a run uses for its targets (`deploy`), so a file made here
is the file a run would ship.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from edgedistill.compress.budget import Precision
from edgedistill.compress.quantize import QuantizeConfig, quantize
from edgedistill.errors import UserError
from edgedistill.export.deploy import DeployArtifact, Sources, deploy
from edgedistill.export.formats import OnnxFiles, format_for
from edgedistill.export.fp16 import quantized_ops
from edgedistill.export.lint import LintResult
from edgedistill.export.onnx import export_onnx, load_onnx_checked
from edgedistill.export.parity import Parity
from edgedistill.export.tensorrt import TrtArtifact
from edgedistill.fileio import atomic_path, file_bytes
from edgedistill.ortsession import open_session, run_batched
from edgedistill.teachers import load_teacher, parse_teacher

_RANDOM_INPUTS = 16
# The symbolic batch axis given to a file exported with a fixed batch (as `export_onnx` names it).
_BATCH_AXIS = "batch"


@dataclass(frozen=True)
class ExportRequest:
    """What to export: `model` to `format` (a registered format, `format_names()`) at `precision`
    into the folder `out`. `data` is a .npz with `x` (and optionally `y`): real inputs for parity
    checks and int8 calibration."""

    model: Path
    format: str
    precision: Precision
    out: Path
    data: Path | None = None

    def __post_init__(self) -> None:
        # Checked against the registry here, so a bad pair fails before anything is written.
        format_for(self.format).require(self.precision)


@dataclass(frozen=True)
class ExportOutcome:
    """The artifact written, with its checks."""

    path: Path
    format: str
    precision: str
    bytes: int
    parity: Parity
    lint: tuple[LintResult, ...]
    build: TrtArtifact | None
    inputs: str
    notes: tuple[str, ...] = ()


def export_model(req: ExportRequest) -> ExportOutcome:
    """Make one artifact from `req.model`; the sources it needs (fp32/int8 ONNX) are made in `req.out`.
    A file with a fixed batch is made from a copy with a dynamic one (said in the outcome's notes)."""
    _make_folder(req.out)
    entry = format_for(req.format)
    given = _sources(req)
    x, y, described = _inputs(req, given[0] or given[1])
    fp32, int8 = (_with_dynamic_batch(path, x, req.out) if path else None for path in given)
    notes = tuple(
        f"{old.name} has a fixed batch: made from {new.name}, its graph with a dynamic batch axis (checked to give the same outputs)"
        for old, new in zip(given, (fp32, int8)) if old != new
    )
    if fp32 is None and req.precision != "int8":
        raise UserError(f"{req.model} is an int8 model: {req.format} {req.precision} needs the fp32 model")
    if req.precision == "int8" and fp32 is not None and (int8 is None or entry.symmetric_int8):
        _require_data(req)  # int8 will be calibrated from fp32: random inputs would not do
    src = _sources_for(req, fp32, int8, x, y)
    if req.precision == "int8" and int8 is None and not entry.symmetric_int8:
        int8 = quantize(
            fp32, req.out / "model.int8.onnx", QuantizeConfig().methods_for(fp32), src.calib_x, src.score, src.val_x
        ).path
        src = replace(src, int8=int8)
    if req.precision in entry.staged:
        # The run's own ONNX files (export and quantize stages): placed in the folder as they are.
        final = _place(OnnxFiles(src).at(req.precision), req.out)
        return ExportOutcome(final, req.format, req.precision, file_bytes(final), Parity.unchecked(), (), None, described, notes)
    done = deploy(src, {(req.format, req.precision): ()})
    if not done.made:
        raise UserError(f"{req.format} {req.precision} was not made: {done.skipped[0].reason}")
    return _outcome(done.made[0], described, notes)


def _make_folder(out: Path) -> None:
    """Create the folder the files are written into; a file in its place is one line."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: export writes its files into a folder; give a folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {out} ({exc.strerror}): give another --out") from exc


def _with_dynamic_batch(path: Path, x: np.ndarray, out: Path) -> Path:
    """`path` when its batch axis is dynamic; else a copy in `out` whose batch axis is, checked
    to give the outputs `path` gives. The parity checks and int8 calibration run many inputs at
    once, which a graph fixed at batch 1 refuses."""
    proto = onnx.load(str(path))
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]
    first = inputs[0].type.tensor_type.shape.dim if inputs else ()
    if not first or not first[0].dim_value:
        return path
    batch = first[0].dim_value
    for value in (*inputs, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_value == batch:
            dims[0].dim_param = _BATCH_AXIS  # a dim is a size or a name: naming it drops the size
    del proto.graph.value_info[:]  # shapes inferred at the fixed batch would contradict the new axis
    copy = out / f"{path.stem}.dynamic-batch.onnx"
    with atomic_path(copy) as tmp:
        onnx.save(proto, str(tmp))
    _check_same_outputs(path, copy, batch, x)
    return copy


def _check_same_outputs(path: Path, copy: Path, batch: int, x: np.ndarray) -> None:
    """Raise UserError (removing `copy`) unless `copy` run on 2 x `batch` inputs at once gives what
    `path` gives on them `batch` at a time: a graph may hold its batch in a reshape."""
    probe = np.resize(x, (2 * batch, *x.shape[1:]))
    want = run_batched(open_session(path), probe, batch)
    try:
        got = _run_quietly(copy, probe)
    except Exception as exc:  # onnxruntime raises several unrelated types
        copy.unlink(missing_ok=True)
        raise UserError(_fixed_batch_error(path, batch, "fails")) from exc
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
        copy.unlink(missing_ok=True)
        raise UserError(_fixed_batch_error(path, batch, "gives other outputs"))


def _run_quietly(path: Path, x: np.ndarray) -> np.ndarray:
    """The first output of `path` on `x` in one batch, with onnxruntime's own log off: it would
    print a failing node's error beside the one line the caller says."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return run_batched(session, x, len(x))


def _fixed_batch_error(path: Path, batch: int, why: str) -> str:
    return (
        f"{path.name} has a fixed batch of {batch} that its graph relies on (with a dynamic batch axis it {why} "
        f"at batch {2 * batch}): re-export it with a dynamic batch axis"
    )


def _sources_for(req: ExportRequest, fp32: Path | None, int8: Path | None, x: np.ndarray, y: np.ndarray | None) -> Sources:
    """Half the inputs calibrate, half check; scored on labels, or on agreement with the given
    model (fp32, else the int8 one) without them."""
    half = max(1, len(x) // 2)
    calib_x, val_x = x[:half], x[half:] if len(x) > 1 else x
    reference = fp32 or int8
    labels = (y[half:] if len(x) > 1 else y) if y is not None else run_batched(open_session(reference), val_x).argmax(axis=1)
    return Sources(
        fp32, int8, req.out, val_x, calib_x,
        lambda out: float((out.argmax(axis=1) == labels).mean()), QuantizeConfig().symmetric(),
        timing_cache=req.out / "tensorrt.cache", model=_torch_model(req),
    )


def _torch_model(req: ExportRequest) -> nn.Module | None:
    """The model in PyTorch, for formats made by torch.export, where the request names one: a
    run's student folder (its student.pt) or a .pt2 program; None for an ONNX file."""
    if req.model.is_dir() and (req.model / "student.pt").is_file():
        return torch.load(req.model / "student.pt", weights_only=False)
    if req.model.suffix == ".pt2":
        return load_teacher(parse_teacher(str(req.model)))
    return None


def _require_data(req: ExportRequest) -> None:
    if req.data is None:
        raise UserError("int8 from an fp32 model needs calibration inputs: pass --data inputs.npz (x, and y for accuracy)")


def _outcome(d: DeployArtifact, inputs: str, notes: tuple[str, ...]) -> ExportOutcome:
    return ExportOutcome(d.path, d.format, d.precision, file_bytes(d.path), d.parity, d.lint, d.build, inputs, notes + d.notes)


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
        return (None, model) if quantized_ops(proto.graph) else (model, None)
    if model.suffix == ".pt2":
        return _from_pt2(req), None
    raise UserError(f"{model} is not a .onnx, a .pt2 or a run's student folder: give one of those")


def _from_pt2(req: ExportRequest) -> Path:
    module = load_teacher(parse_teacher(str(req.model)))
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
