"""Will this file run on the device's runtime? Answered here, before a device is reached.

One linter per runtime, registered by name in `base` with the kind of file it checks: the ONNX
file a converter takes (`tensorrt`, `ort-mobile`: loaded, checked and shape-inferred once, for
tensor dtypes), or the converted file itself (`coreml`: an `.mlpackage`; `litert` and
`litert-micro`: a `.tflite`). `lint(path, runtime)` hands the file to the runtime's linter. Every linter checks against a named, shipped reference (a
support matrix, an operator config, an opset) and says which in `LintResult.reference`.

The linters (`ort_mobile`, `tensorrt`, `coreml`, `litert`) import `base` and at most their
format's own module; this module imports them, so importing the package registers every runtime.
"""

from __future__ import annotations

from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.export.lint import coreml, litert, ort_mobile, tensorrt  # noqa: F401 - imported so they register
from edgedistill.export.lint.base import LINTERS, ONNX_SUFFIX, Finding, LintJob, LintResult, register_linter

__all__ = ["Finding", "LintResult", "lint", "register_linter", "runtimes"]


def runtimes(suffix: str | None = None) -> tuple[str, ...]:
    """The runtimes a linter is registered for, sorted; with `suffix`, those whose linter checks
    files ending so (".onnx": the linters of an ONNX file)."""
    return tuple(sorted(r for r, entry in LINTERS.items() if suffix is None or entry.suffix == suffix))


def lint(path: Path, runtime: str, ops_config: Path | None = None) -> LintResult:
    """Check the file at `path` against what `runtime` can convert or run.

    `ops_config` is a required-operators config for runtimes built from one (ort-mobile);
    without it the runtime's shipped default is used. Bad files, files of another runtime and
    unknown runtimes raise UserError; an unconvertible model does not raise: its findings are in
    the result.
    """
    if runtime not in LINTERS:
        raise UserError(f"unknown runtime {runtime!r} for lint: use one of {', '.join(runtimes())}")
    path, entry = Path(path), LINTERS[runtime]
    if path.suffix != entry.suffix:
        _refuse_other_kind(path, runtime, entry.suffix)
    return entry.check(LintJob(path=path, ops_config=ops_config))


def _refuse_other_kind(path: Path, runtime: str, suffix: str) -> None:
    """Raise UserError for a file `runtime`'s linter (of `suffix` files) does not check. An ONNX
    linter reads any file as ONNX (its parser says if it is not), except one another linter owns."""
    if suffix != ONNX_SUFFIX:
        raise UserError(f"the {runtime} linter checks {suffix} files, not {path.name}: give one")
    owner = next((r for r, e in LINTERS.items() if e.suffix == path.suffix), None)
    if owner is not None:
        raise UserError(f"{path.name} is linted for {owner}, not {runtime}: pass --runtime {owner}")
