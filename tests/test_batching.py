"""Batching: the multi-task epoch schedule (Algorithm 1), ranking groups, dynamic padding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mtdnn.data.batching import collate, epoch_schedule, eval_order, task_batches
from mtdnn.records import TokenizedSplit


def make_split(name: str, lengths, groups=None, seed=0, with_tt=True) -> TokenizedSplit:
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths)
    n = len(lengths)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    ids = rng.integers(5, 1000, size=total).astype(np.int32)
    seg = rng.integers(0, 3, size=total).astype(np.int8)
    tt = rng.integers(0, 2, size=total).astype(np.int8) if with_tt else None
    labels = rng.integers(0, 2, size=n).astype(np.int64)
    g = np.arange(n, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    return TokenizedSplit(name, "train", ids, tt, seg, offsets, labels, g, [str(i) for i in range(n)])


@pytest.fixture()
def splits():
    rng = np.random.default_rng(1)
    # ranking: 40 groups of 1-5 candidates, candidates of a group not adjacent in the file
    sizes = rng.integers(1, 6, size=40)
    groups = rng.permutation(np.repeat(np.arange(40), sizes))
    return {
        "a": make_split("a", rng.integers(3, 60, size=203), seed=2),
        "b": make_split("b", rng.integers(3, 60, size=77), seed=3),
        "rank": make_split("rank", rng.integers(3, 60, size=len(groups)), groups=groups, seed=4),
    }


@pytest.mark.parametrize("group_by_length", [True, False])
def test_schedule_one_task_per_batch_and_every_row_once(splits, group_by_length):
    sched = epoch_schedule(splits, 16, seed=7, epoch=1, group_by_length=group_by_length)
    seen = {name: [] for name in splits}
    for b in sched:
        assert b.task in splits
        assert b.indices.ndim == 1 and len(b.indices) > 0
        assert b.indices.max() < len(splits[b.task])   # indices are rows of that task only
        seen[b.task].extend(b.indices.tolist())
    for name, split in splits.items():
        assert sorted(seen[name]) == list(range(len(split))), name
    # batch count: ceil(n / 16) for row tasks
    assert sum(b.task == "a" for b in sched) == -(-203 // 16)
    assert sum(b.task == "b" for b in sched) == -(-77 // 16)
    # tasks are mixed (shuffled together), not run one after the other
    tasks_in_order = [b.task for b in sched]
    changes = sum(1 for x, y in zip(tasks_in_order, tasks_in_order[1:]) if x != y)
    assert changes > 3


def test_schedule_deterministic_per_seed_and_epoch(splits):
    def key(s):
        return [(b.task, b.indices.tolist()) for b in s]

    a1 = epoch_schedule(splits, 16, seed=7, epoch=1)
    assert key(a1) == key(epoch_schedule(splits, 16, seed=7, epoch=1))
    assert key(a1) != key(epoch_schedule(splits, 16, seed=7, epoch=2))
    assert key(a1) != key(epoch_schedule(splits, 16, seed=8, epoch=1))
    # the order of tasks differs across epochs, not only the rows
    orders = {tuple(b.task for b in epoch_schedule(splits, 16, seed=7, epoch=e)) for e in range(1, 5)}
    assert len(orders) == 4


def test_ranking_batches_keep_groups_whole(splits):
    rank = splits["rank"]
    batches = task_batches(rank, 8, np.random.default_rng(0))
    where = {}
    for bi, idx in enumerate(batches):
        for g in rank.groups[idx].tolist():
            where.setdefault(g, set()).add(bi)
    assert all(len(v) == 1 for v in where.values())
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(rank)))
    # a batch is closed once it reaches the size: at most size - 1 + largest group
    largest = max(Counter(rank.groups.tolist()).values())
    assert all(len(b) <= 8 - 1 + largest for b in batches)
    # and through the schedule too
    rank_batches = [b for b in epoch_schedule(splits, 8, seed=3, epoch=2) if b.task == "rank"]
    assert rank_batches
    for b in rank_batches:
        gs = set(rank.groups[b.indices].tolist())
        assert sum(int((rank.groups == g).sum()) for g in gs) == len(b.indices)


def test_group_by_length_reduces_padding():
    rng = np.random.default_rng(5)
    split = make_split("x", rng.integers(3, 120, size=800))

    def padded(batches):
        return sum(len(b) * split.lengths[b].max() for b in batches)

    grouped = task_batches(split, 16, np.random.default_rng(0), group_by_length=True)
    plain = task_batches(split, 16, np.random.default_rng(0), group_by_length=False)
    assert padded(grouped) < 0.8 * padded(plain)
    assert all(len(b) == 16 for b in grouped)


def test_collate_pads_to_longest_row():
    split = make_split("c", [5, 2, 7, 3])
    idx = np.array([1, 3, 0])
    batch = collate(split, idx, pad_id=0)
    assert batch["input_ids"].shape == (3, 5)          # longest chosen row has 5 tokens
    for r, i in enumerate(idx):
        s, e = split.offsets[i], split.offsets[i + 1]
        L = e - s
        assert batch["input_ids"][r, :L].tolist() == split.ids[s:e].tolist()
        assert batch["input_ids"][r, L:].tolist() == [0] * (5 - L)
        assert batch["attention_mask"][r].tolist() == [1] * L + [0] * (5 - L)
        assert batch["seg"][r, :L].tolist() == split.seg[s:e].tolist()
        assert batch["seg"][r, L:].tolist() == [-1] * (5 - L)
        assert batch["token_type_ids"][r, :L].tolist() == split.type_ids[s:e].tolist()
        assert batch["token_type_ids"][r, L:].tolist() == [0] * (5 - L)
    assert batch["labels"].tolist() == split.labels[idx].tolist()
    assert batch["groups"].tolist() == [1, 3, 0]
    # a pad id other than 0, and padding to a multiple
    b2 = collate(split, np.array([0, 2]), pad_id=99, pad_to_multiple_of=8)
    assert b2["input_ids"].shape == (2, 8)
    assert b2["input_ids"][0, 5:].tolist() == [99, 99, 99]
    # no token types: no key
    assert "token_type_ids" not in collate(make_split("n", [2, 3], with_tt=False), np.array([0, 1]), 0)


def test_eval_order_covers_all_longest_first():
    split = make_split("e", [4, 9, 1, 9, 6])
    batches = eval_order(split, 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]
