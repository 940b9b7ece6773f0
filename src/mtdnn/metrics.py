"""GLUE metrics from scikit-learn and SciPy, reported in percent (GLUE's convention)."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

log = logging.getLogger(__name__)


def _corr(fn, preds: np.ndarray, labels: np.ndarray, name: str) -> float:
    if np.std(preds) == 0 or np.std(labels) == 0:
        log.warning("%s is undefined for constant predictions or labels; reported as 0", name)
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(preds, labels)[0])
    return 0.0 if math.isnan(value) else value


def compute_metric(name: str, preds: np.ndarray, labels: np.ndarray) -> float:
    """One metric in percent. ``preds``: class indices (classification) or scores (regression).
    ``f1`` is binary F1 (two labels; which name a task reports is ``TaskDef.metric_names``);
    ``f1_macro``, ``f1_micro``, ``f1_weighted`` average the per-class F1 over the classes present in
    the labels or predictions: unweighted, from the pooled counts, or weighted by support."""
    if name == "accuracy":
        return 100.0 * float(accuracy_score(labels, preds))
    if name == "f1":  # the positive class is label index 1 (GLUE MRPC/QQP)
        return 100.0 * float(f1_score(labels, preds, pos_label=1, average="binary", zero_division=0))
    if name in ("f1_macro", "f1_micro", "f1_weighted"):
        return 100.0 * float(f1_score(labels, preds, average=name[3:], zero_division=0))
    if name == "mcc":
        return 100.0 * float(matthews_corrcoef(labels, preds))
    if name == "pearson":
        return 100.0 * _corr(stats.pearsonr, preds, labels, "pearson")
    if name == "spearman":
        return 100.0 * _corr(stats.spearmanr, preds, labels, "spearman")
    raise ValueError(f"unknown metric {name}")


def compute_metrics(names: list[str], preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    out = {n: compute_metric(n, preds, labels) for n in names}
    out["score"] = task_score(out, names)
    return out


def task_score(metrics: dict[str, float], names: list[str]) -> float:
    """GLUE's figure for a task: its metric, or the mean of its pair (MRPC F1/acc, STS-B P/S)."""
    return float(np.mean([metrics[n] for n in names]))


def glue_average(scores: dict[str, float]) -> float:
    return float(np.mean(list(scores.values()))) if scores else float("nan")
