"""Text sources, seeded splits and tokenization for Hugging Face models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgedistill.errors import UserError
from edgedistill.data.text import FixedLength, Tokenized, builtin_sentences, load_texts, split_texts, tokenize


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def test_builtin_sentences_are_prose_deterministic_and_unique():
    sentences = builtin_sentences()
    assert sentences == builtin_sentences()
    assert len(sentences) > 1000
    assert len(set(sentences)) == len(sentences)
    assert all(6 <= len(s.split()) <= 60 for s in sentences)
    assert all(s[0].isupper() and s[-1] in ".!?" for s in sentences)
    assert not any(">>>" in s or "::=" in s or "  " in s for s in sentences)


def test_load_texts_pydoc_and_txt(tmp_path):
    assert load_texts("pydoc") == (builtin_sentences(), None)
    path = tmp_path / "t.txt"
    path.write_text("first text\n\n  second text  \n")
    assert load_texts(str(path)) == (["first text", "second text"], None)


def test_load_texts_jsonl_int_and_named_labels(tmp_path):
    ints = _jsonl(tmp_path / "a.jsonl", [{"body": "x", "y": 2}, {"body": "y", "y": 0}])
    texts, labels = load_texts(str(ints), column="body", label_column="y")
    assert texts == ["x", "y"] and labels.dtype == np.int64 and labels.tolist() == [2, 0]
    names = _jsonl(tmp_path / "b.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}])
    assert load_texts(str(names), label_column="label")[1].tolist() == [1, 0]  # sorted: neg=0, pos=1
    # the model's own label order wins over sorting
    assert load_texts(str(names), label_column="label", classes=("pos", "neg"))[1].tolist() == [0, 1]
    assert load_texts(str(names))[1] is None


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ('{"text": "a"}\nnot json\n', {}, "line 2 is not valid JSON"),
        ('{"text": "a"}\n{"body": "b"}\n', {}, "line 2 has no 'text' field"),
        ('{"text": 3}\n', {}, "not a string"),
        ('["a"]\n', {}, "line 1 is not a JSON object"),
        ('{"text": "a", "y": 1}\n{"text": "b", "y": "x"}\n', {"label_column": "y"}, "mixes integer and string"),
        ('{"text": "a", "y": -1}\n', {"label_column": "y"}, "label -1"),
        ('{"text": "a", "y": 3}\n', {"label_column": "y", "classes": ("p", "n")}, "has 2 classes"),
        ('{"text": "a", "y": "maybe"}\n', {"label_column": "y", "classes": ("p", "n")}, "'maybe', not one of"),
        ("\n\n", {}, "holds no texts"),
    ],
)
def test_load_texts_bad_jsonl_is_one_clear_line(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        load_texts(str(path), **kwargs)
    assert "\n" not in str(info.value)


def test_load_texts_bad_sources(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_texts(str(tmp_path / "missing.txt"))
    (tmp_path / "t.csv").write_text("a\n")
    with pytest.raises(UserError, match="not a .txt or .jsonl"):
        load_texts(str(tmp_path / "t.csv"))
    (tmp_path / "t.txt").write_text("a\n")
    with pytest.raises(UserError, match="has no labels"):
        load_texts(str(tmp_path / "t.txt"), label_column="y")
    with pytest.raises(UserError, match="no labels"):
        load_texts("pydoc", label_column="y")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(UserError, match="holds no texts"):
        load_texts(str(tmp_path / "empty.txt"))


def test_split_texts_is_seeded_disjoint_and_keeps_labels_aligned():
    texts = [f"text {i}" for i in range(100)]
    labels = np.arange(100, dtype=np.int64) % 3
    a = split_texts(texts, labels, 0.2, 0.1, seed=0, source="s")
    again = split_texts(texts, labels, 0.2, 0.1, seed=0, source="s")
    assert (again.train, again.val, again.calib) == (a.train, a.val, a.calib)
    assert np.array_equal(again.train_labels, a.train_labels)
    assert (len(a.train), len(a.val), len(a.calib)) == (70, 20, 10)
    assert sorted(a.train + a.val + a.calib) == sorted(texts)
    for part, part_labels in ((a.train, a.train_labels), (a.val, a.val_labels), (a.calib, a.calib_labels)):
        assert part_labels.tolist() == [int(t.split()[1]) % 3 for t in part]
    assert split_texts(texts, None, 0.2, 0.1, seed=1, source="s").train != a.train
    assert split_texts(texts, None, 0.2, 0.1, seed=0, source="s").train_labels is None


def test_split_texts_max_texts_and_too_few():
    texts = [f"t{i}" for i in range(50)]
    small = split_texts(texts, None, 0.2, 0.2, seed=0, source="s", max_texts=10)
    assert (len(small.train), len(small.val), len(small.calib)) == (6, 2, 2)
    with pytest.raises(UserError, match="too few for val_fraction"):
        split_texts(texts[:3], None, 0.1, 0.1, seed=0, source="s")
    with pytest.raises(UserError, match="one label per text"):
        split_texts(texts, np.zeros(3, dtype=np.int64), 0.1, 0.1, seed=0, source="s")
    with pytest.raises(UserError, match="max_texts must be >= 1"):
        split_texts(texts, None, 0.1, 0.1, seed=0, source="s", max_texts=0)


def test_tokenize_pads_to_longest_and_truncates(bert_folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bert_folder, local_files_only=True)
    short = tokenize(tokenizer, ["a b", "a b c d e f"], max_length=32)
    assert short.input_ids.dtype == np.int64 and short.attention_mask.dtype == np.int64
    assert short.input_ids.shape == short.attention_mask.shape == (2, short.attention_mask[1].sum())
    assert (short.attention_mask == (short.input_ids != tokenizer.pad_token_id)).all()
    assert len(short) == 2
    long = tokenize(tokenizer, ["a " * 100], max_length=16)
    assert long.input_ids.shape == (1, 16) and long.attention_mask.all()
    with pytest.raises(UserError, match="no texts"):
        tokenize(tokenizer, [], max_length=16)


def test_feed_gives_the_named_inputs():
    tok = Tokenized(np.array([[2, 7, 3, 0]]), np.array([[1, 1, 1, 0]]))
    feed = tok.feed(["input_ids", "attention_mask", "token_type_ids"])
    assert list(feed) == ["input_ids", "attention_mask", "token_type_ids"]
    assert not feed["token_type_ids"].any() and feed["token_type_ids"].dtype == np.int64
    assert list(tok.feed(["attention_mask"])) == ["attention_mask"]
    assert tok.take(0, 1).input_ids.shape == (1, 4)
    with pytest.raises(UserError, match="'pixel_values'"):
        tok.feed(["input_ids", "pixel_values"])


def test_a_fixed_length_pads_ids_with_the_pad_id_and_masks_with_zeros_and_refuses_longer_feeds():
    feed = {"input_ids": np.array([[101, 7, 102]]), "attention_mask": np.ones((1, 3), np.int64)}
    padded = FixedLength(5, pad_id=3).fit(feed)
    assert padded["input_ids"].tolist() == [[101, 7, 102, 3, 3]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 0, 0]]
    assert padded["input_ids"].dtype == feed["input_ids"].dtype
    with pytest.raises(UserError, match="longer than the files' 2: tokenize with max_length 2"):
        FixedLength(2, pad_id=0).fit(feed)
