"""The per-class report of a split of a kind that predicts classes (``TaskKind.class_report``):
precision, recall, F1 and support per label, accuracy, macro/micro/weighted F1 and the confusion
matrix (written to a run's ``reports/`` by ``mtdnn/reports.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ..metrics import compute_metric


def class_report(task: str, names: list[str], gold: np.ndarray, preds: np.ndarray) -> dict[str, Any]:
    """The report of one split of ``task`` from gold and predicted class indices, ``names`` the
    label of each index (the kind's ``class_names``; see the module docstring)."""
    index = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, preds, labels=index, average=None, zero_division=0)
    per_class = {name: {"precision": 100.0 * float(p), "recall": 100.0 * float(r), "f1": 100.0 * float(f),
                        "support": int(s)}
                 for name, p, r, f, s in zip(names, precision, recall, f1, support)}
    matrix = confusion_matrix(gold, preds, labels=index)
    return {
        "task": task, "rows": int(len(gold)), "labels": names,
        "accuracy": compute_metric("accuracy", preds, gold),
        **{m: compute_metric(m, preds, gold) for m in ("f1_macro", "f1_micro", "f1_weighted")},
        "per_class": per_class,
        "confusion_matrix": {"rows": "gold label", "columns": "predicted label",
                             "matrix": matrix.astype(int).tolist()},
    }
