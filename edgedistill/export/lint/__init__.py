"""Will this ONNX file convert on the device's runtime? Answered here, before a device is reached.

One linter per runtime, registered by name in `base`; `lint(path, runtime)` loads and checks the
file once, runs ONNX shape inference (for tensor dtypes) and hands it to the runtime's linter.
Every linter checks against a named, shipped reference (a support matrix or an operator config)
and says which in `LintResult.reference`.

The linters (`ort_mobile`, `tensorrt`) import `base` only; this module imports them, so importing
the package registers every runtime.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgedistill.errors import UserError
from edgedistill.export.lint import ort_mobile, tensorrt  # noqa: F401 - imported so they register
from edgedistill.export.lint.base import LINTERS, Finding, LintJob, LintResult, register_linter
from edgedistill.export.onnx import load_onnx_checked

__all__ = ["Finding", "LintResult", "lint", "register_linter", "runtimes"]


def runtimes() -> tuple[str, ...]:
    """The runtimes a linter is registered for, sorted."""
    return tuple(sorted(LINTERS))


def lint(path: Path, runtime: str, ops_config: Path | None = None) -> LintResult:
    """Check the ONNX file at `path` against what `runtime` can convert.

    `ops_config` is a required-operators config for runtimes built from one (ort-mobile);
    without it the runtime's shipped default is used. Bad files and unknown runtimes raise
    UserError; an unconvertible model does not raise: its findings are in the result.
    """
    if runtime not in LINTERS:
        raise UserError(f"unknown runtime {runtime!r} for lint: use one of {', '.join(runtimes())}")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder: give the .onnx file in it to lint, such as {path / 'model.onnx'}")
    model = load_onnx_checked(path)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, RuntimeError):
        pass  # dtypes stay unknown where inference fails; those checks are then skipped
    return LINTERS[runtime](LintJob(path=path, model=model, ops_config=ops_config))
