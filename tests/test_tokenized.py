"""The tokenised-data cache: hits load from disk, and every input of the key makes a new entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtdnn.data import tokenized as tok_mod
from mtdnn.data.readers import read_split
from mtdnn.data.tokenized import SEG_SPECIAL, tokenize_split
from mtdnn.model.multitask import load_tokenizer
from mtdnn.tasks.registry import builtin_tasks
from mtdnn.tasks.schema import parse_task


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return load_tokenizer(tiny_encoder)


@pytest.fixture(scope="module")
def rte_rows(data_dir):
    task = builtin_tasks()["rte"]
    return task, read_split(task, "dev", data_dir, allow_hub=False).select(list(range(20)))


def _files(cache_dir) -> list[Path]:
    return sorted(Path(cache_dir).glob("*.npz"))


def _same(a, b):
    for name in ("ids", "seg", "offsets", "labels", "groups"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert (a.type_ids is None) == (b.type_ids is None)
    if a.type_ids is not None:
        assert np.array_equal(a.type_ids, b.type_ids)
    assert a.uids == b.uids


def test_tokenized_content(tokenizer, rte_rows):
    task, raw = rte_rows
    t = tokenize_split(task, raw, tokenizer, 64, cache_dir=None)
    assert len(t) == 20
    untruncated = 0
    for i in range(3):
        ids, tt, seg = t.row(i)
        enc = tokenizer(raw.text_a[i], raw.text_b[i], truncation=True, max_length=64)
        assert ids.tolist() == enc["input_ids"]
        assert tt.tolist() == enc["token_type_ids"]
        # [CLS] a [SEP] b [SEP]: specials are 2, first text 0, second text 1
        assert seg[0] == SEG_SPECIAL and seg[-1] == SEG_SPECIAL
        n_a = len(tokenizer(raw.text_a[i], add_special_tokens=False)["input_ids"])
        if len(ids) < 64:  # not truncated
            assert seg.tolist() == [2] + [0] * n_a + [2] + [1] * (len(ids) - n_a - 3) + [2]
            untruncated += 1
    assert untruncated > 0  # the segment layout was checked on at least one row
    assert t.lengths.max() <= 64
    assert t.labels.tolist() == [task.labels.index(y) for y in raw.labels]
    assert t.uids == raw.ids


def test_second_call_loads_from_cache(tokenizer, rte_rows, cache_dir, monkeypatch):
    task, raw = rte_rows
    first = tokenize_split(task, raw, tokenizer, 64, cache_dir)
    files = _files(cache_dir)
    assert len(files) == 1 and files[0].name.startswith("rte.dev.")
    mtime = files[0].stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("tokenised again instead of loading the cache")

    monkeypatch.setattr(tok_mod, "_tokenize", boom)
    second = tokenize_split(task, raw, tokenizer, 64, cache_dir)
    _same(first, second)
    assert _files(cache_dir) == files and files[0].stat().st_mtime_ns == mtime


def test_damaged_cache_is_rebuilt(tokenizer, rte_rows, cache_dir):
    task, raw = rte_rows
    first = tokenize_split(task, raw, tokenizer, 64, cache_dir)
    (f,) = _files(cache_dir)
    f.write_bytes(b"not a zip file")
    again = tokenize_split(task, raw, tokenizer, 64, cache_dir)
    _same(first, again)
    assert f.read_bytes() != b"not a zip file"


def test_key_changes_with_max_len(tokenizer, rte_rows, cache_dir):
    task, raw = rte_rows
    a = tokenize_split(task, raw, tokenizer, 64, cache_dir)
    b = tokenize_split(task, raw, tokenizer, 32, cache_dir)
    assert len(_files(cache_dir)) == 2
    assert b.lengths.max() <= 32 < a.lengths.max()


def test_key_changes_with_tokenizer(tokenizer, rte_rows, cache_dir, tmp_path):
    task, raw = rte_rows
    tokenize_split(task, raw, tokenizer, 64, cache_dir)
    # the same tokenizer loaded again: same key
    tokenize_split(task, raw, load_tokenizer(tokenizer.name_or_path), 64, cache_dir)
    assert len(_files(cache_dir)) == 1
    # a different vocabulary: a different tokenizer, a new key
    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    words = sorted({w.lower().strip(".,'\"") for s in raw.text_a + raw.text_b for w in s.split()} - {""})
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n", encoding="utf-8")
    other = BertTokenizerFast(vocab_file=str(vocab))
    t2 = tokenize_split(task, raw, other, 64, cache_dir)
    assert len(_files(cache_dir)) == 2
    assert t2.ids.max() < len(words) + 5
    # an added token changes the tokenizer too
    changed = load_tokenizer(tokenizer.name_or_path)
    changed.add_tokens(["mtdnnnewtoken"])
    tokenize_split(task, raw, changed, 64, cache_dir)
    assert len(_files(cache_dir)) == 3


def test_key_changes_with_file_content(tokenizer, cache_dir, tmp_path):
    data = tmp_path / "pairs.tsv"
    rows = ["a\tb\ty", "A man sleeps.\tNobody sleeps.\tno", "A dog barks.\tAn animal makes noise.\tyes"]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    task = parse_task({"name": "mini", "type": "classification", "labels": ["yes", "no"],
                       "splits": {"train": {"role": "train", "path": str(data),
                                            "columns": {"text_a": "a", "text_b": "b", "label": "y"}}}}, "t")
    t1 = tokenize_split(task, read_split(task, "train", tmp_path), tokenizer, 64, cache_dir)
    tokenize_split(task, read_split(task, "train", tmp_path), tokenizer, 64, cache_dir)
    assert len(_files(cache_dir)) == 1
    # one word of one text changes
    data.write_text("\n".join(rows[:2] + ["A dog barks.\tAn animal makes a noise.\tyes"]) + "\n", encoding="utf-8")
    t2 = tokenize_split(task, read_split(task, "train", tmp_path), tokenizer, 64, cache_dir)
    assert len(_files(cache_dir)) == 2
    assert t2.lengths[1] == t1.lengths[1] + 1
    # only a label changes
    data.write_text("\n".join(rows[:2] + ["A dog barks.\tAn animal makes a noise.\tno"]) + "\n", encoding="utf-8")
    t3 = tokenize_split(task, read_split(task, "train", tmp_path), tokenizer, 64, cache_dir)
    assert len(_files(cache_dir)) == 3
    assert t3.labels.tolist() == [1, 1] and t2.labels.tolist() == [1, 0]
    # the task's label set is part of the key too (the encoded labels depend on it)
    swapped = task.model_copy(update={"labels": ["no", "yes"]})
    t4 = tokenize_split(swapped, read_split(swapped, "train", tmp_path), tokenizer, 64, cache_dir)
    assert len(_files(cache_dir)) == 4
    assert t4.labels.tolist() == [0, 0]


def test_ranking_groups_and_unlabeled(tokenizer, data_dir):
    tasks = builtin_tasks()
    task = tasks["qnli_rank"]
    raw = read_split(task, "dev", data_dir, allow_hub=False).select(list(range(30)))
    # make two questions share candidates: rows 0, 5, 7 get the same question
    for i in (5, 7):
        raw.text_a[i] = raw.text_a[0]
    t = tokenize_split(task, raw, tokenizer, 64, cache_dir=None)
    assert t.groups[0] == t.groups[5] == t.groups[7]
    assert len(set(t.groups.tolist())) == 28
    assert t.labels.tolist() == [1 if y == "entailment" else 0 for y in raw.labels]
    test = read_split(tasks["rte"], "test", data_dir, allow_hub=False).select(list(range(5)))
    tt = tokenize_split(tasks["rte"], test, tokenizer, 64, cache_dir=None)
    assert tt.labels.tolist() == [-1] * 5


def test_fingerprint_ignores_the_last_call_settings(tiny_encoder):
    """The fast tokenizer keeps the truncation/padding of its last call; that must not change the key."""
    tok = load_tokenizer(tiny_encoder)
    before = tok_mod.tokenizer_fingerprint(tok)
    tok(["a b c"], ["d e"], truncation=True, max_length=16, padding=False)
    assert tok_mod.tokenizer_fingerprint(tok) == before
    tok(["a b c"], ["d e"], truncation=True, max_length=64, padding="max_length")
    assert tok_mod.tokenizer_fingerprint(tok) == before
    assert tok_mod.tokenizer_fingerprint(load_tokenizer(tiny_encoder)) == before
