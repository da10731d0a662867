"""Hugging Face export through Optimum: pooling appended, token map prepended, always checked."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import onnx
import torch
from torch import nn

from edgedistill.compress.students import HFShrink, handler_for
from edgedistill.errors import UserError
from edgedistill.hf.export import export_hf, optimum_cli_export, replace_dir
from edgedistill.hf.model import HFModel, HFTask, load_hf
from edgedistill.hf.students import prune_vocabulary
from edgedistill.data.text import builtin_sentences, tokenize
from edgedistill.ortsession import open_session

MAX_LENGTH = 48  # below the tiny BERT's 64 positions


@pytest.fixture(scope="module")
def embedder(bert_folder):
    return load_hf(bert_folder)


@pytest.fixture(scope="module")
def sample(embedder):
    return tokenize(embedder[1], builtin_sentences()[:24], MAX_LENGTH)


@pytest.fixture(scope="module")
def exported(embedder, sample, tmp_path_factory):
    """The tiny sentence-transformers BERT exported once, shared read-only."""
    model, tokenizer = embedder
    return export_hf(model, tokenizer, tmp_path_factory.mktemp("export") / "onnx", sample)


def _run(path, tokenized, output=None):
    session = open_session(path)
    names = [i.name for i in session.get_inputs()]
    return session.run(None if output is None else [output], tokenized.feed(names))[0]


def _torch(model, tokenized):
    with torch.no_grad():
        return model(torch.from_numpy(tokenized.input_ids)).numpy()


def test_embedding_export_matches_torch_with_dynamic_axes(embedder, exported):
    model, tokenizer = embedder
    art = exported
    assert art.parity.passed and art.parity.max_abs_err <= 1e-4
    assert art.optimum_validation == "passed at atol 0.0001"
    assert art.output == "sentence_embedding" and art.path.name == "model.onnx"
    assert art.inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert art.bytes == art.path.stat().st_size
    assert (art.path.parent / "tokenizer.json").is_file()  # the folder stands on its own
    other = tokenize(tokenizer, builtin_sentences()[100:103], 12)  # another batch and sequence length
    got = _run(art.path, other)
    assert got.shape == (3, 32)
    np.testing.assert_allclose(got, _torch(model, other), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the folder's Normalize


# mean pooling with normalisation is the folder's own, checked above
@pytest.mark.parametrize(("pooling", "normalize"), [("cls", False), ("max", True)])
def test_every_pooling_matches_torch(embedder, sample, tmp_path, pooling, normalize):
    model, tokenizer = embedder
    variant = HFModel(model.backbone, HFTask("embedding", pooling, normalize), model.pad_token_id)
    art = export_hf(variant, tokenizer, tmp_path / pooling, sample)
    assert art.parity.passed, art
    np.testing.assert_allclose(_run(art.path, sample), _torch(variant, sample), atol=1e-4)


def test_classifier_export_gives_logits(bert_classifier_folder, tmp_path):
    model, tokenizer = load_hf(bert_classifier_folder)
    sample = tokenize(tokenizer, builtin_sentences()[:16], MAX_LENGTH)
    art = export_hf(model, tokenizer, tmp_path / "cls", sample)
    assert art.output == "logits" and art.parity.passed and art.optimum_validation.startswith("passed")
    assert _run(art.path, sample, "logits").shape == (16, 3)


def test_token_map_lets_a_pruned_table_take_the_tokenizers_ids(embedder, sample, tmp_path):
    model, tokenizer = embedder
    keep = np.unique(np.concatenate([sample.input_ids.ravel(), [tokenizer.unk_token_id]]))
    token_map = np.full(len(tokenizer), int(np.searchsorted(keep, tokenizer.unk_token_id)), dtype=np.int64)
    token_map[keep] = np.arange(len(keep))
    backbone = copy.deepcopy(model.backbone)
    old = backbone.get_input_embeddings().weight.detach()
    backbone.set_input_embeddings(nn.Embedding.from_pretrained(old[torch.from_numpy(keep)].clone(), freeze=False))
    backbone.config.vocab_size = len(keep)
    pruned = HFModel(backbone, model.task, model.pad_token_id, torch.from_numpy(token_map))
    art = export_hf(pruned, tokenizer, tmp_path / "pruned", sample)
    assert art.parity.passed, art
    # the sample uses only kept tokens, so the pruned file gives the full model's embeddings
    np.testing.assert_allclose(_run(art.path, sample), _torch(model, sample), atol=1e-4)
    shapes = [tuple(init.dims) for init in onnx.load(str(art.path)).graph.initializer]
    assert (len(keep), 32) in shapes and (len(tokenizer), 32) not in shapes


def _width_student(teacher: HFModel, knob: float = 0.5) -> HFModel:
    cfg = HFShrink(shrink="width")
    return handler_for(cfg).make(cfg, teacher, knob, (16,))


def _declared_width(path) -> int:
    (output,) = onnx.load(str(path)).graph.output
    return output.type.tensor_type.shape.dim[1].dim_value


def test_a_width_students_projection_is_in_the_file(embedder, sample, tmp_path):
    teacher, tokenizer = embedder
    student = _width_student(teacher)
    with torch.no_grad():
        student.projection.weight.add_(0.05 * torch.randn_like(student.projection.weight))  # as if trained
        student.projection.bias.add_(0.05 * torch.randn_like(student.projection.bias))
    art = export_hf(student, tokenizer, tmp_path / "width", sample)
    assert art.parity.passed and art.parity.max_abs_err <= 1e-4, art
    got = _run(art.path, sample, "sentence_embedding")
    assert got.shape == (len(sample), 32) and _declared_width(art.path) == 32  # the teacher's size, not 16
    np.testing.assert_allclose(got, _torch(student, sample), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    graph = onnx.load(str(art.path)).graph
    inits = {init.name: tuple(init.dims) for init in graph.initializer}
    assert inits["edgedistill/projection.weight"] == (32, 16) and inits["edgedistill/projection.bias"] == (32,)
    # after pooling, before the normalisation
    ops = [node.op_type for node in graph.node if node.name.startswith("edgedistill/")]
    assert ops.index("Gemm") < ops.index("ReduceL2")


def test_a_projection_without_normalising_or_bias_on_a_pruned_table(embedder, sample, tmp_path):
    teacher, tokenizer = embedder
    torch.manual_seed(0)
    projected = HFModel(
        teacher.backbone, HFTask("embedding", "cls", normalize=False), teacher.pad_token_id,
        projection=nn.Linear(32, 24, bias=False),
    )
    pruned = prune_vocabulary(
        projected, sample.input_ids.ravel().tolist(), unk_id=tokenizer.unk_token_id, special_ids=tokenizer.all_special_ids
    )
    art = export_hf(pruned, tokenizer, tmp_path / "cls", sample)
    assert art.parity.passed, art
    assert _run(art.path, sample).shape == (len(sample), 24) and _declared_width(art.path) == 24
    np.testing.assert_allclose(_run(art.path, sample), _torch(projected, sample), atol=1e-4)


def test_replace_dir_moves_the_old_folder_aside(tmp_path):
    build, final, previous = tmp_path / "build", tmp_path / "final", tmp_path / "previous"
    build.mkdir()
    (build / "new.txt").write_text("new")
    final.mkdir()
    (final / "old.txt").write_text("old")
    replace_dir(build, final, previous)
    assert (final / "new.txt").read_text() == "new" and (previous / "old.txt").read_text() == "old"
    assert not build.exists()


def test_rerun_replaces_the_folder_and_leaves_no_temporaries(embedder, sample, exported, tmp_path):
    model, tokenizer = embedder
    out = tmp_path / "onnx"
    shutil.copytree(exported.path.parent, out)
    (out / "stale.txt").write_text("old")
    export_hf(model, tokenizer, out, sample)
    assert not (out / "stale.txt").exists() and (out / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_optimum_failure_is_one_line_and_keeps_the_old_folder(embedder, sample, tmp_path, monkeypatch):
    import optimum.exporters.onnx as optimum_onnx

    def fail(*args, **kwargs):
        raise ValueError("unsupported thing\nlong traceback detail")

    model, tokenizer = embedder
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "keep.txt").write_text("kept")
    monkeypatch.setattr(optimum_onnx, "main_export", fail)
    with pytest.raises(UserError, match="optimum could not export the bert model \\(unsupported thing\\)") as info:
        export_hf(model, tokenizer, out, sample)
    assert "\n" not in str(info.value)
    assert (out / "keep.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_a_failed_optimum_validation_is_recorded_not_raised(embedder, sample, tmp_path, monkeypatch):
    import optimum.exporters.onnx as optimum_onnx
    from optimum.exporters.error_utils import AtolError

    def fail(*args, **kwargs):
        raise AtolError("not within the set tolerance 0.0001:\n- last_hidden_state: max diff = 0.002")

    model, tokenizer = embedder
    monkeypatch.setattr(optimum_onnx, "validate_model_outputs", fail)
    art = export_hf(model, tokenizer, tmp_path / "onnx", sample)
    assert art.optimum_validation == "failed at atol 0.0001: last_hidden_state: max diff = 0.002"
    assert art.parity.passed  # edgedistill's own check on real text decides


def test_bad_arguments_are_user_errors(embedder, sample, tmp_path):
    model, tokenizer = embedder
    with pytest.raises(UserError, match="opset >= 14"):
        export_hf(model, tokenizer, tmp_path / "x", sample, opset=11)
    with pytest.raises(UserError, match="non-empty"):
        export_hf(model, tokenizer, tmp_path / "x", sample.take(0, 0))


def test_agrees_with_optimum_cli_sentence_transformers_export(bert_folder, exported, sample, tmp_path):
    pytest.importorskip("sentence_transformers", reason="optimum-cli's sentence_transformers export needs it")
    theirs = optimum_cli_export(bert_folder, tmp_path / "cli")
    np.testing.assert_allclose(
        _run(exported.path, sample), _run(theirs, sample, "sentence_embedding"), atol=1e-4
    )
