"""torch -> ONNX: declarative, simplified, written atomically and always checked against torch."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from torch import nn

from edgedistill.errors import UserError
from edgedistill.export.parity import Parity, max_abs_err
from edgedistill.fileio import atomic_path, quiet
from edgedistill.ortsession import open_session, run_batched
from edgedistill.tasks.heads import join

_BATCH_DIM = "batch"
_PARITY_BATCH = 256


@dataclass(frozen=True)
class OnnxExport:
    """How to export: names, opset, dynamic batch axis, simplification and parity tolerance.

    With `dynamic_batch=False` the graph is exported for batch 1, the usual deployment batch.
    """

    opset: int = 18
    input_name: str = "input"
    # One name per output of the model (a teacher with several outputs keeps each one's name).
    output_names: tuple[str, ...] = ("output",)
    dynamic_batch: bool = True
    simplify: bool = True
    parity_tolerance: float = 1e-4


@dataclass(frozen=True)
class OnnxArtifact:
    """An exported ONNX file and the result of its parity check against torch."""

    path: Path
    bytes: int
    opset: int
    simplified: bool
    parity: Parity


def export_onnx(
    model: nn.Module,
    sample: np.ndarray,
    check_inputs: np.ndarray,
    out: Path,
    cfg: OnnxExport = OnnxExport(),
) -> OnnxArtifact:
    """Export `model` to `out` as one self-contained ONNX file and check it against torch.

    `sample` (batch, ...) fixes the input shape and dtype; `check_inputs` are real inputs on
    which ONNX Runtime and torch are compared. A failed parity check does not raise: the
    artifact records it and the caller decides (`OnnxArtifact.parity`).
    """
    out = Path(out)
    if sample.ndim < 1 or len(sample) == 0 or len(check_inputs) == 0:
        raise UserError("export needs a non-empty sample and check inputs with a batch axis first")
    model = copy.deepcopy(model).eval()  # never touch the caller's model or its train/eval mode
    proto = _to_onnx(model, _export_sample(sample, cfg.dynamic_batch), cfg)
    simplified = _simplify(proto, cfg) if cfg.simplify else None
    proto = simplified or proto
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        # One file: weights embedded, so the artifact can be copied to a device on its own.
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        load_onnx_checked(tmp)
        err = _parity_max_abs_err(model, tmp, check_inputs, cfg.dynamic_batch)
    return OnnxArtifact(
        path=out,
        bytes=out.stat().st_size,
        opset=cfg.opset,
        simplified=simplified is not None,
        parity=Parity(err, cfg.parity_tolerance),
    )


def load_onnx_checked(path: Path) -> onnx.ModelProto:
    """Load an ONNX file and run the ONNX checker on it; bad files raise UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist: check the path or export the model first")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path.name} is not a valid ONNX file ({detail}): re-export it") from exc
    if not proto.graph.node:
        raise UserError(f"{path.name} is not a valid ONNX file (its graph is empty): re-export it")
    return proto


def _export_sample(sample: np.ndarray, dynamic_batch: bool) -> torch.Tensor:
    """The tracing input: batch >= 2 when dynamic (torch.export specialises sizes 0 and 1)."""
    if not dynamic_batch:
        return torch.from_numpy(np.ascontiguousarray(sample[:1]))
    if len(sample) < 2:
        sample = np.repeat(sample, 2, axis=0)
    return torch.from_numpy(np.ascontiguousarray(sample))


def _to_onnx(model: nn.Module, sample: torch.Tensor, cfg: OnnxExport) -> onnx.ModelProto:
    """Run the dynamo exporter quietly and return its ModelProto."""
    dynamic_shapes = ({0: torch.export.Dim(_BATCH_DIM)},) if cfg.dynamic_batch else None
    try:
        with quiet("torch.onnx"):
            program = torch.onnx.export(
                model,
                (sample,),
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                input_names=[cfg.input_name],
                output_names=list(cfg.output_names),
                opset_version=cfg.opset,
                verbose=False,
                optimize=True,
                external_data=False,
            )
    except Exception as exc:  # the exporter raises many types; the user sees one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"torch.onnx.export failed ({detail}): make the model traceable by torch.export "
            "or pass the teacher as an ONNX file"
        ) from exc
    return program.model_proto


def _simplify(proto: onnx.ModelProto, cfg: OnnxExport) -> onnx.ModelProto | None:
    """Simplify with onnxslim; None (keep the exported graph) if that fails or changes the contract.

    Simplification is an optimisation, so a failure of it must not stop the export.
    """
    import onnxslim  # imported late: it is slow to import and only needed here

    try:
        with quiet("torch.onnx"):
            slim = onnxslim.slim(copy.deepcopy(proto))
    except Exception:  # onnxslim raises arbitrary types on graphs it cannot handle
        return None
    opset = next((o.version for o in slim.opset_import if o.domain in ("", "ai.onnx")), None)
    dims = slim.graph.input[0].type.tensor_type.shape.dim
    if opset != cfg.opset or (cfg.dynamic_batch and dims[0].dim_param != _BATCH_DIM):
        return None
    return slim


def _parity_max_abs_err(
    model: nn.Module, path: Path, check_inputs: np.ndarray, dynamic_batch: bool
) -> float:
    """Max |torch - onnxruntime| over every output on `check_inputs`; Inf when the shapes
    differ or either holds NaN or Inf."""
    batch = _PARITY_BATCH if dynamic_batch else 1
    session = open_session(path)
    got = run_batched(session, check_inputs, batch_size=batch)
    del session  # release the file before it is renamed
    with torch.no_grad():
        want = np.concatenate(
            [
                join(model(torch.from_numpy(np.ascontiguousarray(check_inputs[i : i + batch])))).detach().cpu().numpy()
                for i in range(0, len(check_inputs), batch)
            ]
        )
    return max_abs_err(got, want)
