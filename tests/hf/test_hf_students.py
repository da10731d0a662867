import copy

import pytest
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter, ValidationError
from torch import nn

from conftest import tiny_cnn
from edgedistill.compress.budget import ResolvedBudget
from edgedistill.compress.search import search
from edgedistill.compress.students import HFShrink, StudentSpec, generators, handler_for
from edgedistill.errors import UserError
from edgedistill.hf.model import HFModel, HFTask, load_hf, load_saved
from edgedistill.hf.students import prune_vocabulary, shrink, spread_layers, unknown_share

SENTENCES = ["the model is small", "a fast phone can run this test code", "data", "this is an error", "return the string"]
SHAPE = (16,)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _make(cfg: HFShrink, teacher: HFModel, knob: float) -> HFModel:
    return handler_for(cfg).make(cfg, teacher, knob, SHAPE)


@pytest.fixture(scope="module")
def embedder(bert_folder):
    return load_hf(bert_folder)


@pytest.fixture(scope="module")
def ids(embedder):
    return embedder[1](SENTENCES, padding=True, return_tensors="pt")["input_ids"]


def test_hf_generator_is_registered_and_parses_as_a_student_spec():
    assert HFShrink in generators()
    spec = TypeAdapter(StudentSpec).validate_python({"kind": "hf", "shrink": "width", "layers": 2})
    assert spec == HFShrink(shrink="width", layers=2)
    assert handler_for(spec).knob_range(HFShrink(min_knob=0.2)) == (0.2, 1.0)


@pytest.mark.parametrize(
    "fields, message",
    [({"layers": 2}, "layers is set by the knob"), ({"min_knob": 0.0}, "min_knob"), ({"shrink": "height"}, "shrink")],
)
def test_bad_hf_configs_are_rejected(fields, message):
    with pytest.raises(ValidationError, match=message):
        HFShrink(**fields)


@pytest.mark.parametrize("total", range(1, 13))
def test_spread_layers_are_distinct_sorted_and_keep_the_ends(total):
    for keep in range(1, total + 1):
        picked = spread_layers(total, keep)
        assert len(set(picked)) == keep and list(picked) == sorted(picked)
        assert picked[0] == 0 and (keep == 1 or picked[-1] == total - 1)
    assert spread_layers(6, 3) == (0, 2, 5)


def test_depth_students_grow_with_the_knob_and_copy_the_teachers_layers(embedder, ids):
    teacher, _ = embedder
    before = copy.deepcopy(teacher.state_dict())
    students = {knob: _make(HFShrink(), teacher, knob) for knob in (0.05, 0.3, 0.5, 0.8, 1.0)}
    assert [s.num_layers for s in students.values()] == [1, 1, 2, 3, 4]
    sizes = [_params(s) for s in students.values()]
    assert sizes == sorted(sizes) and sizes[-1] == _params(teacher)
    two = students[0.5]  # layers 0 and 3 of the teacher
    assert torch.equal(two.backbone.encoder.layer[1].output.dense.weight, teacher.backbone.encoder.layer[3].output.dense.weight)
    with torch.no_grad():
        assert torch.equal(students[1.0](ids), teacher(ids))
        assert all(torch.isfinite(s(ids)).all() for s in students.values())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not students[1.0].training


def test_width_students_shrink_heads_hidden_and_mlp(embedder, ids):
    teacher, _ = embedder
    sizes = []
    for knob, heads in ((0.05, 1), (0.5, 2), (0.75, 3), (1.0, 4)):
        student = _make(HFShrink(shrink="width"), teacher, knob)
        config = student.backbone.config
        assert (config.num_attention_heads, config.hidden_size, config.intermediate_size) == (heads, 8 * heads, round(64 * knob))
        assert config.num_hidden_layers == 4 and student.task == teacher.task
        with torch.no_grad():
            out = student(ids)
        # projected back to the teacher's 32, then normalised as the teacher is
        assert out.shape == (len(SENTENCES), 32) and torch.isfinite(out).all()
        torch.testing.assert_close(out.norm(dim=1), torch.ones(len(SENTENCES)))
        sizes.append(_params(student))
    assert sizes == sorted(sizes) and sizes[-1] == _params(teacher)
    assert _make(HFShrink(shrink="width", layers=2), teacher, 0.5).num_layers == 2


