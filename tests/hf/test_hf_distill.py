import numpy as np
import torch

from edgedistill.compress.distill import DistillConfig
from edgedistill.compress.students import HFShrink
from edgedistill.hf import distill
from edgedistill.tasks.similarity import mean_cosine
from edgedistill.hf.model import load_hf
from edgedistill.hf.students import _HFShrinkHandler
from edgedistill.data.text import builtin_sentences, tokenize


def _ids(tokenizer, n, start=0):
    return tokenize(tokenizer, builtin_sentences()[start : start + n], 24).input_ids


def test_outputs_keep_the_input_order_while_batching_by_length(bert_folder):
    model, tokenizer = load_hf(bert_folder)
    ids = _ids(tokenizer, 20)
    with torch.no_grad():
        one_by_one = np.concatenate([model(torch.from_numpy(row[None])).numpy() for row in ids])
    np.testing.assert_allclose(distill.outputs(model, ids, batch_size=6), one_by_one, atol=1e-5)


def test_batches_cover_every_row_once():
    ids = torch.tensor([[1] * n + [0] * (8 - n) for n in np.random.default_rng(0).integers(1, 8, 50)])
    batches = distill._batches(ids, 0, 4, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(50))


def test_fit_brings_a_narrow_student_closer_to_the_teacher(bert_folder):
    teacher, tokenizer = load_hf(bert_folder)
    train, val = _ids(tokenizer, 96), _ids(tokenizer, 32, start=96)
    student = _HFShrinkHandler().make(HFShrink(shrink="width", layers=2), teacher, 0.5, (24,))
    t_train, t_val = distill.outputs(teacher, train), distill.outputs(teacher, val)
    before = mean_cosine(distill.outputs(student, val), t_val)
    result = distill.fit(student, train, t_train, val, t_val, DistillConfig(epochs=4, lr=3e-3, batch_size=16), seed=0)
    assert result.metric == "cosine" and result.val_score > before
    assert result.val_score == mean_cosine(distill.outputs(result.model, val), t_val)
