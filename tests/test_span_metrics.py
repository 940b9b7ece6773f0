"""SQuAD exact match and F1: every normalisation rule, bags of words, several gold answers, empty
predictions, the v1.1/v2.0 difference on answers with no words, the HasAns/NoAns breakdown and
the atomic predictions file; all expectations computed by hand."""

from __future__ import annotations

import json

import pytest

from mtdnn.span import metrics
from mtdnn.span.metrics import (exact_match, f1_score, normalize_answer, question_scores,
                                squad_scores, write_predictions_json)


@pytest.mark.parametrize("text, expected", [
    ("Denver BRONCOS", "denver broncos"),              # lower case
    ("Hello, world! (1990)", "hello world 1990"),       # punctuation removed
    ("don't", "dont"),                                  # removed, not replaced by a space
    ("a-team", "ateam"),                                # punctuation first, then articles
    ("The cat and an apple, a day", "cat and apple day"),  # a, an, the as words
    ("theatre another anthem", "theatre another anthem"),  # not inside words
    ("THE", ""),
    ("a–b", "–b"),                                      # an en dash is no punctuation, but a word boundary
    ("“Denver”", "“denver”"),                          # curly quotes are not in string.punctuation
    ("  New\t\nYork  City ", "new york city"),          # white space collapsed
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_and_f1_single_gold():
    assert exact_match("the Denver Broncos.", "Denver Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    # [denver broncos won] vs [denver broncos]: P = 2/3, R = 1
    assert f1_score("the Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)
    # bags: [x x y] vs [x y y] share one x and one y: P = R = 2/3
    assert f1_score("x x y", "x y y") == pytest.approx(2 / 3)
    assert f1_score("Carolina", "Denver Broncos") == 0.0
    assert f1_score("Broncos Denver", "Denver Broncos") == 1.0  # order does not matter


def test_several_golds_take_the_best():
    assert question_scores("Broncos", ["Denver Broncos", "the Broncos", "Carolina"]) == (1.0, 1.0)
    # [denver] vs [denver broncos]: 2/3; vs [denver broncos team]: 1/2
    em, f1 = question_scores("Denver", ["Denver Broncos", "Denver Broncos team"])
    assert (em, f1) == (0.0, pytest.approx(2 / 3))


def test_empty_predictions_and_unanswerable():
    assert question_scores("", ["Denver"]) == (0.0, 0.0)
    assert question_scores("", []) == (1.0, 1.0)
    assert question_scores("  the ", []) == (1.0, 1.0)  # normalises to ""
    assert question_scores("Denver", []) == (0.0, 0.0)
    with pytest.raises(ValueError, match="v1.1"):
        question_scores("", [], rules="v1.1")


def test_answers_without_words_v11_and_v20():
    # v1.1: a gold "." counts; F1 with no words is 0
    assert question_scores(".", ["."], rules="v1.1") == (1.0, 0.0)
    assert question_scores("", [".", "Denver"], rules="v1.1") == (1.0, 0.0)
    assert f1_score("", "", rules="v1.1") == 0.0
    # v2.0: a gold "." is dropped; with none left the question is scored against ""
    assert question_scores(".", ["."]) == (1.0, 1.0)
    assert question_scores("", [".", "Denver"]) == (0.0, 0.0)
    assert f1_score("", "") == 1.0 and f1_score("Denver", "") == 0.0


def test_squad_scores_v2_breakdown():
    golds = {"a": ["Denver Broncos"], "b": ["Carolina"], "c": [], "d": []}
    preds = {"a": "Denver", "b": "Carolina", "c": "", "d": "Santa Clara", "zz": "ignored"}
    s = squad_scores(preds, golds)
    # per question (EM, F1): a (0, 2/3), b (1, 1), c (1, 1), d (0, 0)
    assert s == pytest.approx({
        "exact": 50.0, "f1": 100 * (2 / 3 + 2) / 4, "total": 4,
        "HasAns_exact": 50.0, "HasAns_f1": 100 * (2 / 3 + 1) / 2, "HasAns_total": 2,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2, "missing": 0})


def test_squad_scores_v1_missing_predictions_score_zero():
    golds = {"a": ["Denver Broncos", "Broncos"], "b": ["Carolina"]}
    s = squad_scores({"a": "Broncos"}, golds, rules="v1.1")
    assert s == {"exact": 50.0, "f1": 50.0, "total": 2, "missing": 1}


def test_write_predictions_json_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out" / "predictions.json"
    write_predictions_json(path, {"q1": "Denver Broncos", "q2": "", "q3": "Zürich"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"q1": "Denver Broncos", "q2": "", "q3": "Zürich"}
    assert "Zürich" in path.read_text(encoding="utf-8")
    write_predictions_json(path, {"q1": "Denver"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"q1": "Denver"}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(metrics.json, "dump", broken)
    with pytest.raises(OSError, match="disk full"):
        write_predictions_json(path, {"q1": "other"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"q1": "Denver"}  # unchanged
    assert sorted(p.name for p in path.parent.iterdir()) == ["predictions.json"]  # no temp file left
