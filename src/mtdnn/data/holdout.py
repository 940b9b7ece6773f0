"""A held-out part of a task's training data, for choosing the kept epoch and for early stopping
(``--selection-split holdout``), so that the dev split is reported clean.

The part is drawn once per task from the rows that would train (after ``--max-train-examples``),
seeded by ``--subset-seed`` (so every training seed of a comparison holds out the same rows) and
stratified: each label of a classification task, each tenth of a regression task's scores, loses the
same share of its rows; a ranking task holds out whole questions. The held-out rows do not train.
"""

from __future__ import annotations

import numpy as np

from ..kinds.base import HOLDOUT_SPLIT
from ..records import RawSplit
from ..tasks.schema import TaskDef

HOLDOUT = HOLDOUT_SPLIT  # the evaluation split's name in history.jsonl, metrics.json and TensorBoard


def strata(raw: RawSplit, task: TaskDef) -> np.ndarray:
    """The stratum of each row, as the task's kind sees it: its label, its score's tenth
    (regression), or its question (ranking)."""
    return task.kind.holdout_strata(task, raw)


def holdout_rows(raw: RawSplit, task: TaskDef, fraction: float, seed: int) -> np.ndarray:
    """The sorted row indices to hold out: ``round(fraction * n)`` rows of each stratum of ``n``
    rows, at least one row in all; for ranking, that share of the questions, whole (never all)."""
    rng = np.random.default_rng(seed)
    group = strata(raw, task)
    if task.kind.keeps_groups:  # draw whole questions
        questions = np.unique(group)
        k = max(1, round(fraction * len(questions)))
        chosen = rng.choice(questions, size=min(k, len(questions) - 1), replace=False)
        return np.flatnonzero(np.isin(group, chosen))
    picked = []
    for value in np.unique(group):
        rows = np.flatnonzero(group == value)
        picked.append(rng.choice(rows, size=round(fraction * len(rows)), replace=False))
    out = np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)
    if len(out) == 0 and len(raw) > 1:
        out = np.array([int(rng.integers(len(raw)))])
    return out


def split_off(raw: RawSplit, task: TaskDef, fraction: float, seed: int) -> tuple[RawSplit, RawSplit]:
    """The rows that train and the held-out rows (named ``holdout``), disjoint, in file order."""
    held = holdout_rows(raw, task, fraction, seed)
    mask = np.zeros(len(raw), dtype=bool)
    mask[held] = True
    train = raw.select(np.flatnonzero(~mask).tolist())
    holdout = raw.select(held.tolist())
    holdout.split = HOLDOUT
    return train, holdout
