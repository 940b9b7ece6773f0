"""Seeded text perturbations for measuring robustness (docs/smart-and-distillation.md): random
swaps of adjacent words and character typos, applied to evaluation texts.

``perturb_text`` perturbs one text from a ``random.Random``: first, walking left to right, each
pair of adjacent words is swapped with probability ``swap_rate`` (a swapped word is not swapped
again); then each word of at least two letters gets one typo with probability ``typo_rate``: a
letter dropped, doubled, replaced by a random lowercase letter, or two adjacent letters exchanged
(one of the four, equally likely). Words are split at whitespace and joined with single spaces.

``perturb_split`` perturbs both texts of every row of a ``RawSplit``; row i draws from its own
generator seeded by (seed, i), so a row's perturbation does not depend on the other rows, and the
same seed always gives the same texts. Labels, ids and groups are kept.
"""

from __future__ import annotations

import dataclasses
import random
import string

from .records import RawSplit

TYPOS = ("drop", "double", "replace", "exchange")


def _typo(word: str, rng: random.Random) -> str:
    kind = rng.choice(TYPOS)
    i = rng.randrange(len(word))
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i + 1] + word[i:]
    if kind == "replace":
        return word[:i] + rng.choice(string.ascii_lowercase) + word[i + 1:]
    j = min(i, len(word) - 2)  # exchange letters j and j + 1
    return word[:j] + word[j + 1] + word[j] + word[j + 2:]


def perturb_text(text: str, rng: random.Random, swap_rate: float = 0.1, typo_rate: float = 0.05) -> str:
    """``text`` with random adjacent-word swaps and typos (module docstring)."""
    words = text.split()
    i = 0
    while i + 1 < len(words):
        if rng.random() < swap_rate:
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 2
        else:
            i += 1
    return " ".join(_typo(w, rng) if sum(c.isalpha() for c in w) >= 2 and rng.random() < typo_rate else w
                    for w in words)


def perturb_split(raw: RawSplit, seed: int, swap_rate: float = 0.1, typo_rate: float = 0.05) -> RawSplit:
    """Every row's texts perturbed (row i from ``random.Random(f"{seed}/{i}")``)."""
    text_a, text_b = [], []
    for i, (a, b) in enumerate(zip(raw.text_a, raw.text_b)):
        rng = random.Random(f"{seed}/{i}")
        text_a.append(perturb_text(a, rng, swap_rate, typo_rate))
        text_b.append(None if b is None else perturb_text(b, rng, swap_rate, typo_rate))
    return dataclasses.replace(raw, text_a=text_a, text_b=text_b, ids=list(raw.ids), labels=list(raw.labels),
                               lines=list(raw.lines))
