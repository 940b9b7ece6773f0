"""Token windows for extractive question answering: question + context -> fixed-length windows.

A context longer than one window is cut into several overlapping windows (Hugging Face fast
tokenizer, ``truncation="only_second"``, ``return_overflowing_tokens``); ``stride`` is the number
of context tokens two neighbouring windows share. Every window repeats the whole question (cut
to ``max_question_tokens`` first). The window is the unit of a batch.

Offsets: ``offsets[w, t]`` is the character span ``[start, end)`` of token ``t`` of window ``w``
in its example's context, trimmed of white space (a byte-level BPE token keeps its prefix space
in the tokenizer's offsets; here it does not); ``(-1, -1)`` for question, special and padding
tokens and for tokens that cover only white space: only context tokens can start or end an answer.

Training targets: a window that holds the whole first gold answer targets its first and last
token; any other window, and every window of an unanswerable example, targets the null position,
index 0 (the tokenizer's leading special token, [CLS] or <s>). An answer none of whose characters
fall on a context token is *unmappable* and one that no single window holds whole (longer than
a window's context, or than the overlap ``stride`` where it crosses a window boundary) is
*unheld*: their examples' windows all target null. An answer whose tokens cover more characters
than the answer text (it starts or ends inside a token) is *inexact*: its windows target those
tokens. All three are listed by example index, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError

NULL_INDEX = 0


@dataclass
class SpanWindows:
    """Parallel arrays, one row per window (W windows of L tokens). ``token_type_ids`` is None
    when the tokenizer has none (RoBERTa). ``example_index[w]``: the index, in the example list
    given to ``build_windows``, of window ``w``'s example (the windows of one example are
    consecutive). ``unmappable``, ``unheld``, ``inexact``, ``truncated_questions``: example
    indices (see the module docstring)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None
    offsets: np.ndarray
    example_index: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    unmappable: list[int] = field(default_factory=list)
    unheld: list[int] = field(default_factory=list)
    inexact: list[int] = field(default_factory=list)
    truncated_questions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def context_mask(self) -> np.ndarray:
        """(W, L) bool: the tokens that can start or end an answer."""
        return self.offsets[..., 0] >= 0

    def batch(self, rows: Sequence[int] | np.ndarray | None = None,
              targets: bool = True) -> dict[str, torch.Tensor]:
        """Model inputs of the given windows (all when None) as int64 tensors, named as Hugging
        Face question answering models name them (with ``start_positions``/``end_positions``
        when ``targets``)."""
        idx = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        names = ["input_ids", "attention_mask"]
        names += ["token_type_ids"] if self.token_type_ids is not None else []
        names += ["start_positions", "end_positions"] if targets else []
        return {n: torch.from_numpy(np.ascontiguousarray(getattr(self, n)[idx])) for n in names}


