"""The records that pass between the stages and the task kinds' hooks (``mtdnn.kinds``).

A split as read (``RawSplit``) and as tokenised (``TokenizedSplit``), a split's predictions
(``Predictions``), what ``mtdnn tasks check`` found in a split (``SplitCheck``) and what ``mtdnn
tasks init`` reads (``InitOptions``, ``Source``, ``Column``). They stand below the kinds, which
take and return them, and below the stages that make them (``data``, ``evaluation``, ``tasks``),
so that no kind imports a stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class RawSplit:
    """Parallel lists, one entry per kept row. ``labels`` are label names (classification,
    ranking), floats (regression) or None (unlabeled split). ``group_keys``: each row's value of
    the split's ``group`` column (ranking), or None when the split names none (rows are then
    grouped by ``text_a``, the question)."""

    task: str
    split: str
    source: str
    ids: list[str] = field(default_factory=list)
    text_a: list[str] = field(default_factory=list)
    text_b: list[str | None] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    dropped_unlabeled: int = 0
    group_keys: list[str] | None = None
    dropped_no_positive: int = 0  # ranking training rows dropped with their group (no positive answer)
    # tagging: each row is a sentence, its words here (``text_a`` holds them joined by spaces, or the
    # raw text they were split from) and its tags as a tuple in ``labels``
    words: list[list[str]] | None = None
    # span: each row is a question, its ``span.readers.SpanExample`` here
    examples: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.text_a)

    def select(self, keep: list[int]) -> "RawSplit":
        out = RawSplit(self.task, self.split, self.source, dropped_unlabeled=self.dropped_unlabeled,
                       dropped_no_positive=self.dropped_no_positive)
        for name in ("ids", "text_a", "text_b", "labels", "lines"):
            src = getattr(self, name)
            setattr(out, name, [src[i] for i in keep])
        if self.group_keys is not None:
            out.group_keys = [self.group_keys[i] for i in keep]
        if self.words is not None:
            out.words = [self.words[i] for i in keep]
        if self.examples is not None:
            out.examples = [self.examples[i] for i in keep]
        return out

    def group_ids(self) -> np.ndarray:
        """The candidate group of each row (ranking), numbered 0, 1, ... in order of first
        appearance: rows with the same ``group_keys`` value, or without a group column the same
        ``text_a``, form one group. The one place that builds ranking groups."""
        keys = self.group_keys if self.group_keys is not None else self.text_a
        first: dict[str, int] = {}
        return np.asarray([first.setdefault(k, len(first)) for k in keys], dtype=np.int64)


@dataclass
class TokenizedSplit:
    """Ragged token arrays (flat + offsets) and encoded labels of one split."""

    task: str
    split: str
    ids: np.ndarray          # int32 flat token ids
    type_ids: np.ndarray | None  # int8 flat token type ids (None: the tokenizer has none)
    seg: np.ndarray          # int8 flat segment ids (0/1/2)
    offsets: np.ndarray      # int64, len n+1
    labels: np.ndarray       # int64 (classification, ranking: 1 = positive) / float32 (regression)
    groups: np.ndarray       # int64 group id per row (ranking), else arange
    uids: list[str]          # the id of each row (tagging: of each sentence)
    # tagging: the label of each token (flat, like ``ids``; -100: none), the encoder windows
    # (``tagging.alignment.Window``) and the gold tag ids of each sentence's words
    token_labels: np.ndarray | None = None
    windows: list | None = None
    word_labels: list[list[int]] | None = None
    # span: each question (``span.readers.SpanExample``) and the windows of all of them
    # (``span.windows.SpanWindows``, a row per window)
    examples: list | None = None
    span_windows: Any = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        s, e = self.offsets[i], self.offsets[i + 1]
        tt = self.type_ids[s:e] if self.type_ids is not None else None
        return self.ids[s:e], tt, self.seg[s:e]


@dataclass
class Predictions:
    """``outputs``: per-row head outputs in file order (class probabilities (N, C), scores (N,);
    tagging: each window's (tokens, tags) probabilities, an object array). ``preds``: class indices
    (classification; ranking: 1 = best candidate of its group), scores, or (tagging) each sentence's
    tag ids; what they are is the task kind's (``mtdnn.kinds``)."""

    outputs: np.ndarray
    preds: np.ndarray


@dataclass
class SplitCheck:
    """What one split holds. ``error``: why it could not be read (then only the names are set)."""

    task: str
    split: str
    role: str
    labeled: bool
    source: str = ""
    rows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)       # reason -> rows
    labels: dict[str, int] = field(default_factory=dict)        # label -> rows (classification, ranking)
    scores: dict[str, float] = field(default_factory=dict)      # min, max, mean, std (regression)
    groups: dict[str, float] = field(default_factory=dict)      # ranking: groups, candidates per group
    lengths: dict[str, float] = field(default_factory=dict)     # p50 .. max, truncated share, rows
    duplicates: int = 0                                         # rows whose texts an earlier row has
    conflicting: int = 0                                        # of those, texts seen with another label
    overlap: int | None = None                                  # rows whose texts the train split has
    error: str | None = None
    windows: dict[str, float] = field(default_factory=dict)     # kinds that window long rows: windows, split rows
    extra: dict[str, Any] = field(default_factory=dict)         # what a kind adds (``TaskKind.label_stats``)


@dataclass
class InitOptions:
    """What ``mtdnn tasks init`` was asked (``None``: guess it)."""

    source: str
    name: str | None = None
    output: str | None = None
    text: list[str] | None = None
    label: str | None = None
    id: str | None = None
    group: str | None = None
    dev: str | None = None
    test: str | None = None
    label_names: list[str] | None = None
    header: bool = True
    dataset_config: str | None = None
    force: bool = False
    type: str | None = None


@dataclass
class Source:
    """The rows of one split (at most ``ROWS_READ``) and where they come from: a local file, or a
    split of a ``datasets`` dataset (``hub``: path, name, split)."""

    split: str
    role: str
    columns: list[str]
    rows: list[dict[str, Any]]
    path: Path | None = None
    format: str = "csv"
    hub: dict[str, str] | None = None
    class_names: dict[str, list[str]] = field(default_factory=dict)  # column -> ClassLabel names


@dataclass
class Column:
    """What the values of one column look like."""

    name: str
    kind: str          # "int", "float" or "text"
    values: list[str]  # the present values, as the reader sees them (stripped text)
    distinct: int
    mean_length: float