def test_width_student_of_a_classifier_keeps_its_labels(bert_classifier_folder):
    teacher, tokenizer = load_hf(bert_classifier_folder)
    student = _make(HFShrink(shrink="width", layers=3), teacher, 0.5)
    ids = tokenizer(SENTENCES, padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = student(ids)
    assert logits.shape == (len(SENTENCES), 3) and torch.isfinite(logits).all()
    assert student.backbone.classifier.in_features == 16 and student.num_layers == 3


def _kept_hidden(teacher: HFModel, student: HFModel) -> list[int]:
    """The teacher's hidden channels the student kept, found by matching word-embedding columns."""
    big = teacher.backbone.embeddings.word_embeddings.weight
    small = student.backbone.embeddings.word_embeddings.weight
    return [int((big - small[:, [j]]).abs().sum(0).argmin()) for j in range(small.shape[1])]


def test_width_student_from_the_teachers_weights_embeds_like_the_teacher(embedder, ids):
    teacher, _ = embedder
    student = _make(HFShrink(shrink="width"), teacher, 0.5)
    torch.manual_seed(0)
    fresh_backbone = type(teacher.backbone)(student.backbone.config, add_pooling_layer=False).eval()
    fresh = HFModel(fresh_backbone, teacher.task, teacher.pad_token_id)
    unprojected = HFModel(student.backbone, teacher.task, teacher.pad_token_id)
    kept = _kept_hidden(teacher, student)
    with torch.no_grad():
        target = teacher(ids)[:, kept]
        inherited = F.cosine_similarity(unprojected(ids), target).mean().item()
        random = F.cosine_similarity(fresh(ids), target).mean().item()
    # measured: about 0.99 inherited, about 0 for a randomly initialised student of the same shape
    assert inherited > 0.5 and inherited > random + 0.3


def test_width_student_projects_back_to_the_teachers_size_from_the_kept_channels(embedder, ids):
    teacher, _ = embedder
    student = _make(HFShrink(shrink="width"), teacher, 0.5)
    projection = student.projection
    assert isinstance(projection, nn.Linear) and (projection.in_features, projection.out_features) == (16, 32)
    assert student.embedding_dim == 32 == teacher.embedding_dim
    # the selection matrix: student channel j goes back to the teacher channel it was cut from
    kept = _kept_hidden(teacher, student)
    selection = torch.zeros(32, 16)
    selection[kept, range(16)] = 1.0
    assert torch.equal(projection.weight, selection) and torch.equal(projection.bias, torch.zeros(32))
    # part of the deployed model: its parameters count, train and save with it
    assert _params(student) == _params(student.backbone) + 32 * 16 + 32
    assert {"projection.weight", "projection.bias"} <= set(student.state_dict())
    unprojected = HFModel(student.backbone, teacher.task, teacher.pad_token_id)
    with torch.no_grad():
        out, teacher_out = student(ids), teacher(ids)
        # the student's own pooled embedding put back on the kept channels, zeros elsewhere
        torch.testing.assert_close(out[:, kept], unprojected(ids))
        assert not out[:, [c for c in range(32) if c not in kept]].any()
        cosine = F.cosine_similarity(out, teacher_out).mean().item()
    # the selection init carries the teacher's information: measured about 0.58 here (0.78 at knob 0.75)
    assert cosine > 0.3


def test_full_width_and_depth_students_have_no_projection(embedder, ids):
    teacher, _ = embedder
    full = _make(HFShrink(shrink="width"), teacher, 1.0)
    depth = _make(HFShrink(), teacher, 0.5)
    assert full.projection is None and depth.projection is None and teacher.projection is None
    with torch.no_grad():
        assert torch.equal(full(ids), teacher(ids))
        assert depth(ids).shape == (len(SENTENCES), 32)


def test_a_classifier_student_has_no_projection(bert_classifier_folder):
    teacher, _ = load_hf(bert_classifier_folder)
    assert _make(HFShrink(shrink="width"), teacher, 0.5).projection is None


def _projected_teacher(teacher: HFModel, out_features: int = 24) -> HFModel:
    torch.manual_seed(1)
    projection = nn.Linear(32, out_features)
    return HFModel(copy.deepcopy(teacher.backbone), teacher.task, teacher.pad_token_id, projection=projection).eval()


def test_a_teachers_projection_is_composed_into_the_students(embedder, ids):
    teacher = _projected_teacher(embedder[0])
    assert teacher.embedding_dim == 24
    width = _make(HFShrink(shrink="width"), teacher, 0.5)
    kept = _kept_hidden(teacher, width)
    assert (width.projection.in_features, width.projection.out_features) == (16, 24)
    assert torch.equal(width.projection.weight, teacher.projection.weight[:, kept])
    assert torch.equal(width.projection.bias, teacher.projection.bias)
    assert width.projection is not teacher.projection
    # width 1.0 and depth students keep the teacher's projection (a copy): 1.0 is the teacher
    full, depth = _make(HFShrink(shrink="width"), teacher, 1.0), _make(HFShrink(), teacher, 0.5)
    assert torch.equal(full.projection.weight, teacher.projection.weight)
    assert depth.projection.in_features == 32 and torch.equal(depth.projection.bias, teacher.projection.bias)
    with torch.no_grad():
        assert torch.equal(full(ids), teacher(ids))
        assert width(ids).shape == depth(ids).shape == (len(SENTENCES), 24)


def test_a_student_the_teachers_width_as_a_projected_teacher_still_projects(embedder):
    # hidden' == the teacher's embedding size, but the teacher's projection must still apply
    teacher = _projected_teacher(embedder[0], out_features=16)
    student = _make(HFShrink(shrink="width"), teacher, 0.5)
    assert student.backbone.config.hidden_size == 16 == teacher.embedding_dim
    assert student.projection is not None and tuple(student.projection.weight.shape) == (16, 16)


def test_a_width_student_with_its_projection_saves_and_loads_back_unchanged(embedder, ids, tmp_path):
    student = _make(HFShrink(shrink="width"), embedder[0], 0.5)
    with torch.no_grad():
        student.projection.weight.add_(0.01 * torch.randn_like(student.projection.weight))  # as if trained
    student.save(tmp_path / "student")
    again = load_saved(tmp_path / "student")
    assert isinstance(again.projection, nn.Linear) and torch.equal(again.projection.weight, student.projection.weight)
    assert not again.training
    with torch.no_grad():
        assert torch.equal(again(ids), student(ids))


def test_width_keeps_the_heads_neurons_and_channels_with_the_largest_weights(embedder):
    teacher = copy.deepcopy(embedder[0])
    layer = teacher.backbone.encoder.layer[0]
    with torch.no_grad():
        for linear in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
            linear.bias.copy_(torch.randn_like(linear.bias))
            linear.weight[16:24] *= 10  # head 2 of 4 (head_dim 8)
        layer.intermediate.dense.bias.copy_(torch.randn_like(layer.intermediate.dense.bias))
        layer.intermediate.dense.weight[7] *= 10
        layer.output.dense.weight[:, 7] *= 10
        for module in teacher.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight[5] = 3.0
    student = shrink(teacher, range(4), heads=1, intermediate=1)
    kept = student.backbone.encoder.layer[0]
    assert torch.equal(kept.attention.self.query.bias, layer.attention.self.query.bias[16:24])
    assert torch.equal(kept.intermediate.dense.bias, layer.intermediate.dense.bias[7:8])
    assert 5 in _kept_hidden(teacher, student) and 3.0 in student.backbone.embeddings.LayerNorm.weight


def test_hf_generator_refuses_other_teachers_and_architectures():
    with pytest.raises(UserError, match="needs a Hugging Face teacher folder; use prune/scale/custom for a TinyCNN"):
        _make(HFShrink(), tiny_cnn(), 0.5)
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=16)
    distil = HFModel(DistilBertModel(config).eval(), HFTask("embedding"), 0)
    with pytest.raises(UserError, match="cannot shrink a DistilBertModel yet \\(supported: BertModel"):
        _make(HFShrink(), distil, 0.5)


