"""Tagging tasks cache their windows of words like sentence tasks cache their tokens: a second
load reads the cache (no word is encoded again) and gives the same arrays and windows; a changed
file, another max length or no cache directory encode again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mtdnn.kinds.tagging as tagging_kind
from mtdnn.data.readers import read_split
from mtdnn.data.tokenized import tokenize_split
from mtdnn.tasks.schema import parse_task

LONG = [f"w{i} O" for i in range(30)]
SENTENCES = [["John B-PER", "Smith I-PER", "visited O", "Paris B-LOC", ". O"], LONG,
             ["Acme B-ORG", "hired O", "Ann B-PER"]]


def _write(path: Path, sentences: list[list[str]]) -> None:
    path.write_text("\n\n".join("\n".join(lines) for lines in sentences) + "\n", encoding="utf-8")


def _task(path: Path, labeled: bool = True):
    split = {"path": str(path), "format": "conll", "role": "train", "columns": {"text_a": 0, "label": 1}}
    if not labeled:
        split = {**split, "labeled": False, "columns": {"text_a": 0}}
    return parse_task({"name": "ner", "type": "tagging", "input": "words", "scheme": "iob2",
                       "labels": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"],
                       "splits": {"train": split}}, "t.yaml")


@pytest.fixture()
def calls(monkeypatch) -> list[int]:
    """The sentences ``encode_words`` is called with, per call."""
    seen: list[int] = []
    real = tagging_kind.encode_words

    def counting(tokenizer, sentences, *args, **kwargs):
        seen.append(len(sentences))
        return real(tokenizer, sentences, *args, **kwargs)

    monkeypatch.setattr(tagging_kind, "encode_words", counting)
    return seen


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_encoder)


FIELDS = ("ids", "seg", "offsets", "labels", "groups", "token_labels")


def _same(a, b) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert (a.type_ids is None) == (b.type_ids is None)
    if a.type_ids is not None:
        assert a.type_ids.dtype == b.type_ids.dtype and np.array_equal(a.type_ids, b.type_ids)
    assert a.windows == b.windows and a.word_labels == b.word_labels and a.uids == b.uids


@pytest.mark.parametrize("labeled", [True, False])
def test_second_load_reads_the_cache(tmp_path, tokenizer, calls, labeled):
    path = tmp_path / "x.conll"
    _write(path, SENTENCES)
    task = _task(path, labeled)
    raw = read_split(task, "train", tmp_path)
    first = tokenize_split(task, raw, tokenizer, 16, cache_dir=tmp_path / "cache")
    assert calls == [3] and len(list((tmp_path / "cache").glob("ner.train.*.npz"))) == 1
    assert len(first) > 3  # the long sentence takes several windows
    again = tokenize_split(task, read_split(task, "train", tmp_path), tokenizer, 16, cache_dir=tmp_path / "cache")
    assert calls == [3]  # nothing encoded again
    _same(first, again)
    assert (again.windows[0].labels is None) == (not labeled)
    _same(first, tokenize_split(task, raw, tokenizer, 16))  # no cache directory: encoded, the same
    assert calls == [3, 3]


def test_a_changed_file_or_max_length_encodes_again(tmp_path, tokenizer, calls):
    path = tmp_path / "x.conll"
    _write(path, SENTENCES)
    task = _task(path)
    cache = tmp_path / "cache"
    tokenize_split(task, read_split(task, "train", tmp_path), tokenizer, 16, cache_dir=cache)
    tokenize_split(task, read_split(task, "train", tmp_path), tokenizer, 24, cache_dir=cache)
    assert calls == [3, 3]  # another max length (and window overlap): another entry
    _write(path, [SENTENCES[0], SENTENCES[2], ["Bob B-PER"]])
    changed = tokenize_split(task, read_split(task, "train", tmp_path), tokenizer, 16, cache_dir=cache)
    assert calls == [3, 3, 3] and len(changed) == 3 and changed.windows[2].sentence == 2
    assert len(list(cache.glob("ner.train.*.npz"))) == 3


def test_a_damaged_cache_is_rebuilt(tmp_path, tokenizer, calls):
    path = tmp_path / "x.conll"
    _write(path, SENTENCES)
    task = _task(path)
    cache = tmp_path / "cache"
    first = tokenize_split(task, read_split(task, "train", tmp_path), tokenizer, 16, cache_dir=cache)
    entry = next(cache.glob("ner.train.*.npz"))
    entry.write_bytes(b"not a zip file")
    again = tokenize_split(task, read_split(task, "train", tmp_path), tokenizer, 16, cache_dir=cache)
    assert calls == [3, 3]
    _same(first, again)
