"""Hugging Face model -> ONNX through Optimum, finished with the task's pooling, always checked.

Optimum exports the backbone (and validates it in its own way); edgedistill then appends what
the task needs so that the file maps token ids straight to the task's output, and checks the
whole file against the torch model on real text.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgedistill.errors import UserError
from edgedistill.export.onnx import load_onnx_checked
from edgedistill.export.parity import Parity, max_abs_err
from edgedistill.fileio import quiet, scratch_dir
from edgedistill.data.text import Tokenized
from edgedistill.ortsession import open_session

if TYPE_CHECKING:
    from edgedistill.hf.model import HFModel, HFTask

MODEL_FILE = "model.onnx"
EMBEDDING_OUTPUT = "sentence_embedding"  # the name optimum-cli's sentence-transformers export uses
LOGITS_OUTPUT = "logits"
MIN_OPSET = 14  # the first opset optimum exports BERT-like attention with
_OPTIMUM_TASKS = {"embedding": "feature-extraction", "classification": "text-classification"}
_HIDDEN = "last_hidden_state"
_PARITY_BATCH = 64
_MEAN_EPS = 1e-9  # as sentence-transformers' mean pooling (count clamped to 1e-9)
_NORM_EPS = 1e-12  # as torch.nn.functional.normalize
_MASKED_MAX_FILL = -1e9  # as sentence-transformers' max pooling
_PREFIX = "edgedistill/"


@dataclass(frozen=True)
class HFOnnxArtifact:
    """An exported Hugging Face model (model.onnx plus its tokenizer in one folder) and its checks."""

    path: Path
    bytes: int
    inputs: tuple[str, ...]
    output: str
    parity: Parity
    optimum_validation: str


def export_hf(
    model: HFModel,
    tokenizer,
    out_dir: Path,
    sample: Tokenized,
    opset: int = 18,
    tolerance: float = 1e-4,
) -> HFOnnxArtifact:
    """Export `model` to `out_dir`/model.onnx (with its tokenizer beside it) and check it.

    The graph takes the tokenizer's `input_ids`, `attention_mask` (and `token_type_ids` where
    the architecture has them), with dynamic batch and sequence axes, and returns
    `sentence_embedding` (B, D) for an embedding task or `logits` (B, C) for a classifier; D is
    model.embedding_dim (the model's projection, when it has one, is in the file).
    `out_dir` is built beside itself and renamed into place once the file is built and
    checked, so it never holds half an export. A failed parity check does not raise: the
    artifact records it (`parity`).
    """
    out_dir = Path(out_dir)
    if len(sample) == 0:
        raise UserError("export needs a non-empty tokenized sample to check the file against torch")
    if opset < MIN_OPSET:
        raise UserError(f"opset {opset} is too old for transformer exports: use opset >= {MIN_OPSET}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out_dir.parent, f".{out_dir.name}.") as work:
        work = Path(work)
        source, exported, build = work / "source", work / "optimum", work / "build"
        model.backbone.save_pretrained(source)
        tokenizer.save_pretrained(source)
        validation = _optimum_export(source, exported, model, opset, tolerance)
        proto = _finish_graph(onnx.load(str(exported / MODEL_FILE)), model)
        build.mkdir()
        # One file: weights embedded, so the folder can be copied to a device on its own.
        onnx.save_model(proto, str(build / MODEL_FILE), save_as_external_data=False)
        tokenizer.save_pretrained(build)
        load_onnx_checked(build / MODEL_FILE)
        inputs, err = _parity(model, build / MODEL_FILE, sample)
        replace_dir(build, out_dir, work / "previous")
    return HFOnnxArtifact(
        path=out_dir / MODEL_FILE,
        bytes=(out_dir / MODEL_FILE).stat().st_size,
        inputs=inputs,
        output=EMBEDDING_OUTPUT if model.task.kind == "embedding" else LOGITS_OUTPUT,
        parity=Parity(err, tolerance),
        optimum_validation=validation,
    )


def optimum_cli_export(folder: Path, out_dir: Path, library: str = "sentence_transformers") -> Path:
    """Export `folder` with `optimum-cli export onnx` (feature-extraction) and return its model.onnx.

    The reference the comparison benchmark and tests hold edgedistill's export against.
    """
    if library == "sentence_transformers" and importlib.util.find_spec("sentence_transformers") is None:
        raise UserError("optimum-cli's sentence_transformers export needs sentence-transformers: pip install sentence-transformers")
    command = [
        sys.executable, "-m", "optimum.commands.optimum_cli", "export", "onnx",
        "--model", str(folder), "--task", "feature-extraction", "--library-name", library, str(out_dir),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # never reach a hub
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    path = Path(out_dir) / MODEL_FILE
    if done.returncode != 0 or not path.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(f"optimum-cli could not export {folder} ({lines[-1] if lines else 'no output'}): check the folder is a Hugging Face model")
    return path


def _optimum_export(source: Path, out: Path, model: HFModel, opset: int, tolerance: float) -> str:
    """Export the backbone saved in `source` with Optimum into `out`; return Optimum's validation."""
    from optimum.exporters.onnx import main_export

    task = _OPTIMUM_TASKS[model.task.kind]
    try:
        with _quiet_hf():
            # Validation is run separately: main_export only logs a failed one.
            main_export(
                str(source), str(out), task=task, opset=opset, library_name="transformers",
                local_files_only=True, do_validation=False, device="cpu",
            )
    except Exception as exc:  # optimum raises many unrelated types; the user sees one line
        raise UserError(
            f"optimum could not export the {model.backbone.config.model_type} model ({_first_line(exc)}): "
            "use an architecture optimum supports (optimum-cli export onnx --help)"
        ) from exc
    return _optimum_validation(model, task, out / MODEL_FILE, tolerance)


def _optimum_validation(model: HFModel, task: str, path: Path, tolerance: float) -> str:
    """What Optimum's validate_model_outputs says of the backbone file, as one line."""
    from optimum.exporters.error_utils import AtolError, OutputMatchError, ShapeError
    from optimum.exporters.onnx import validate_model_outputs
    from optimum.exporters.tasks import TasksManager

    reference = copy.deepcopy(model.backbone).eval()  # optimum's patcher rewrites the config of what it validates
    try:
        with _quiet_hf():
            config = TasksManager.get_exporter_config_constructor(
                "onnx", model=reference, task=task, library_name="transformers"
            )(reference.config)
            validate_model_outputs(config, reference, path, list(config.outputs), atol=tolerance, use_subprocess=False)
    except (AtolError, OutputMatchError, ShapeError) as exc:
        details = [line.strip("- ") for line in str(exc).splitlines()[1:] if line.strip()]
        return f"failed at atol {tolerance:g}: {'; '.join(details) or _first_line(exc)}"
    except Exception as exc:  # a validation that cannot run is reported, not fatal: our parity check decides
        return f"not run ({_first_line(exc)})"
    return f"passed at atol {tolerance:g}"


def _finish_graph(proto: onnx.ModelProto, model: HFModel) -> onnx.ModelProto:
    """Optimum's backbone graph made into the task's graph (token map in, pooled output out)."""
    if model.token_map is not None:
        _prepend_token_map(proto.graph, model.token_map.cpu().numpy())
    if model.task.kind == "embedding":
        _append_pooling(proto.graph, model.task, _opset(proto), model.projection)
    return proto


def _prepend_token_map(graph: onnx.GraphProto, token_map: np.ndarray) -> None:
    """Feed the backbone token_map[input_ids], so the graph takes the tokenizer's own ids
    while the student's embedding table holds only the rows it kept."""
    mapped = _PREFIX + "backbone_input_ids"
    for node in graph.node:
        node.input[:] = [mapped if name == "input_ids" else name for name in node.input]
    graph.initializer.append(numpy_helper.from_array(token_map.astype(np.int64), _PREFIX + "token_map"))
    graph.node.insert(0, helper.make_node("Gather", [_PREFIX + "token_map", "input_ids"], [mapped], axis=0))


def _append_pooling(graph: onnx.GraphProto, task: HFTask, opset: int, projection: nn.Linear | None = None) -> None:
    """Replace last_hidden_state as the output by the task's pooled (projected, normalised) embedding."""
    hidden = next((o for o in graph.output if o.name == _HIDDEN), None)
    if hidden is None:
        raise UserError(f"optimum's export has no {_HIDDEN} output: export an encoder model for an embedding task")
    dims = hidden.type.tensor_type.shape.dim
    pooled = {"mean": _mean_pool, "cls": _cls_pool, "max": _max_pool}[task.pooling](graph, opset)
    if projection is not None:
        pooled = _project(graph, pooled, projection)
    if task.normalize:
        pooled = _l2_normalize(graph, pooled, opset)
    graph.node.append(helper.make_node("Identity", [pooled], [EMBEDDING_OUTPUT]))
    width = projection.out_features if projection is not None else (dims[2].dim_value or dims[2].dim_param)
    graph.output.remove(hidden)
    graph.output.append(helper.make_tensor_value_info(EMBEDDING_OUTPUT, TensorProto.FLOAT, [dims[0].dim_param, width]))


def _mean_pool(graph: onnx.GraphProto, opset: int) -> str:
    """Mean of the hidden states over the tokens the attention mask keeps."""
    mask = _float_mask(graph)
    summed = _reduce(graph, "ReduceSum", _node(graph, "Mul", [_HIDDEN, mask]), opset)
    count = _node(graph, "Max", [_reduce(graph, "ReduceSum", mask, opset), _const(graph, "mean_eps", _MEAN_EPS)])
    return _node(graph, "Div", [summed, count])


def _cls_pool(graph: onnx.GraphProto, opset: int) -> str:
    """The hidden state of the first token."""
    first = _const(graph, "first_token", np.array(0, dtype=np.int64))
    return _node(graph, "Gather", [_HIDDEN, first], {"axis": 1})


def _max_pool(graph: onnx.GraphProto, opset: int) -> str:
    """Maximum of the hidden states over the tokens the attention mask keeps."""
    keep = _node(graph, "Cast", [_float_mask(graph)], {"to": TensorProto.BOOL})
    masked = _node(graph, "Where", [keep, _HIDDEN, _const(graph, "masked_fill", _MASKED_MAX_FILL)])
    return _reduce(graph, "ReduceMax", masked, opset)


def _project(graph: onnx.GraphProto, x: str, projection: nn.Linear) -> str:
    """x (B, H) @ W.T + b: the model's projection as one Gemm, its weights as initializers."""
    weight = _const(graph, "projection.weight", projection.weight.detach().cpu().float().numpy())
    inputs = [x, weight]
    if projection.bias is not None:
        inputs.append(_const(graph, "projection.bias", projection.bias.detach().cpu().float().numpy()))
    return _node(graph, "Gemm", inputs, {"transB": 1})


def _l2_normalize(graph: onnx.GraphProto, x: str, opset: int) -> str:
    """Rows of `x` divided by their L2 norm (clamped away from zero)."""
    norm = _reduce(graph, "ReduceL2", x, opset, axis=1, keepdims=1)
    return _node(graph, "Div", [x, _node(graph, "Max", [norm, _const(graph, "norm_eps", _NORM_EPS)])])


def _float_mask(graph: onnx.GraphProto) -> str:
    """attention_mask as float (B, T, 1), to broadcast over the hidden size."""
    mask = _node(graph, "Cast", ["attention_mask"], {"to": TensorProto.FLOAT})
    return _node(graph, "Unsqueeze", [mask, _const(graph, "axis_2", np.array([2], dtype=np.int64))])


def _reduce(graph: onnx.GraphProto, op: str, x: str, opset: int, axis: int = 1, keepdims: int = 0) -> str:
    """A Reduce* over one axis; axes became an input in opset 13 (ReduceSum) or 18 (the rest)."""
    axes_as_input = opset >= (13 if op == "ReduceSum" else 18)
    if axes_as_input:
        axes = _const(graph, f"axis_{axis}", np.array([axis], dtype=np.int64))
        return _node(graph, op, [x, axes], {"keepdims": keepdims})
    return _node(graph, op, [x], {"axes": [axis], "keepdims": keepdims})


def _node(graph: onnx.GraphProto, op: str, inputs: list[str], attrs: dict[str, object] | None = None) -> str:
    """Append one node with a fresh output name and return that name."""
    name = f"{_PREFIX}{op.lower()}_{len(graph.node)}"
    graph.node.append(helper.make_node(op, inputs, [name], name=name, **(attrs or {})))
    return name


def _const(graph: onnx.GraphProto, name: str, value: float | np.ndarray) -> str:
    """An initializer (float32 for a float) named once; reused when asked for again."""
    full = _PREFIX + name
    if not any(init.name == full for init in graph.initializer):
        array = np.asarray(value, dtype=np.float32) if isinstance(value, float) else value
        graph.initializer.append(numpy_helper.from_array(array, full))
    return full


def _opset(proto: onnx.ModelProto) -> int:
    """The default-domain opset the file was exported with."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _parity(model: HFModel, path: Path, sample: Tokenized) -> tuple[tuple[str, ...], float]:
    """The file's input names and max |onnxruntime - torch| of its output on `sample` (Inf where
    the shapes differ or either holds NaN or Inf)."""
    session = open_session(path)
    names = tuple(i.name for i in session.get_inputs())
    was_training = model.training
    model.eval()
    err = 0.0
    try:
        for start in range(0, len(sample), _PARITY_BATCH):
            batch = sample.take(start, start + _PARITY_BATCH)
            got = session.run(None, batch.feed(names))[0]
            with torch.no_grad():
                want = model(torch.from_numpy(batch.input_ids)).cpu().numpy()
            # max_abs_err is Inf, never NaN, where either side is not finite: max() would skip a NaN.
            err = max(err, max_abs_err(got, want))
    finally:
        model.train(was_training)  # leave the caller's model as it was
        del session  # release the file before its folder is renamed
    return names, err


def replace_dir(build: Path, final: Path, previous: Path) -> None:
    """Put the finished folder `build` at `final`; an older `final` is moved to `previous`
    (inside the work folder, removed with it). Renames only: no reader sees a half-built folder."""
    if final.exists():
        os.replace(final, previous)
    os.replace(build, final)


def _quiet_hf() -> ExitStack:
    """Silence optimum's and transformers' logs, prints and warnings (tracer warnings included)."""
    stack = ExitStack()
    stack.enter_context(quiet("optimum"))
    stack.enter_context(quiet("transformers"))
    return stack


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
