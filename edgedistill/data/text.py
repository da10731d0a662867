"""Text data for Hugging Face models: sources, seeded splits and tokenized batches."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.errors import UserError

BUILTIN_SOURCE = "pydoc"
MIN_WORDS, MAX_WORDS = 6, 60
FEED_NAMES = ("input_ids", "attention_mask", "token_type_ids")

# A sentence ends at . ! or ? (optionally closed by a bracket or quote) followed by a capital.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])|(?<=[.!?][)\"'])\s+(?=[A-Z])")
_BULLET = re.compile(r"^(?:[*\-]|\d+\.)\s+")
# Grammar rules, doctests, subscripts, comparisons and escapes: code, not prose.
_CODE_CHARS = re.compile(r">>>|::|[{}\[\]=<>\\|]")
_WORD = re.compile(r"^[A-Za-z][A-Za-z'’\-]*[.,;:!?)\"]*$")
_MIN_WORD_SHARE = 0.7


@dataclass(frozen=True)
class TextSplits:
    """Train, validation and calibration texts of one source, made with a fixed seed.

    The label arrays are int64 class ids aligned with the texts (classification), or None.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    calib: tuple[str, ...]
    train_labels: np.ndarray | None
    val_labels: np.ndarray | None
    calib_labels: np.ndarray | None
    source: str


@dataclass(frozen=True)
class Tokenized:
    """Token ids and attention mask of a set of texts, padded to one length."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def feed(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The ONNX Runtime feed for the graph inputs `names` (token_type_ids are all zeros)."""
        arrays = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": np.zeros_like(self.input_ids),
        }
        unknown = [name for name in names if name not in arrays]
        if unknown:
            raise UserError(
                f"the ONNX graph asks for input {unknown[0]!r}, which text data cannot feed: "
                f"export a model whose inputs are among {', '.join(FEED_NAMES)}"
            )
        return {name: arrays[name] for name in names}

    def take(self, start: int, stop: int) -> Tokenized:
        """Rows start..stop (a batch)."""
        return Tokenized(self.input_ids[start:stop], self.attention_mask[start:stop])


