"""The robustness perturbation (mtdnn/noise.py): seeded and per row, swaps keep the words, typos are
one edit of one word, rates of 0 change nothing, labels and ids stay."""

from __future__ import annotations

import random
from collections import Counter

from mtdnn.noise import perturb_split, perturb_text
from mtdnn.records import RawSplit

TEXT = "The quick brown fox jumps over the lazy dog near the river bank today"


def _edit_distance_one_typo(a: str, b: str) -> bool:
    """b is a with one letter dropped, doubled, replaced, or two adjacent letters exchanged."""
    if len(b) == len(a) - 1:
        return any(a[:i] + a[i + 1:] == b for i in range(len(a)))
    if len(b) == len(a) + 1:
        return any(a[:i + 1] + a[i:] == b for i in range(len(a)))
    diff = [i for i in range(len(a)) if a[i] != b[i]] if len(a) == len(b) else None
    if diff is None:
        return False
    return len(diff) <= 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                              and a[diff[1]] == b[diff[0]])


def test_rates_of_zero_change_nothing():
    assert perturb_text(TEXT, random.Random(0), 0.0, 0.0) == TEXT
    assert perturb_text("  two   spaces ", random.Random(0), 0.0, 0.0) == "two spaces"


def test_swaps_only_reorder_adjacent_words():
    out = perturb_text(TEXT, random.Random(3), swap_rate=0.5, typo_rate=0.0)
    words, new = TEXT.split(), out.split()
    assert out != TEXT and Counter(words) == Counter(new)
    moved = [i for i in range(len(words)) if words[i] != new[i]]
    assert moved and all(new[i] in (words[i - 1] if i else None, words[i + 1] if i + 1 < len(words) else None)
                         for i in moved)


def test_typos_are_one_edit_per_word():
    out = perturb_text(TEXT, random.Random(1), swap_rate=0.0, typo_rate=1.0)
    pairs = list(zip(TEXT.split(), out.split()))
    assert len(pairs) == len(TEXT.split())
    assert all(_edit_distance_one_typo(a, b) for a, b in pairs)
    assert sum(a != b for a, b in pairs) >= len(pairs) // 2  # a typo may by chance give the word back


def test_split_is_seeded_per_row_and_keeps_labels():
    raw = RawSplit("rte", "dev", "x", ids=["0", "1", "2"], text_a=[TEXT, "a b c d e", "single"],
                   text_b=["Another sentence with several words in it", None, "x y"], labels=["a", "b", "a"],
                   lines=[2, 3, 4])
    one, two = perturb_split(raw, 7, 0.3, 0.3), perturb_split(raw, 7, 0.3, 0.3)
    assert (one.text_a, one.text_b) == (two.text_a, two.text_b)
    assert perturb_split(raw, 8, 0.3, 0.3).text_a != one.text_a
    assert (one.ids, one.labels, one.lines) == (raw.ids, raw.labels, raw.lines) and one.text_b[1] is None
    assert one.text_a != raw.text_a
    # row i's texts do not depend on the other rows' texts
    other = perturb_split(RawSplit("rte", "dev", "x", ids=raw.ids, text_a=[TEXT, "quite another text here", "single"],
                                   text_b=list(raw.text_b), labels=raw.labels, lines=raw.lines), 7, 0.3, 0.3)
    assert (other.text_a[0], other.text_a[2], other.text_b[2]) == (one.text_a[0], one.text_a[2], one.text_b[2])
    assert other.text_a[1] != one.text_a[1]
