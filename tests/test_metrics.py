"""Metrics in percent and the task score, against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtdnn.evaluation import prediction_labels, score
from mtdnn.metrics import compute_metric, compute_metrics, glue_average, task_score
from mtdnn.records import Predictions
from mtdnn.tasks.registry import builtin_tasks

# binary case: TP = 2 (rows 0, 3), FP = 1 (row 1), FN = 1 (row 4), TN = 2 (rows 2, 5)
PREDS = np.array([1, 1, 0, 1, 0, 0])
LABELS = np.array([1, 0, 0, 1, 1, 0])


def test_accuracy():
    assert compute_metric("accuracy", PREDS, LABELS) == pytest.approx(100 * 4 / 6)
    assert compute_metric("accuracy", np.array([0, 1, 1, 0, 1]), np.array([0, 1, 0, 0, 1])) == pytest.approx(80.0)


def test_f1_positive_class_is_one():
    # F1 = 2TP / (2TP + FP + FN) = 4 / 6
    assert compute_metric("f1", PREDS, LABELS) == pytest.approx(100 * 4 / 6)
    p, y = np.array([1, 1, 1, 0]), np.array([1, 0, 0, 0])  # TP 1, FP 2, FN 0 -> 2/4
    assert compute_metric("f1", p, y) == pytest.approx(50.0)
    assert compute_metric("f1", np.array([0, 0]), np.array([0, 0])) == 0.0


def test_mcc():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (4 - 1) / 9
    assert compute_metric("mcc", PREDS, LABELS) == pytest.approx(100 / 3)
    p, y = np.array([1, 1, 1, 0, 0]), np.array([1, 1, 0, 0, 0])  # TP 2 FP 1 FN 0 TN 2
    assert compute_metric("mcc", p, y) == pytest.approx(100 * (4 - 0) / math.sqrt(3 * 2 * 3 * 2))


def test_pearson():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([2.0, 4.0, 5.0, 9.0])
    # dx = [-1.5, -.5, .5, 1.5], dy = [-3, -1, 0, 4]: sum dxdy 11, sum dx^2 5, sum dy^2 26
    assert compute_metric("pearson", x, y) == pytest.approx(100 * 11 / math.sqrt(5 * 26))


def test_spearman():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([10.0, 30.0, 20.0, 40.0])  # ranks 1 3 2 4: rho = 1 - 6*2 / (4*15) = 0.8
    assert compute_metric("spearman", x, y) == pytest.approx(80.0)
    # spearman is rank-based, pearson is not
    assert compute_metric("spearman", np.array([1.0, 2, 3]), np.array([1.0, 10, 100])) == pytest.approx(100.0)
    assert compute_metric("pearson", np.array([1.0, 2, 3]), np.array([1.0, 10, 100])) < 99


def test_correlation_of_constant_predictions_is_zero():
    assert compute_metric("pearson", np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])) == 0.0
    assert compute_metric("spearman", np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])) == 0.0


def test_unknown_metric():
    with pytest.raises(ValueError):
        compute_metric("bleu", PREDS, LABELS)


def test_task_score_is_mean_of_pair():
    m = compute_metrics(["f1", "accuracy"], PREDS, LABELS)
    assert m["f1"] == pytest.approx(100 * 4 / 6)
    assert m["accuracy"] == pytest.approx(100 * 4 / 6)
    assert m["score"] == pytest.approx(100 * 4 / 6)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([2.0, 4.0, 5.0, 9.0])
    m = compute_metrics(["pearson", "spearman"], x, y)
    assert m["spearman"] == pytest.approx(100.0)  # y is increasing in x
    assert m["score"] == pytest.approx((100 * 11 / math.sqrt(130) + 100.0) / 2)
    assert task_score({"mcc": 12.5}, ["mcc"]) == 12.5
    assert glue_average({"a": 80.0, "b": 60.0}) == 70.0
    assert math.isnan(glue_average({}))


def test_score_for_tasks():
    tasks = builtin_tasks()

    class _Split:
        labels = LABELS

    # MRPC: F1 and accuracy from class indices
    out = score(tasks["mrpc"], _Split, Predictions(np.zeros((6, 2)), PREDS))
    assert out == pytest.approx({"f1": 100 * 4 / 6, "accuracy": 100 * 4 / 6, "score": 100 * 4 / 6})
    # CoLA: MCC
    assert score(tasks["cola"], _Split, Predictions(np.zeros((6, 2)), PREDS))["mcc"] == pytest.approx(100 / 3)


def test_prediction_labels():
    tasks = builtin_tasks()
    p = Predictions(np.zeros((3, 2)), np.array([0, 1, 1]))
    assert prediction_labels(tasks["rte"], p) == ["entailment", "not_entailment", "not_entailment"]
    assert prediction_labels(tasks["qnli_rank"], p) == ["not_entailment", "entailment", "entailment"]
    assert prediction_labels(tasks["stsb"], Predictions(np.zeros(2), np.array([1.23456, 4.0]))) == ["1.235", "4.000"]
