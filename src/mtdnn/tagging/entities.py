"""Raw text to words with character offsets, and per-word tags back to entities in the text.

``split_words`` splits raw text into words as BERT's basic tokenizer does (the normaliser's
cleanup and the pre-tokenizer of WordPiece encoders), so that a WordPiece model's words (its tokens
without the ``##`` prefix start a word) are exactly these words, and
``transformers.pipeline("token-classification", aggregation_strategy="first")`` on a standard
folder of the task sees the words mtdnn predicts:

* whitespace separates words;
* every punctuation character (ASCII punctuation, which includes ``$ + < = > ^ ` | ~``, and the
  Unicode punctuation categories P*) is a word of its own: ``O'Neill`` is three words, ``co-op``
  three, ``U.S.`` four;
* every CJK ideograph (the ranges BERT isolates) is a word of its own; other scripts written
  without spaces (kana, Thai) are not segmented: a run of their characters is one word;
* control and invisible format characters (categories Cc, Cf, Co, Cn other than tab and line
  breaks: zero-width space, BOM, soft hyphen, zero-width joiner) are dropped: they neither
  separate words nor start one, but stay inside a word they interrupt (``text[start:end]``);
* every other character (letters, digits, combining marks, symbols such as ``€`` or emoji) is
  part of a word.

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

# the ideograph ranges BERT's normaliser surrounds with spaces (``handle_chinese_chars``)
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


class Word(NamedTuple):
    """A word of raw text and its character offsets: ``text[start:end] == word``."""

    word: str
    start: int
    end: int


def _dropped(ch: str) -> bool:
    """A character BERT's cleanup removes (NUL, U+FFFD, control and format characters)."""
    return ch in "\0\ufffd" or (ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cn"))


def _alone(ch: str) -> bool:
    """A character that is a word by itself: punctuation or a CJK ideograph."""
    if ch in _ASCII_PUNCT or unicodedata.category(ch)[0] == "P":
        return True
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK)


def split_words(text: str) -> list[Word]:
    """The words of ``text`` with their offsets (rules in the module docstring)."""
    words: list[Word] = []
    start = end = -1  # the word being read (start < 0: none)
    for i, ch in enumerate(text):
        if _dropped(ch):
            continue
        if ch.isspace() or _alone(ch):
            if start >= 0:
                words.append(Word(text[start:end], start, end))
                start = -1
            if not ch.isspace():
                words.append(Word(ch, i, i + 1))
            continue
        if start < 0:
            start = i
        end = i + 1
    if start >= 0:
        words.append(Word(text[start:end], start, end))
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
