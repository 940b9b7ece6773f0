"""From per-window start/end logits to answer texts: n-best span decoding and the null answer.

In each window the ``n_best`` highest start logits and the ``n_best`` highest end logits among
the context tokens (offsets not -1) are paired; a pair is a span when end >= start and it has at
most ``max_answer_length`` tokens; its score is start logit + end logit. The spans of all windows
of one example are pooled (a span seen by two windows keeps its best score), and the ``n_best``
best, by score, then earliest start, then earliest end, are kept. The answer text is the context
sliced by the character offsets of the span's first and last token.

Unanswerable questions (SQuAD v2.0): an example's null score is the lowest, over its windows, of
start logit + end logit at the null position (index 0): the window most sure that the answer is
somewhere in it speaks for the example. The prediction is "" when null score - best span score
> ``threshold``; ``choose_null_threshold`` picks the threshold that maximises F1 on a set of
examples, which must be held out from the examples whose scores are reported. Where no held-out
training questions are evaluated, ``threshold_part`` draws the questions of an evaluation split to
choose it on: a quarter (``THRESHOLD_FRACTION``) of its articles, or of its questions when it has
fewer than two titled articles, with a fixed seed (``THRESHOLD_SEED``), the same for every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .metrics import question_scores

NULL_INDEX = 0
THRESHOLD_FRACTION = 0.25  # the share of an evaluation split's articles (or questions) the threshold is chosen on
THRESHOLD_SEED = 0


@dataclass(frozen=True)
class SpanCandidate:
    """One answer span: its text, score, characters ``[char_start, char_end)`` in the context,
    the window (row of the window arrays) and the tokens it was found at."""

    text: str
    score: float
    char_start: int
    char_end: int
    window: int
    start_token: int
    end_token: int


@dataclass(frozen=True)
class SpanPrediction:
    """The decoded answers of one example: ``nbest`` best first (may be empty when no window
    allows a span) and the example's null score."""

    id: str
    nbest: tuple[SpanCandidate, ...]
    null_score: float

    @property
    def best(self) -> SpanCandidate | None:
        return self.nbest[0] if self.nbest else None

    @property
    def null_margin(self) -> float:
        """null score - best span score (+inf without any span): how much the null answer wins."""
        return self.null_score - self.nbest[0].score if self.nbest else float("inf")

    def answer(self, threshold: float | None = None) -> str:
        """The best span's text; with a ``threshold`` (SQuAD v2.0), "" when the null margin
        exceeds it."""
        if self.best is None or (threshold is not None and self.null_margin > threshold):
            return ""
        return self.best.text