def test_width_layers_beyond_the_teachers_is_a_user_error(embedder):
    with pytest.raises(UserError, match="hf.layers = 9 is more than the teacher's 4 layers"):
        _make(HFShrink(shrink="width", layers=9), embedder[0], 0.5)


def test_students_save_and_load_back_unchanged(embedder, ids, tmp_path):
    student = _make(HFShrink(shrink="width", layers=2), embedder[0], 0.5)
    student.save(tmp_path / "student")
    with torch.no_grad():
        assert torch.equal(load_saved(tmp_path / "student")(ids), student(ids))


def test_search_finds_an_hf_student_within_a_params_budget(embedder):
    teacher, _ = embedder
    limit = 0.8 * _params(teacher)
    budget = ResolvedBudget(limits={"params": limit}, precision="fp32")
    found = search(HFShrink(), teacher, SHAPE, budget, input_dtype=torch.long)
    assert found.within_budget and found.footprint.params <= limit
    assert found.model.num_layers < teacher.num_layers


def test_prune_vocabulary_keeps_the_seen_rows_and_maps_the_rest_to_unk(embedder, tmp_path):
    teacher, tokenizer = embedder
    seen = tokenizer(["the model is small", "data"], padding=True, return_tensors="pt")["input_ids"]
    pruned = prune_vocabulary(teacher, seen.flatten().tolist(), unk_id=tokenizer.unk_token_id, special_ids=tokenizer.all_special_ids)
    kept = sorted(set(seen.flatten().tolist()) | set(tokenizer.all_special_ids))
    table = pruned.backbone.get_input_embeddings().weight
    assert table.shape[0] == len(kept) < teacher.backbone.get_input_embeddings().weight.shape[0]
    assert torch.equal(table, teacher.backbone.get_input_embeddings().weight[kept])
    assert pruned.token_map.shape == (len(tokenizer),)
    unseen = tokenizer.convert_tokens_to_ids("phone")
    assert pruned.token_map[unseen] == pruned.token_map[tokenizer.unk_token_id]
    with torch.no_grad():
        assert torch.equal(pruned(seen), teacher(seen))
        other = tokenizer(["the phone is small"], return_tensors="pt")["input_ids"]
        assert not torch.allclose(pruned(other), teacher(other))
    # "[CLS] the phone is small [SEP]": one of six tokens lost
    assert unknown_share(pruned.token_map, other, tokenizer.pad_token_id, tokenizer.unk_token_id) == pytest.approx(1 / 6)
    pruned.save(tmp_path / "pruned")
    again = load_saved(tmp_path / "pruned")
    assert torch.equal(again.token_map, pruned.token_map)
    with torch.no_grad():
        assert torch.equal(again(other), pruned(other))