@dataclass(frozen=True)
class FixedLength:
    """Named text feeds at one sequence length, for files made at fixed shapes (a phone's `.pte`
    takes `length` tokens whatever the text): padded as the tokenizer pads a batch, token ids
    with `pad_id` and the mask and token types with 0, so a student that derives its mask from
    the ids gives the same outputs. `length` is the data's max_length, which the tokenizer
    truncates to, so no feed is longer."""

    length: int
    pad_id: int

    def fit(self, x: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every array of `x` (batch, tokens) padded on the right to `length` tokens."""
        return {name: self._padded(a, self.pad_id if name == "input_ids" else 0) for name, a in x.items()}

    def _padded(self, a: np.ndarray, value: int) -> np.ndarray:
        if a.shape[1] > self.length:
            raise UserError(
                f"a feed of {a.shape[1]} tokens is longer than the files' {self.length}: tokenize with max_length {self.length}"
            )
        return np.pad(a, ((0, 0), (0, self.length - a.shape[1])), constant_values=value)


def builtin_sentences() -> list[str]:
    """English sentences from the help topics that ship with CPython (`pydoc_data.topics`).

    Prose only: code blocks, grammar rules, tables and headings are dropped; 6 to 60 words;
    no duplicates; the same order every call (for a given Python version).
    """
    from pydoc_data.topics import topics

    seen: dict[str, None] = {}
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            for sentence in _SENTENCE_END.split(_prose(paragraph)):
                if _is_sentence(sentence):
                    seen.setdefault(sentence, None)
    return list(seen)


def load_texts(
    source: str, column: str = "text", label_column: str | None = None, classes: Sequence[str] = ()
) -> tuple[list[str], np.ndarray | None]:
    """All texts of a source, with int64 class ids when `label_column` is given.

    `source` is "pydoc" (the built-in sentences), a `.txt` file (one text per non-empty line)
    or a `.jsonl` file (one JSON object per line; the text is its `column` field, the label its
    `label_column` field). Labels are class ids, or class names: names are looked up in
    `classes` (the teacher's label names) when given, else numbered in sorted order.
    """
    if source == BUILTIN_SOURCE:
        if label_column is not None:
            raise UserError("the built-in \"pydoc\" texts have no labels: give a .jsonl file with a label field")
        return builtin_sentences(), None
    path = Path(source)
    if not path.is_file():
        raise UserError(f"text source {source!r} does not exist: give \"pydoc\", a .txt file or a .jsonl file")
    if path.suffix == ".txt":
        if label_column is not None:
            raise UserError(f"{path} is a .txt file, which has no labels: give a .jsonl file with a {label_column!r} field")
        texts = [line.strip() for line in _read(path).splitlines() if line.strip()]
        labels = None
    elif path.suffix == ".jsonl":
        texts, raw_labels = _read_jsonl(path, column, label_column)
        labels = None if raw_labels is None or not texts else _class_ids(raw_labels, classes, path)
    else:
        raise UserError(f"text source {source!r} is not a .txt or .jsonl file: give \"pydoc\", a .txt or a .jsonl file")
    if not texts:
        raise UserError(f"{path} holds no texts: put one text per line")
    if labels is not None and len(np.unique(labels)) < 2:
        raise UserError(
            f"{path}: every text has the same label in {label_column!r}: scoring a classifier against labels needs "
            "two or more classes: add texts of the other classes, or drop label_column to score against the teacher"
        )
    return texts, labels


def split_texts(
    texts: Sequence[str],
    labels: np.ndarray | None,
    val_fraction: float,
    calib_fraction: float,
    seed: int,
    source: str,
    max_texts: int | None = None,
) -> TextSplits:
    """Shuffle with `seed`, keep at most `max_texts`, and cut validation, calibration and train.

    The same texts, fractions and seed give the same splits.
    """
    if labels is not None and len(labels) != len(texts):
        raise UserError(f"text source {source!r} has {len(texts)} texts but {len(labels)} labels: give one label per text")
    if max_texts is not None and max_texts < 1:
        raise UserError(f"max_texts must be >= 1 (or unset for all), got {max_texts}")
    order = np.random.default_rng(seed).permutation(len(texts))[:max_texts]
    n = len(order)
    n_val, n_calib = round(n * val_fraction), round(n * calib_fraction)
    if n_val < 1 or n_calib < 1 or n - n_val - n_calib < 1:
        raise UserError(
            f"text source {source!r} gives {n} texts, too few for val_fraction={val_fraction} and "
            f"calib_fraction={calib_fraction}: give more texts, raise max_texts or change the fractions"
        )
    parts = np.split(order, [n_val, n_val + n_calib])  # val, calib, train
    val, calib, train = (tuple(texts[i] for i in part) for part in parts)
    val_y, calib_y, train_y = (None, None, None) if labels is None else (labels[part] for part in parts)
    return TextSplits(
        train=train, val=val, calib=calib,
        train_labels=train_y, val_labels=val_y, calib_labels=calib_y, source=source,
    )


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> Tokenized:
    """Tokenize `texts`, truncated to `max_length` tokens and padded to the longest of them."""
    if not texts:
        raise UserError("no texts to tokenize: the text split is empty")
    if max_length < 2:
        raise UserError(f"max_length must be >= 2 (room for the special tokens), got {max_length}")
    if tokenizer.pad_token_id is None:
        raise UserError("the tokenizer has no padding token: set pad_token in its tokenizer_config.json")
    enc = tokenizer(
        list(texts), truncation=True, max_length=max_length, padding="longest", return_tensors="np",
        return_token_type_ids=False,
    )
    return Tokenized(
        input_ids=enc["input_ids"].astype(np.int64), attention_mask=enc["attention_mask"].astype(np.int64)
    )


def _prose(paragraph: str) -> str:
    """A paragraph as one line of prose, or "" when it is code, a table or a heading."""
    lines = [line for line in paragraph.splitlines() if line.strip()]
    if not lines or any(_is_markup(line.strip()) for line in lines):
        return ""
    indents = [len(line) - len(line.lstrip()) for line in lines]
    if min(indents) > 3:  # indented deeper than a list or a note: a code block
        return ""
    if len(lines) > 1 and indents[0] < indents[1] and not _BULLET.match(lines[0].strip()):
        lines = lines[1:]  # a definition list: drop the term, keep its description
    return " ".join(_BULLET.sub("", " ".join(lines).strip()).split())


def _is_markup(line: str) -> bool:
    """Doctest prompts, table borders and heading underlines."""
    return line.startswith((">>>", "...", "+-", "|")) or set(line) <= set("*=-+~^ ")


def _is_sentence(text: str) -> bool:
    """A whole sentence of mostly plain words, 6 to 60 of them."""
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or not text[0].isupper() or text[-1] not in ".!?":
        return False
    if _CODE_CHARS.search(text):
        return False
    plain = sum(bool(_WORD.match(word.strip("\"("))) for word in words)
    return plain / len(words) >= _MIN_WORD_SHARE


def _read(path: Path) -> str:
    """A text file's content, with unreadable files as one-line errors."""
    try:
        return path.read_text(encoding="utf-8-sig")  # a BOM is not part of the first text
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path} ({exc}): give a readable UTF-8 text file") from exc


def _read_jsonl(path: Path, column: str, label_column: str | None) -> tuple[list[str], list | None]:
    """The `column` texts (and raw `label_column` values) of a .jsonl file."""
    texts: list[str] = []
    labels: list | None = None if label_column is None else []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {number} is not valid JSON ({exc.msg}): write one JSON object per line") from exc
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number} is not a JSON object: write one object per line, like {{\"{column}\": \"...\"}}")
        texts.append(_field(row, column, path, number, str))
        if labels is not None:
            labels.append(_field(row, label_column, path, number, (int, str)))
    return texts, labels


def _field(row: dict, name: str, path: Path, number: int, kind: type | tuple[type, ...]) -> object:
    """Field `name` of a JSON row, checked for its type."""
    if name not in row:
        raise UserError(f"{path} line {number} has no {name!r} field: add it, or name the field to read in the config")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        wanted = "a string" if kind is str else "an integer class id or a class name"
        raise UserError(f"{path} line {number}: field {name!r} is {json.dumps(value)[:40]}, not {wanted}: fix that line")
    return value


def _class_ids(raw: list, classes: Sequence[str], path: Path) -> np.ndarray:
    """Integer class ids from ints or class names (looked up in `classes`, else sorted)."""
    if all(isinstance(value, int) for value in raw):
        ids = np.asarray(raw, dtype=np.int64)
        if ids.min() < 0:
            raise UserError(f"{path} has label {int(ids.min())}: labels must be class ids 0..C-1 or class names")
        if classes and ids.max() >= len(classes):
            raise UserError(
                f"{path} has label {int(ids.max())}, but the model has {len(classes)} classes: use class ids 0..{len(classes) - 1}"
            )
        return ids
    if not all(isinstance(value, str) for value in raw):
        raise UserError(f"{path} mixes integer and string labels: use class ids everywhere or class names everywhere")
    names = list(classes) or sorted(set(raw))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(raw) - set(index))
    if unknown:
        raise UserError(f"{path} has label {unknown[0]!r}, not one of the model's labels ({', '.join(names)}): use those names or class ids")
    return np.asarray([index[value] for value in raw], dtype=np.int64)