def _cut_questions(tokenizer: Any, questions: list[str],
                   max_tokens: int) -> tuple[list[str], list[int], int]:
    """Questions (leading white space removed) cut at the end of their ``max_tokens``-th token,
    the indices of those cut and the most tokens a question has now."""
    questions = [q.lstrip() for q in questions]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out, cut, longest = [], [], 0
    for i, (question, first) in enumerate(zip(questions, enc["offset_mapping"])):
        q, n, now = question, max_tokens, first
        while len(now) > max_tokens and n >= 1:  # a cut text may tokenise differently: retry
            q = question[:first[n - 1][1]]
            now = tokenizer(q, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            n -= 1
        if q != question:
            cut.append(i)
        out.append(q)
        longest = max(longest, len(now))
    return out, cut, longest


def _check_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("answer spans need a fast (Rust) tokenizer for character offsets; "
                          f"{type(tokenizer).__name__} is not one")


def _check_room(tokenizer: Any, max_length: int, stride: int, question_tokens: int) -> None:
    """Every window must hold more than ``stride`` context tokens after the longest question."""
    room = max_length - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
    if room < 1:
        raise ConfigError(f"max_length {max_length} leaves no room for the context after the "
                          f"longest question ({question_tokens} tokens) and the special tokens")
    if not 0 <= stride < room:
        raise ConfigError(f"stride {stride} must be at least 0 and below {room}, the context "
                          f"tokens a window of {max_length} holds after the longest question "
                          f"({question_tokens} tokens) and the special tokens")


def _window_offsets(enc: Any, w: int, context: str) -> np.ndarray:
    """(L, 2) context offsets of window ``w``, white space trimmed, -1 outside the context."""
    seq = enc.sequence_ids(w)
    if seq[NULL_INDEX] is not None:
        raise ConfigError("the tokenizer does not start a pair with a special token: the null "
                          f"answer position {NULL_INDEX} would be a text token")
    out = np.full((len(seq), 2), -1, dtype=np.int64)
    for t, (s, e) in enumerate(enc["offset_mapping"][w]):
        if seq[t] != 1:
            continue
        while s < e and context[s].isspace():
            s += 1
        while e > s and context[e - 1].isspace():
            e -= 1
        if s < e:
            out[t] = (s, e)
    return out


def _answer_targets(offsets: np.ndarray, start: int, end: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Start and end token per window (all windows of one example; null where the window does not
    hold the whole answer), and whether any context token overlaps ``[start, end)``."""
    ctx = offsets[..., 0] >= 0
    overlap = ctx & (offsets[..., 1] > start) & (offsets[..., 0] < end)
    n_windows = offsets.shape[0]
    starts = np.full(n_windows, NULL_INDEX, dtype=np.int64)
    ends = np.full(n_windows, NULL_INDEX, dtype=np.int64)
    if not overlap.any():
        return starts, ends, False
    lo, hi = offsets[..., 0][overlap].min(), offsets[..., 1][overlap].max()
    counts = overlap.sum(axis=1)
    for w in range(n_windows):
        w_lo, w_hi = offsets[w, ctx[w], 0].min(), offsets[w, ctx[w], 1].max()
        if counts[w] == counts.max() and w_lo <= lo and w_hi >= hi:
            hits = np.flatnonzero(overlap[w])
            starts[w], ends[w] = hits[0], hits[-1]
    return starts, ends, True


def _tokenize(tokenizer: Any, questions: list[str], contexts: list[str], max_length: int,
              stride: int) -> Any:
    try:
        return tokenizer(questions, contexts, truncation="only_second", max_length=max_length,
                         stride=stride, return_overflowing_tokens=True,
                         return_offsets_mapping=True, padding="max_length")
    except Exception as e:  # the Rust tokenizer's own message for settings it cannot honour
        raise ConfigError(f"cannot cut the examples into windows: {e}") from e


def build_windows(examples: Sequence[Any], tokenizer: Any, *, max_length: int = 384,
                  stride: int = 128, max_question_tokens: int = 64) -> SpanWindows:
    """Cut every example (``question``, ``context``, ``answers``, ``is_impossible``, as
    ``readers.SpanExample``) into windows of ``max_length`` tokens, padded to ``max_length``.
    The first gold answer sets the training targets (see the module docstring)."""
    _check_fast(tokenizer)
    if not examples:
        raise DataError("no examples to cut into windows")
    if max_question_tokens < 1:
        raise ConfigError(f"max_question_tokens must be at least 1, not {max_question_tokens}")
    questions, cut, longest = _cut_questions(tokenizer, [ex.question for ex in examples],
                                             max_question_tokens)
    _check_room(tokenizer, max_length, stride, longest)
    contexts = [ex.context for ex in examples]
    enc = _tokenize(tokenizer, questions, contexts, max_length, stride)
    example_index = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    offsets = np.stack([_window_offsets(enc, w, contexts[i]) for w, i in enumerate(example_index)])
    starts = np.zeros(len(example_index), dtype=np.int64)
    ends = np.zeros(len(example_index), dtype=np.int64)
    unmappable, unheld, inexact = [], [], []
    bounds = np.searchsorted(example_index, np.arange(len(examples) + 1))
    for i, ex in enumerate(examples):
        if ex.is_impossible or not ex.answers:
            continue
        text, start = ex.answers[0]
        rows = slice(bounds[i], bounds[i + 1])
        starts[rows], ends[rows], mapped = _answer_targets(offsets[rows], start, start + len(text))
        if not mapped:
            unmappable.append(i)
        elif not (starts[rows] != NULL_INDEX).any():
            unheld.append(i)
        elif _covered_text(offsets[rows], ex.context, start, start + len(text)) != text.strip():
            inexact.append(i)
    types = enc.get("token_type_ids") if "token_type_ids" in tokenizer.model_input_names else None
    return SpanWindows(
        input_ids=np.asarray(enc["input_ids"], dtype=np.int64),
        attention_mask=np.asarray(enc["attention_mask"], dtype=np.int64),
        token_type_ids=None if types is None else np.asarray(types, dtype=np.int64),
        offsets=offsets, example_index=example_index, start_positions=starts, end_positions=ends,
        unmappable=unmappable, unheld=unheld, inexact=inexact, truncated_questions=cut)


def _covered_text(offsets: np.ndarray, context: str, start: int, end: int) -> str:
    """The context characters of the tokens that overlap ``[start, end)``."""
    ctx = offsets[..., 0] >= 0
    overlap = ctx & (offsets[..., 1] > start) & (offsets[..., 0] < end)
    return context[offsets[..., 0][overlap].min():offsets[..., 1][overlap].max()]