def _top_context(logits: np.ndarray, context: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest logits among context tokens, highest first (ties: lower index)."""
    idx = np.flatnonzero(context)
    order = np.lexsort((idx, -logits[idx]))
    return idx[order[:k]]


def window_candidates(start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray, *,
                      n_best: int = 20, max_answer_length: int = 30) -> list[tuple[float, int, int]]:
    """(score, start token, end token) of the spans of one window (logits of shape (L,), offsets
    (L, 2) with -1 outside the context), best first, ties by earlier start, then earlier end."""
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    context = np.asarray(offsets)[:, 0] >= 0
    starts = _top_context(start_logits, context, n_best)
    ends = _top_context(end_logits, context, n_best)
    s, e = np.meshgrid(starts, ends, indexing="ij")
    ok = (e >= s) & (e - s + 1 <= max_answer_length)
    s, e = s[ok], e[ok]
    scores = start_logits[s] + end_logits[e]
    order = np.lexsort((e, s, -scores))
    return [(float(scores[i]), int(s[i]), int(e[i])) for i in order]


def decode_example(example_id: str, context: str, start_logits: np.ndarray, end_logits: np.ndarray,
                   offsets: np.ndarray, windows: Sequence[int], *, n_best: int = 20,
                   max_answer_length: int = 30) -> SpanPrediction:
    """Decode one example from the logits (K, L) and offsets (K, L, 2) of its K windows;
    ``windows``: their row numbers, kept in the candidates."""
    best: dict[tuple[int, int], SpanCandidate] = {}
    for k, row in enumerate(windows):
        for score, s, e in window_candidates(start_logits[k], end_logits[k], offsets[k],
                                             n_best=n_best, max_answer_length=max_answer_length):
            lo, hi = int(offsets[k, s, 0]), int(offsets[k, e, 1])
            if (lo, hi) not in best or score > best[(lo, hi)].score:
                best[(lo, hi)] = SpanCandidate(context[lo:hi], score, lo, hi, int(row), s, e)
    ranked = sorted(best.values(), key=lambda c: (-c.score, c.char_start, c.char_end))
    null = np.asarray(start_logits, dtype=np.float64)[:, NULL_INDEX] \
        + np.asarray(end_logits, dtype=np.float64)[:, NULL_INDEX]
    return SpanPrediction(example_id, tuple(ranked[:n_best]), float(null.min()))


def decode_predictions(examples: Sequence[Any], example_index: np.ndarray, offsets: np.ndarray,
                       start_logits: Any, end_logits: Any, *, n_best: int = 20,
                       max_answer_length: int = 30) -> dict[str, SpanPrediction]:
    """``{example id: SpanPrediction}`` for every example (``id``, ``context``) from the logits
    (W, L) of all windows (numpy arrays or CPU tensors) and the windows' ``example_index`` (W,)
    and ``offsets`` (W, L, 2), as ``windows.SpanWindows`` holds them."""
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    example_index = np.asarray(example_index)
    if not start_logits.shape == end_logits.shape == offsets.shape[:2] \
            or example_index.shape != start_logits.shape[:1]:
        raise ValueError(f"shapes disagree: start {start_logits.shape}, end {end_logits.shape}, "
                         f"offsets {offsets.shape}, example_index {example_index.shape}")
    order = np.argsort(example_index, kind="stable")
    bounds = np.searchsorted(example_index[order], np.arange(len(examples) + 1))
    out = {}
    for i, ex in enumerate(examples):
        rows = order[bounds[i]:bounds[i + 1]]
        if len(rows) == 0:
            raise ValueError(f"example {i} ({ex.id!r}) has no window")
        out[ex.id] = decode_example(ex.id, ex.context, start_logits[rows], end_logits[rows],
                                    offsets[rows], rows, n_best=n_best,
                                    max_answer_length=max_answer_length)
    return out


def answers(predictions: Mapping[str, SpanPrediction], threshold: float | None = None) -> dict[str, str]:
    """``{id: answer text}`` for ``metrics.write_predictions_json`` and ``metrics.squad_scores``;
    ``threshold``: None for SQuAD v1.1 (always a span), the null threshold for v2.0."""
    return {qid: p.answer(threshold) for qid, p in predictions.items()}


def choose_null_threshold(predictions: Mapping[str, SpanPrediction],
                          golds: Mapping[str, Sequence[str]]) -> tuple[float, float]:
    """(threshold, F1 in percent at it): the threshold that maximises SQuAD v2.0 F1 over the
    questions of ``golds`` (``{id: [gold texts]}``, [] for unanswerable), every one of which
    must have a prediction. Candidates: every finite null margin (examples with a margin above
    it predict ""), and one below them all (every prediction ""); among equal F1 the lowest."""
    ids = list(golds)
    missing = [qid for qid in ids if qid not in predictions]
    if not ids or missing:
        raise ValueError(f"no questions, or questions without a prediction: {missing[:5]}")
    margins = np.asarray([predictions[q].null_margin for q in ids])
    span_f1 = np.asarray([question_scores(predictions[q].answer(), golds[q])[1] for q in ids])
    null_f1 = np.asarray([question_scores("", golds[q])[1] for q in ids])
    finite = np.unique(margins[np.isfinite(margins)])
    thresholds = np.concatenate([[finite[0] - 1.0 if len(finite) else 0.0], finite])
    # F1 at t: a span where margin <= t, "" elsewhere = all "" + the gains of the spans taken
    order = np.argsort(margins, kind="stable")
    gains = np.concatenate([[0.0], np.cumsum((span_f1 - null_f1)[order])])
    taken = np.searchsorted(margins[order], thresholds, side="right")
    totals = null_f1.sum() + gains[taken]
    best = int(np.argmax(np.round(totals, 9)))  # the first maximum (the lowest threshold); rounded:
    # equal F1 summed in another order must tie
    return float(thresholds[best]), 100.0 * float(totals[best]) / len(ids)


def threshold_part(examples: Sequence[Any], fraction: float = THRESHOLD_FRACTION,
                   seed: int = THRESHOLD_SEED) -> np.ndarray:
    """A boolean mask over ``examples`` (``id``, ``title``): the questions to choose the null
    threshold on. ``round(fraction * n)`` of the ``n`` articles (distinct non-empty titles, in
    order of first appearance) drawn with ``seed``, at least one and never all; with fewer than
    two titled articles, that share of the questions the same way. A single question: none."""
    titles = [str(getattr(ex, "title", "") or "") for ex in examples]
    names = list(dict.fromkeys(t for t in titles if t))
    rng = np.random.default_rng(seed)
    if len(names) >= 2 and all(titles):
        k = min(max(1, round(fraction * len(names))), len(names) - 1)
        chosen = set(rng.choice(len(names), size=k, replace=False).tolist())
        picked = {names[i] for i in chosen}
        return np.asarray([t in picked for t in titles], dtype=bool)
    n = len(examples)
    mask = np.zeros(n, dtype=bool)
    if n >= 2:
        k = min(max(1, round(fraction * n)), n - 1)
        mask[rng.choice(n, size=k, replace=False)] = True
    return mask
