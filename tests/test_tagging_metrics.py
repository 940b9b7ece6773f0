"""Tagging metrics: hand-computed entity scores, type confusion and token accuracy, and agreement
with seqeval (default, conlleval-compatible mode) on the real CoNLL-2003 dev and WNUT-17 test
sentences with synthetic noisy predictions."""

from __future__ import annotations

import random

import numpy as np
import pytest
from seqeval.metrics import accuracy_score, classification_report, f1_score

from mtdnn.tagging.metrics import (MISSED, SPURIOUS, entity_metrics, entity_report, report_dict,
                                   token_accuracy, type_confusion)
from mtdnn.tagging.readers import read_conll
from mtdnn.tagging.schemes import parse_tag

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-MISC", "O"]]


def test_entity_report_hand_computed():
    # gold: PER(0,2) LOC(3,4) | ORG(0,1) MISC(2,4); predicted: PER(0,2) ORG(3,4) | ORG(0,1) MISC(2,3)
    report = entity_report(GOLD, PRED)
    assert list(report) == ["LOC", "MISC", "ORG", "PER", "micro"]
    micro = report["micro"]
    assert (micro.precision, micro.recall, micro.f1) == (50.0, 50.0, 50.0)
    assert (micro.support, micro.predicted, micro.correct) == (4, 4, 2)
    assert (report["PER"].f1, report["PER"].support) == (100.0, 1)
    assert (report["LOC"].precision, report["LOC"].recall, report["LOC"].predicted) == (0.0, 0.0, 0)
    org = report["ORG"]
    assert (org.precision, org.recall, org.support, org.predicted) == (50.0, 100.0, 1, 2)
    assert org.f1 == pytest.approx(200 / 3)
    assert report["MISC"].f1 == 0.0
    flat = entity_metrics(GOLD, PRED)
    assert flat == {"precision": 50.0, "recall": 50.0, "f1": 50.0, "f1_LOC": 0.0, "f1_MISC": 0.0,
                    "f1_ORG": pytest.approx(200 / 3), "f1_PER": 100.0}
    assert report_dict(report)["micro"]["support"] == 4


def test_entity_report_edge_cases():
    assert entity_report([["O"]], [["O"]])["micro"].f1 == 0.0
    # an I- after O is an entity (conlleval), in gold and in predictions alike
    report = entity_report([["O", "I-PER"]], [["O", "B-PER"]])
    assert report["micro"].f1 == 100.0
    with pytest.raises(ValueError, match="sentence 0: 1 predicted tags for 2 words"):
        entity_report([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 predicted sentences for 2"):
        entity_report([["O"], ["O"]], [["O"]])


def test_type_confusion_hand_computed():
    conf = type_confusion(GOLD, PRED)
    assert conf.rows == ["LOC", "MISC", "ORG", "PER", SPURIOUS]
    assert conf.columns == ["LOC", "MISC", "ORG", "PER", MISSED]
    expected = np.array([[0, 0, 1, 0, 0],   # LOC(3,4) predicted as ORG
                         [0, 0, 0, 0, 1],   # MISC(2,4): no prediction with its span
                         [0, 0, 1, 0, 0],
                         [0, 0, 0, 1, 0],
                         [0, 1, 0, 0, 0]])  # predicted MISC(2,3): no gold entity with its span
    assert conf.counts.tolist() == expected.tolist()
    assert conf.get("LOC", "ORG") == 1 and conf.as_dict()[SPURIOUS]["MISC"] == 1
    report = entity_report(GOLD, PRED)
    # row sums are gold counts, column sums predicted counts, the diagonal the correct ones
    for i, t in enumerate(conf.rows[:-1]):
        assert conf.counts[i].sum() == report[t].support
        assert conf.counts[:, i].sum() == report[t].predicted
        assert conf.counts[i, i] == report[t].correct


def test_token_accuracy():
    assert token_accuracy([["NN", "VBZ"], ["DT"]], [["NN", "VBD"], ["DT"]]) == pytest.approx(200 / 3)
    assert token_accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        token_accuracy([["NN"]], [["NN", "NN"]])


def _noisy(tags: list[str], types: list[str], rng: random.Random) -> list[str]:
    """Predictions with every kind of error: wrong type, wrong prefix (B/I swapped, which moves
    boundaries and starts entities with I- after O), dropped words and spurious ones."""
    out = []
    for tag in tags:
        prefix, type_ = parse_tag(tag) or ("O", "")
        r = rng.random()
        if prefix != "O" and r < 0.08:
            out.append(f"{prefix}-{rng.choice(types)}")
        elif prefix != "O" and r < 0.16:
            out.append(f"{'I' if prefix == 'B' else 'B'}-{type_}")
        elif prefix != "O" and r < 0.22:
            out.append("O")
        elif prefix == "O" and r < 0.04:
            out.append(f"{rng.choice('BI')}-{rng.choice(types)}")
        else:
            out.append(tag)
    return out


@pytest.mark.parametrize("folder, name, column", [("conll2003", "eng.testa", 3),
                                                   ("wnut17", "emerging.test.annotated", 1)])
def test_agrees_with_seqeval(data_dir, folder, name, column):
    gold = [s.tags for s in read_conll(data_dir / folder / name, tag_column=column)]
    types = sorted({parse_tag(t)[1] for s in gold for t in s if t != "O"})
    rng = random.Random(17)
    pred = [_noisy(s, types, rng) for s in gold]
    report = entity_report(gold, pred)
    reference = classification_report(gold, pred, output_dict=True, zero_division=0)
    for t in types:
        ours, ref = report[t], reference[t]
        assert ours.support == ref["support"]
        for key in ("precision", "recall", "f1-score"):
            assert getattr(ours, key.split("-")[0]) == pytest.approx(100 * ref[key], abs=1e-9)
    micro = reference["micro avg"]
    assert report["micro"].f1 == pytest.approx(100 * micro["f1-score"], abs=1e-9)
    assert report["micro"].precision == pytest.approx(100 * micro["precision"], abs=1e-9)
    assert report["micro"].recall == pytest.approx(100 * micro["recall"], abs=1e-9)
    assert report["micro"].f1 == pytest.approx(100 * f1_score(gold, pred), abs=1e-9)
    assert 40 < report["micro"].f1 < 90  # the noise is real, and not total
    assert token_accuracy(gold, pred) == pytest.approx(100 * accuracy_score(gold, pred), abs=1e-9)
    conf = type_confusion(gold, pred)
    assert conf.counts[:-1].sum(axis=1).tolist() == [report[t].support for t in types]
    assert conf.counts[:, :-1].sum(axis=0).tolist() == [report[t].predicted for t in types]
