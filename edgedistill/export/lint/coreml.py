"""Core ML lint: will an iPhone load this `.mlpackage`? Read from the package itself.

An mlprogram names the opset it was written for, and an iPhone on that iOS loads only the ops of
it. The reference is the iOS 17 opset (the deployment target `export.coreml` converts for) as
coremltools' MIL op registry holds it; each finding is one operation outside that opset, named as
the package names it. Core ML itself (macOS only) is not needed to check this.
"""

from __future__ import annotations

from pathlib import Path

from edgedistill.export import coreml
from edgedistill.export.lint.base import Finding, LintJob, LintResult, register_linter

RUNTIME = "coreml"
SUFFIX = ".mlpackage"


@register_linter(RUNTIME, SUFFIX)
def lint_coreml(job: LintJob) -> LintResult:
    """The ops of the package at `job.path` that the iOS 17 mlprogram opset lacks."""
    return lint_result(job.path, coreml.check_package(job.path))


def lint_result(path: Path, check: coreml.CoreMLCheck) -> LintResult:
    """The lint of a package from its structure check (`coreml.check_package`), so a package
    just made and checked is not read again: one finding per operation outside the opset."""
    findings = tuple(_outside(node, op) for node, op in check.unsupported_nodes)
    return LintResult(RUNTIME, path, reference(), findings)


def reference() -> str:
    """What the lint checks against: the opset and the coremltools that registers it."""
    import coremltools as ct

    return f"{coreml.OPSET} mlprogram opset of coremltools {ct.__version__} (SSAOpRegistry)"


def _outside(node: str, op: str) -> Finding:
    return Finding(
        node, op, coreml.OPSET,
        f"{op} is not an op of the {coreml.OPSET} mlprogram opset, so an iPhone on iOS 17 cannot load it: "
        f"rewrite the PyTorch layer that lowers to {op} with ops the opset has (conv, linear, matmul, "
        "elementwise), or convert for the later iOS that added it and raise the app's deployment target",
    )
