"""Raw text to words with character offsets, and per-word tags back to entities in the text.

``split_words`` splits raw text the way tagged corpora are tokenized, closely enough for
prediction, and keeps where each word is:

* a word is a run of letters, digits and combining marks (Unicode categories L, N, M); an
  apostrophe (``'`` or ``’``) or a hyphen between two such characters joins them into one word
  (``O'Neill``, ``Urdu-speaking``, ``don't``); scripts written without spaces (Chinese,
  Japanese) are not segmented: a run of their characters is one word;
* every other visible character (punctuation, symbols, emoji) is a word of its own; a combining
  mark right after it (e.g. the emoji variation selector U+FE0F) stays with it;
* whitespace and invisible format characters (category Cf: zero-width space, BOM, soft hyphen,
  zero-width joiner) separate words and belong to none.

Offsets are Python string indices (code points), ``text[start:end] == word``.

``tags_to_entities`` reads the entities from per-word tags with ``schemes.spans`` (conlleval's
rules, any entity scheme) and gives each ``{type, start, end, text, score}`` with character
offsets into the original text: ``start`` of its first word, ``end`` of its last, ``text`` the
original text between them (inner spaces as written). ``score`` is the mean over the entity's
words of the probability of the word's predicted tag, read at the word's first sub-word (what
``alignment.merge_windows`` returns per word); None when no scores are given.
"""

from __future__ import annotations

import unicodedata
from typing import Any, NamedTuple, Sequence

import numpy as np

from .schemes import spans

_JOINERS = frozenset("-'\u2019")


class Word(NamedTuple):
    """A word of raw text and its character offsets: ``text[start:end] == word``."""

    word: str
    start: int
    end: int


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNM"


def _word_end(text: str, i: int) -> int:
    """The end of the word starting at ``i`` (a word character)."""
    j = i + 1
    while j < len(text):
        if _is_word_char(text[j]):
            j += 1
        elif text[j] in _JOINERS and j + 1 < len(text) and _is_word_char(text[j + 1]):
            j += 2
        else:
            break
    return j


def split_words(text: str) -> list[Word]:
    """The words of ``text`` with their offsets (rules in the module docstring)."""
    words: list[Word] = []
    i = 0
    while i < len(text):
        ch = text[i]
        category = unicodedata.category(ch)
        if ch.isspace() or category == "Cf":
            i += 1
        elif category[0] == "M" and words and words[-1].end == i:
            last = words[-1]
            words[-1] = Word(last.word + ch, last.start, i + 1)
            i += 1
        elif _is_word_char(ch):
            j = _word_end(text, i)
            words.append(Word(text[i:j], i, j))
            i = j
        else:
            words.append(Word(ch, i, i + 1))
            i += 1
    return words


def tags_and_scores(probabilities: Any, labels: Sequence[str]) -> tuple[list[str], list[float]]:
    """Each word's most probable tag and its probability, from a ``[words, labels]`` array or
    tensor of probabilities (the softmax of the logits at each word's first sub-word)."""
    probs = np.asarray(probabilities.detach().cpu() if hasattr(probabilities, "detach") else probabilities,
                       dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probabilities of shape {probs.shape} for {len(labels)} labels")
    best = probs.argmax(axis=1)
    return [labels[k] for k in best], [float(probs[i, k]) for i, k in enumerate(best)]


def tags_to_entities(text: str, words: Sequence[Word], tags: Sequence[str],
                     scores: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """The entities of ``text`` given its ``words`` (with offsets) and one tag (and score) per
    word, in order. Raises ValueError when the lengths differ or a word's offsets do not point
    at the word in ``text``."""
    if len(words) != len(tags) or (scores is not None and len(scores) != len(tags)):
        raise ValueError(f"{len(words)} words, {len(tags)} tags"
                         + ("" if scores is None else f", {len(scores)} scores"))
    for k, w in enumerate(words):
        if text[w.start:w.end] != w.word:
            raise ValueError(f"word {k} {w.word!r} is not at {w.start}:{w.end} of the text")
    out = []
    for type_, s, e in spans(tags):
        start, end = words[s].start, words[e - 1].end
        score = None if scores is None else float(np.mean([scores[i] for i in range(s, e)]))
        out.append({"type": type_, "start": start, "end": end, "text": text[start:end], "score": score})
    return out
