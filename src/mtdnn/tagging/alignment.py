"""Words to sub-words and back: first-sub-word labels, sliding windows, merged predictions.

Sentences come as lists of words (already split). A fast tokenizer encodes them with
``is_split_into_words=True``; each word's sub-words are read from the encoding's word ids.
Only the FIRST sub-word of a word carries the word's tag id; the other sub-words and the
special tokens carry ``IGNORE_INDEX`` (-100), never a pseudo-label.

Words without any sub-word (e.g. a lone zero-width space that the normalizer removes) are given
the tokenizer's unknown token, one sub-word, so that every word is predicted; they are counted
(``WindowStats.empty_words``). A tokenizer without an unknown token raises instead.

Byte-level BPE (RoBERTa, GPT-2) and Metaspace (SentencePiece) pre-tokenizers must add the
word-initial space to each word, or a word is encoded as if it were glued to the previous one:
``prepare_word_tokenizer`` returns a copy with that setting on (and rejects slow tokenizers).

A sentence longer than ``max_length`` sub-words (special tokens included) is split into
overlapping windows of whole words; consecutive windows share ``overlap`` words. Each word is
predicted once, by its *owner*: of the windows holding it, the one where it is farthest from a
window edge, where the sentence's own start and end are no edge (a word there has all the
context there is); ties go to the earlier window. A single word longer than a window keeps its
first sub-words (counted in ``WindowStats.truncated_words``). Nothing is cut silently.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import torch

from ..errors import ConfigError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def _nodes(tree: Any) -> Iterator[dict]:
    """Every JSON object in a tokenizer component (a Sequence holds others)."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def _needs_word_space(node: dict) -> bool:
    if node.get("type") == "ByteLevel":
        return not node.get("add_prefix_space", False)
    if node.get("type") == "Metaspace":
        return node.get("prepend_scheme", "always") == "never" or node.get("add_prefix_space") is False
    return False


def word_tokenizer_problem(tokenizer: Any) -> str | None:
    """Why ``tokenizer`` cannot encode pre-split words as ``prepare_word_tokenizer`` would
    leave it, or None: not a fast tokenizer, or a byte-level/Metaspace pre-tokenizer that does
    not add the word-initial space to each word."""
    if not getattr(tokenizer, "is_fast", False):
        return (f"{type(tokenizer).__name__} is not a fast tokenizer; tagging needs the word ids "
                "of a fast (tokenizers-backed) one")
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if any(_needs_word_space(n) for n in _nodes(state.get("pre_tokenizer"))):
        return ("the pre-tokenizer does not add a space before each word (byte-level BPE needs "
                "add_prefix_space=True, Metaspace a prepend_scheme other than 'never')")
    return None


