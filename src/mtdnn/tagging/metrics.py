"""Tagging metrics in percent (mtdnn's convention).

Entity level (NER, chunking): an entity is predicted correctly when its span and type both
equal a gold entity's (conlleval). Entities are read from each sentence's tags by
``schemes.spans`` (conlleval's rules, any of IOB1, IOB2, IOBES). Precision = correct /
predicted, recall = correct / gold, F1 their harmonic mean (0 where undefined); micro over
all types, and per type with its support (the number of gold entities). These equal
conlleval's and seqeval's default-mode figures.

Type confusion: rows are gold types plus ``SPURIOUS`` (predicted entities whose span matches
no gold entity), columns are predicted types plus ``MISSED`` (gold entities whose span no
prediction matches). A gold and a predicted entity with the same span add 1 to
``[gold type, predicted type]`` (the diagonal holds the correct entities). A boundary error
counts once as MISSED and once as SPURIOUS. Row sums are the gold counts, column sums the
predicted counts.

Plain tags (POS): token accuracy over all words.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .schemes import Span, spans

MISSED = "MISSED"
SPURIOUS = "SPURIOUS"
MICRO = "micro"


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 in percent, and the counts behind them."""

    precision: float
    recall: float
    f1: float
    support: int
    predicted: int
    correct: int

    @classmethod
    def from_counts(cls, correct: int, predicted: int, gold: int) -> "PRF":
        p = 100.0 * correct / predicted if predicted else 0.0
        r = 100.0 * correct / gold if gold else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return cls(p, r, f, gold, predicted, correct)


def _sentence_spans(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> list[tuple[list[Span], list[Span]]]:
    if len(gold) != len(pred):
        raise ValueError(f"{len(pred)} predicted sentences for {len(gold)} gold ones")
    out = []
    for k, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {k}: {len(p)} predicted tags for {len(g)} words")
        out.append((spans(g), spans(p)))
    return out


def entity_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, PRF]:
    """Per-type scores (types sorted) and ``"micro"`` over all types, from gold and predicted
    tag sequences of the same sentences."""
    n_gold: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    n_correct: Counter[str] = Counter()
    for g_spans, p_spans in _sentence_spans(gold, pred):
        n_gold.update(t for t, _, _ in g_spans)
        n_pred.update(t for t, _, _ in p_spans)
        n_correct.update(t for t, _, _ in set(g_spans) & set(p_spans))
    report = {t: PRF.from_counts(n_correct[t], n_pred[t], n_gold[t]) for t in sorted(n_gold | n_pred)}
    report[MICRO] = PRF.from_counts(sum(n_correct.values()), sum(n_pred.values()), sum(n_gold.values()))
    return report


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """A flat metrics dict: ``precision``, ``recall``, ``f1`` (micro) and ``f1_<type>`` per type."""
    report = entity_report(gold, pred)
    micro = report.pop(MICRO)
    out = {"precision": micro.precision, "recall": micro.recall, "f1": micro.f1}
    out.update({f"f1_{t}": s.f1 for t, s in report.items()})
    return out


@dataclass
class TypeConfusion:
    """Counts ``[row, column]``: rows are gold types then SPURIOUS, columns predicted types
    then MISSED (module docstring)."""

    rows: list[str]
    columns: list[str]
    counts: np.ndarray

    def get(self, row: str, column: str) -> int:
        return int(self.counts[self.rows.index(row), self.columns.index(column)])

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {r: {c: self.get(r, c) for c in self.columns} for r in self.rows}


def type_confusion(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> TypeConfusion:
    """The confusion of entity types among span-matched entities, with MISSED and SPURIOUS."""
    pairs = _sentence_spans(gold, pred)
    types = sorted({t for g, p in pairs for t, _, _ in g + p})
    rows, columns = types + [SPURIOUS], types + [MISSED]
    counts = np.zeros((len(rows), len(columns)), dtype=np.int64)
    for g_spans, p_spans in pairs:
        predicted = {(s, e): t for t, s, e in p_spans}
        gold_at = {(s, e) for _, s, e in g_spans}
        for t, s, e in g_spans:
            column = predicted.get((s, e), MISSED)
            counts[rows.index(t), columns.index(column)] += 1
        for t, s, e in p_spans:
            if (s, e) not in gold_at:
                counts[rows.index(SPURIOUS), columns.index(t)] += 1
    return TypeConfusion(rows, columns, counts)


def token_accuracy(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """The percentage of words whose predicted tag equals the gold tag (plain tags, e.g. POS)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(pred)} predicted sentences for {len(gold)} gold ones")
    total = correct = 0
    for k, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {k}: {len(p)} predicted tags for {len(g)} words")
        total += len(g)
        correct += sum(a == b for a, b in zip(g, p))
    return 100.0 * correct / total if total else 0.0


def report_dict(report: dict[str, PRF]) -> dict[str, dict[str, float]]:
    """``entity_report``'s result as plain dicts (for JSON)."""
    return {name: asdict(scores) for name, scores in report.items()}
