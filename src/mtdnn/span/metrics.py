"""SQuAD exact match and F1, with the rules of the official evaluation scripts (v1.1 and v2.0).

Normalisation (both metrics): lower case; every character of ``string.punctuation`` removed; the
articles "a", "an" and "the" removed where they stand as words (regular-expression word
boundaries); runs of white space collapsed to one space, none at the ends. Exact match: the two
normalised strings are equal. F1: over the bags (multisets) of the normalised words. Both take
the maximum over the gold answers of a question.

Unanswerable questions (SQuAD v2.0, no gold answers) are scored against the one gold answer "":
only an empty prediction scores 1. The scripts differ only where something normalises to no
words at all (the SQuAD v1.1 dev file has three such gold answers, "."):

- v1.1: F1 is 0 when the prediction or the gold answer has no words; such gold answers count
  (exact match 1 for a prediction that also normalises to "").
- v2.0: F1 is 1 when both have no words, else 0; gold answers that normalise to "" are dropped
  first, and a question left with none is scored against "" (it stays in ``HasAns``).

``rules`` chooses (default v2.0, which also scores unanswerable questions); v1.1 rules refuse
unanswerable questions.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

from ..atomic import atomic_write

Rules = Literal["v1.1", "v2.0"]

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles removed as words, white space collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, rules: Rules = "v2.0") -> float:
    """F1 of the bags of normalised words (see the module docstring for empty bags)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(rules == "v2.0" and pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(metric: Callable[[str, str], float], prediction: str,
                    golds: Sequence[str]) -> float:
    """The best score of ``prediction`` against any gold answer; no gold answers (unanswerable)
    counts as the one gold answer ""."""
    return max(metric(prediction, gold) for gold in (golds or [""]))


def question_scores(prediction: str, golds: Sequence[str], rules: Rules = "v2.0") -> tuple[float, float]:
    """(exact match, F1) of one prediction, each in [0, 1]."""
    if rules == "v1.1" and not golds:
        raise ValueError("SQuAD v1.1 rules score answerable questions only (no gold answers given)")
    if rules == "v2.0":
        golds = [gold for gold in golds if normalize_answer(gold)]
    return (best_over_golds(exact_match, prediction, golds),
            best_over_golds(lambda p, g: f1_score(p, g, rules), prediction, golds))


def _summary(scores: list[tuple[float, float]], prefix: str) -> dict[str, float]:
    n = len(scores)
    return {f"{prefix}exact": 100.0 * sum(e for e, _ in scores) / n if n else 0.0,
            f"{prefix}f1": 100.0 * sum(f for _, f in scores) / n if n else 0.0,
            f"{prefix}total": n}


def squad_scores(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]],
                 rules: Rules = "v2.0") -> dict[str, float]:
    """Exact match and F1 in percent over every question of ``golds`` (``{id: [gold texts]}``,
    an empty list for unanswerable), and the same over the answerable (``HasAns_``) and
    unanswerable (``NoAns_``) questions when there are unanswerable ones. A question without a
    prediction scores 0 and is counted in ``missing``; predictions of unknown ids are ignored."""
    per_id: dict[str, tuple[float, float]] = {}
    for qid, answers in golds.items():
        if qid in predictions:
            per_id[qid] = question_scores(predictions[qid], answers, rules)
        else:
            per_id[qid] = (0.0, 0.0)
    out = _summary(list(per_id.values()), "")
    if any(not answers for answers in golds.values()):
        out.update(_summary([per_id[q] for q, a in golds.items() if a], "HasAns_"))
        out.update(_summary([per_id[q] for q, a in golds.items() if not a], "NoAns_"))
    out["missing"] = sum(1 for qid in golds if qid not in predictions)
    return out


def write_predictions_json(path: str | Path, predictions: Mapping[str, str]) -> None:
    """Write ``{id: answer text}`` (the official predictions format, "" for no answer) as UTF-8
    JSON, atomically (``atomic.atomic_write``): a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        json.dump({str(k): str(v) for k, v in predictions.items()}, f, ensure_ascii=False)
        f.write("\n")