def prepare_word_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` itself when it suits pre-split words, else a copy whose byte-level
    pre-tokenizer adds the prefix space (Metaspace: ``prepend_scheme='always'``), as
    ``from_pretrained(..., add_prefix_space=True)`` would give. Raises ConfigError for a slow
    tokenizer."""
    if word_tokenizer_problem(tokenizer) is None:
        return tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(word_tokenizer_problem(tokenizer) or "")
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    for node in _nodes(state.get("pre_tokenizer")):
        if node.get("type") == "ByteLevel":
            node["add_prefix_space"] = True
        elif node.get("type") == "Metaspace":
            node["prepend_scheme"] = "always"
            node.pop("add_prefix_space", None)
    fixed = copy.deepcopy(tokenizer)
    fixed._tokenizer = type(tokenizer.backend_tokenizer).from_str(json.dumps(state))
    fixed.add_prefix_space = True
    log.info("tokenizer %s: the word-initial space is now added to each word (add_prefix_space)",
             getattr(tokenizer, "name_or_path", ""))
    return fixed


def word_pieces(tokenizer: Any, sentences: Sequence[Sequence[str]]) -> tuple[list[list[list[int]]], int]:
    """The sub-word ids of every word of every sentence (no special tokens) and how many words
    had none and were given the unknown token. ``tokenizer`` as ``prepare_word_tokenizer``
    returns it. Raises ValueError for an empty word when the tokenizer has no unknown token."""
    if not sentences:
        return [], 0
    enc = tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False)
    out: list[list[list[int]]] = []
    empty = 0
    unk = tokenizer.unk_token_id
    for i, words in enumerate(sentences):
        pieces: list[list[int]] = [[] for _ in words]
        for token_id, word in zip(enc["input_ids"][i], enc.word_ids(i)):
            if word is not None:
                pieces[word].append(token_id)
        for j, p in enumerate(pieces):
            if not p:
                if unk is None:
                    raise ValueError(f"sentence {i} word {j} ({words[j]!r}) gives no sub-word and the "
                                     "tokenizer has no unknown token")
                p.append(unk)
                empty += 1
        out.append(pieces)
    return out, empty


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after one sequence (``[CLS]`` /
    ``[SEP]``, ``<s>`` / ``</s>``, or none), read from the encoding of a one-word sentence."""
    enc = tokenizer(["a"], is_split_into_words=True, add_special_tokens=True)
    ids, words = enc["input_ids"], enc.word_ids()
    inside = [k for k, w in enumerate(words) if w is not None]
    if not inside:
        raise ValueError("the tokenizer gives no sub-word for the word 'a'; cannot find its special tokens")
    return list(ids[:inside[0]]), list(ids[inside[-1] + 1:])


def plan_windows(piece_counts: Sequence[int], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Word ranges ``(start, end_exclusive)`` covering a sentence whose words have
    ``piece_counts`` sub-words, each range holding at most ``budget`` sub-words (a single longer
    word stands alone). Each range is the longest that fits from its start; the next starts
    ``overlap`` words before the previous end, and at least one word after the previous start."""
    if budget < 1 or overlap < 0:
        raise ValueError(f"budget {budget} must be positive and overlap {overlap} not negative")
    n = len(piece_counts)
    ranges: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end, used = start, 0
        while end < n and (end == start or used + piece_counts[end] <= budget):
            used += piece_counts[end]
            end += 1
        ranges.append((start, end))
        if end == n:
            break
        start = max(start + 1, end - overlap)
    return ranges


def owners(ranges: Sequence[tuple[int, int]], n_words: int) -> list[int]:
    """For each word, the index of the range that predicts it: the one where the word is
    farthest from an edge (the sentence's own start and end are no edge); ties: the earlier."""
    best = [(-1.0, -1)] * n_words
    for k, (start, end) in enumerate(ranges):
        for i in range(start, end):
            left = math.inf if start == 0 else i - start
            right = math.inf if end == n_words else end - 1 - i
            if min(left, right) > best[i][0]:
                best[i] = (min(left, right), k)
    missing = [i for i, (_, k) in enumerate(best) if k < 0]
    if missing:
        raise ValueError(f"words {missing[:5]} are in no window")
    return [k for _, k in best]


@dataclass
class Window:
    """One encoder input: words ``start..end-1`` of sentence ``sentence``. ``word_ids``: the
    sentence-level word index of each token (None for special tokens); ``first_tokens``: the
    position of each word's first sub-word (``first_tokens[i - start]`` for word ``i``);
    ``owned``: the words this window predicts; ``labels``: the tag id at first sub-words, -100
    elsewhere (None when encoded without tags)."""

    sentence: int
    start: int
    end: int
    input_ids: list[int]
    word_ids: list[int | None]
    first_tokens: list[int]
    owned: list[int]
    labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class WindowStats:
    """Counts for the log: sentences, words, windows, sentences split into several windows,
    the most windows of one sentence, words given the unknown token (no sub-word of their own),
    words cut to the window size (their first sub-words kept)."""

    sentences: int = 0
    words: int = 0
    windows: int = 0
    split_sentences: int = 0
    max_windows: int = 0
    empty_words: int = 0
    truncated_words: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _window(sentence: int, span: tuple[int, int], pieces: list[list[int]], tags: Sequence[int] | None,
            owned: list[int], ends: tuple[list[int], list[int]], budget: int) -> Window:
    start, end = span
    ids, word_ids, first = list(ends[0]), [None] * len(ends[0]), []
    labels = None if tags is None else [IGNORE_INDEX] * len(ends[0])
    for i in range(start, end):
        first.append(len(ids))
        piece = pieces[i][:budget]
        ids.extend(piece)
        word_ids.extend([i] * len(piece))
        if labels is not None:
            labels.extend([int(tags[i])] + [IGNORE_INDEX] * (len(piece) - 1))
    ids.extend(ends[1])
    word_ids.extend([None] * len(ends[1]))
    if labels is not None:
        labels.extend([IGNORE_INDEX] * len(ends[1]))
    return Window(sentence, start, end, ids, word_ids, first, owned, labels)


def encode_words(tokenizer: Any, sentences: Sequence[Sequence[str]],
                 tag_ids: Sequence[Sequence[int]] | None = None, *, max_length: int = 512,
                 overlap: int = 16, label_owned_only: bool = False) -> tuple[list[Window], WindowStats]:
    """Encoder inputs for pre-split ``sentences`` (with their tag ids, or None to predict):
    one window per sentence that fits ``max_length`` tokens (special tokens included), else
    overlapping windows (module docstring). With ``label_owned_only`` a window labels only the
    words it predicts; by default it labels all its words. ``tokenizer`` is passed through
    ``prepare_word_tokenizer`` first."""
    tokenizer = prepare_word_tokenizer(tokenizer)
    if tag_ids is not None and [len(t) for t in tag_ids] != [len(s) for s in sentences]:
        raise ValueError("tag_ids must hold one tag id per word of each sentence")
    ends = special_tokens(tokenizer)
    budget = max_length - len(ends[0]) - len(ends[1])
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room beside {budget - max_length} special tokens")
    all_pieces, empty = word_pieces(tokenizer, sentences)
    stats = WindowStats(sentences=len(sentences), words=sum(len(s) for s in sentences), empty_words=empty)
    windows: list[Window] = []
    for s, pieces in enumerate(all_pieces):
        counts = [min(len(p), budget) for p in pieces]
        stats.truncated_words += sum(len(p) > budget for p in pieces)
        ranges = plan_windows(counts, budget, overlap)
        own = owners(ranges, len(pieces))
        tags = None if tag_ids is None else tag_ids[s]
        for k, span in enumerate(ranges):
            owned = [i for i in range(*span) if own[i] == k]
            labelled = tags if not label_owned_only or tags is None else \
                [t if own[i] == k else IGNORE_INDEX for i, t in enumerate(tags)]
            windows.append(_window(s, span, pieces, labelled, owned, ends, budget))
        stats.split_sentences += len(ranges) > 1
        stats.max_windows = max(stats.max_windows, len(ranges))
    stats.windows = len(windows)
    return windows, stats


def merge_windows(windows: Sequence[Window], token_values: Sequence[Any]) -> list[list[Any]]:
    """Per-word values of every sentence from per-token values of every window:
    ``token_values[k][t]`` belongs to token ``t`` of ``windows[k]`` (a list, or a padded
    ``[windows, length, ...]`` tensor or array of label ids, logits or probabilities). Each word
    takes the value at its first sub-word in the window that owns it."""
    if len(token_values) != len(windows):
        raise ValueError(f"{len(token_values)} rows of values for {len(windows)} windows")
    sizes: dict[int, int] = {}
    for w in windows:
        sizes[w.sentence] = max(sizes.get(w.sentence, 0), w.end)
    if sorted(sizes) != list(range(len(sizes))):
        raise ValueError("the windows do not cover sentences 0..n-1")
    out: list[list[Any]] = [[None] * sizes[s] for s in range(len(sizes))]
    seen = [[False] * sizes[s] for s in range(len(sizes))]
    for w, values in zip(windows, token_values):
        for i in w.owned:
            out[w.sentence][i] = values[w.first_tokens[i - w.start]]
            seen[w.sentence][i] = True
    missing = [(s, i) for s, row in enumerate(seen) for i, ok in enumerate(row) if not ok]
    if missing:
        raise ValueError(f"words (sentence, word) {missing[:5]} are owned by no window")
    return out


def collate_windows(windows: Sequence[Window], pad_token_id: int,
                    token_type_ids: bool = False) -> dict[str, torch.Tensor]:
    """A right-padded batch: ``input_ids``, ``attention_mask``, ``labels`` (padded with -100;
    only when the windows have labels) and, if asked, all-zero ``token_type_ids``."""
    length = max((len(w) for w in windows), default=0)
    ids = torch.full((len(windows), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(windows), length), dtype=torch.long)
    for k, w in enumerate(windows):
        ids[k, :len(w)] = torch.tensor(w.input_ids, dtype=torch.long)
        mask[k, :len(w)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if windows and all(w.labels is not None for w in windows):
        labels = torch.full((len(windows), length), IGNORE_INDEX, dtype=torch.long)
        for k, w in enumerate(windows):
            labels[k, :len(w)] = torch.tensor(w.labels, dtype=torch.long)
        batch["labels"] = labels
    if token_type_ids:
        batch["token_type_ids"] = torch.zeros_like(ids)
    return batch
