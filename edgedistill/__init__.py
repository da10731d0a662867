"""edgedistill: one teacher to distilled, quantized, exported students that fit a budget on named devices.

The public API: `run(load_config(path), out)` is what `edgedistill run` does. Names are imported on
first use, so `edgedistill --help` does not pay for importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Budget": "edgedistill.compress.budget",
    "Footprint": "edgedistill.compress.budget",
    "measure": "edgedistill.compress.budget",
    "DistillConfig": "edgedistill.compress.distill",
    "fit": "edgedistill.compress.distill",
    "teacher_outputs": "edgedistill.compress.distill",
    "Int8Dynamic": "edgedistill.compress.quantize",
    "Int8Static": "edgedistill.compress.quantize",
    "QuantizeConfig": "edgedistill.compress.quantize",
    "quantize": "edgedistill.compress.quantize",
    "search": "edgedistill.compress.search",
    "Custom": "edgedistill.compress.students",
    "Family": "edgedistill.compress.students",
    "HFShrink": "edgedistill.compress.students",
    "Prune": "edgedistill.compress.students",
    "Scale": "edgedistill.compress.students",
    "HFModel": "edgedistill.hf.model",
    "load_hf": "edgedistill.hf.model",
    "export_hf": "edgedistill.hf.export",
    "QueryTeacherConfig": "edgedistill.query",
    "query_teacher": "edgedistill.query",
    "serve": "edgedistill.query",
    "load_recorded": "edgedistill.recorded",
    "RunConfig": "edgedistill.config",
    "load_config": "edgedistill.config",
    "UserError": "edgedistill.errors",
    "OnnxExport": "edgedistill.export.onnx",
    "export_onnx": "edgedistill.export.onnx",
    "RunResult": "edgedistill.pipeline",
    "Devices": "edgedistill.pipeline",
    "run": "edgedistill.pipeline",
    "LocalRunner": "edgedistill.targets.runners.local",
    "TeacherConfig": "edgedistill.teachers",
    "load_teacher": "edgedistill.teachers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgedistill' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