def test_prune_vocabulary_carries_the_projection_over(embedder, ids):
    teacher, tokenizer = embedder
    student = _make(HFShrink(shrink="width"), teacher, 0.5)
    pruned = prune_vocabulary(student, ids.flatten().tolist(), unk_id=tokenizer.unk_token_id, special_ids=tokenizer.all_special_ids)
    assert pruned.projection is not None and pruned.projection is not student.projection
    assert torch.equal(pruned.projection.weight, student.projection.weight)
    with torch.no_grad():
        assert torch.equal(pruned(ids), student(ids))


def test_students_of_a_vocabulary_pruned_teacher_keep_its_token_map(embedder, ids):
    teacher, tokenizer = embedder
    pruned = prune_vocabulary(teacher, ids.flatten().tolist(), unk_id=tokenizer.unk_token_id, special_ids=tokenizer.all_special_ids)
    again = prune_vocabulary(pruned, ids[:2].flatten().tolist(), unk_id=tokenizer.unk_token_id, special_ids=tokenizer.all_special_ids)
    student = _make(HFShrink(shrink="width"), again, 0.5)
    assert torch.equal(student.token_map, again.token_map)
    assert student.backbone.get_input_embeddings().weight.shape[0] == again.backbone.get_input_embeddings().weight.shape[0]
    with torch.no_grad():
        assert torch.equal(again(ids[:2]), teacher(ids[:2]))
        assert torch.isfinite(student(ids)).all()


def test_prune_vocabulary_rejects_ids_outside_the_tokenizer(embedder):
    with pytest.raises(UserError, match="token ids must lie in 0..139"):
        prune_vocabulary(embedder[0], [5, 10_000], unk_id=1)
