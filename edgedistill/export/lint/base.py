"""What every linter shares: the result types, the registry of linters by runtime, and the
helpers that walk a model the way a runtime imports it.

Most linters check the ONNX file a converter takes; a linter registered with another `suffix`
checks the converted file itself (Core ML's `.mlpackage`), and never has it parsed as ONNX.

The linters import this module, never the package's `__init__`, which imports them so that they
register: so the registry has no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:  # importlib.resources.abc is 3.11+; only the annotation needs it
    from importlib.resources.abc import Traversable

from edgedistill.errors import UserError
from edgedistill.export.onnx import load_onnx_checked

ONNX_DOMAIN = "ai.onnx"
ONNX_SUFFIX = ".onnx"


@dataclass(frozen=True)
class Finding:
    """One reason a node will not convert. `node` and `op` are empty for a model-level finding."""

    node: str
    op: str
    domain: str
    reason: str


@dataclass(frozen=True)
class LintResult:
    """The findings of one runtime's linter on one model, and what it checked against."""

    runtime: str
    model: Path
    reference: str
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when nothing was found: the model should convert for this runtime."""
        return not self.findings

    def to_dict(self) -> dict:
        """A JSON-ready dict of the result, `ok` included."""
        return {
            "runtime": self.runtime,
            "model": str(self.model),
            "reference": self.reference,
            "ok": self.ok,
            "findings": [asdict(f) for f in self.findings],
        }


@dataclass(frozen=True)
class LintJob:
    """What every linter gets: the file to check and the user's options. `model` is the file as a
    checked, shape-inferred ONNX model, read on first use, so that a linter of a converted file
    (a Core ML package) never reads it as ONNX."""

    path: Path
    ops_config: Path | None = None

    @cached_property
    def model(self) -> onnx.ModelProto:
        """The ONNX model at `path`, checked, with the shapes and dtypes inference finds."""
        if self.path.is_dir():
            raise UserError(f"{self.path} is a folder: give the .onnx file in it to lint, such as {self.path / 'model.onnx'}")
        model = load_onnx_checked(self.path)
        try:
            return onnx.shape_inference.infer_shapes(model)
        except (onnx.shape_inference.InferenceError, RuntimeError):
            return model  # dtypes stay unknown where inference fails; those checks are then skipped


@dataclass(frozen=True)
class NodeRef:
    """A node as a runtime sees it: subgraphs and model-local functions expanded.

    `name` is unique in the model ("parent/child" inside a subgraph or function call); `domain`
    is normalised ("" -> "ai.onnx"); `opset` is the version its domain is imported at in scope.
    """

    name: str
    node: onnx.NodeProto
    domain: str
    opset: int


Linter = Callable[[LintJob], LintResult]


@dataclass(frozen=True)
class Registered:
    """A registered linter and the suffix of the files it checks (".onnx", ".mlpackage")."""

    check: Linter
    suffix: str


LINTERS: dict[str, Registered] = {}


def register_linter(runtime: str, suffix: str = ONNX_SUFFIX) -> Callable[[Linter], Linter]:
    """Register the linter that checks files ending `suffix` for `runtime` (e.g. "tensorrt"
    checks the ONNX file its parser takes; "coreml" checks the `.mlpackage` itself)."""

    def decorate(linter: Linter) -> Linter:
        LINTERS[runtime] = Registered(linter, suffix)
        return linter

    return decorate


def normalise_domain(domain: str) -> str:
    """ONNX's default domain is spelled "" or "ai.onnx"; return one spelling."""
    return domain or ONNX_DOMAIN


def opset_imports(imports: Iterable[onnx.OperatorSetIdProto]) -> dict[str, int]:
    """Domain -> imported version, with the default domain normalised."""
    return {normalise_domain(o.domain): o.version for o in imports}


def iter_nodes(model: onnx.ModelProto) -> Iterator[NodeRef]:
    """Every node a runtime would import: subgraph bodies (If/Loop/Scan) and the bodies of
    model-local functions in place of their calls, since runtimes expand those."""
    functions = {(normalise_domain(f.domain), f.name): f for f in model.functions}
    yield from _walk(model.graph.node, opset_imports(model.opset_import), functions, "")


def _walk(
    nodes: Iterable[onnx.NodeProto],
    opsets: dict[str, int],
    functions: dict[tuple[str, str], onnx.FunctionProto],
    prefix: str,
) -> Iterator[NodeRef]:
    for index, node in enumerate(nodes):
        name = prefix + (node.name or f"{node.op_type}#{index}")
        domain = normalise_domain(node.domain)
        function = functions.get((domain, node.op_type))
        if function is not None:
            inner = {**opsets, **opset_imports(function.opset_import)}
            yield from _walk(function.node, inner, functions, name + "/")
            continue
        yield NodeRef(name=name, node=node, domain=domain, opset=opsets.get(domain, 1))
        for graph in _subgraphs(node):
            yield from _walk(graph.node, opsets, functions, name + "/")


def iter_graphs(model: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    """The main graph and every subgraph in it (bodies of If, Loop, Scan), at any depth."""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        yield graph
        for node in graph.node:
            graphs.extend(_subgraphs(node))


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [g for attr in node.attribute for g in ([attr.g] if attr.HasField("g") else attr.graphs)]


def tensor_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto.Tensor]:
    """Tensor name -> element type and shape, for every tensor whose type is known
    (graph inputs and outputs, inferred value_info and initializers, subgraphs included)."""
    types: dict[str, onnx.TypeProto.Tensor] = {}
    for graph in iter_graphs(model):
        for info in [*graph.input, *graph.output, *graph.value_info]:
            if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
                types[info.name] = info.type.tensor_type
        for init in graph.initializer:
            types[init.name] = onnx.helper.make_tensor_type_proto(init.data_type, init.dims).tensor_type
    return types


def data_file(name: str) -> Traversable:
    """A data file shipped in edgedistill/export/data (package data, so it works when installed)."""
    return files("edgedistill.export") / "data" / name
