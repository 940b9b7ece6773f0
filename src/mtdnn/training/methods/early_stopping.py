"""Early stopping (``--early-stopping-patience N``): training stops after N evaluations in a row
without an improvement of the selection score by more than ``--early-stopping-min-delta``.

The selection score of an evaluation is the mean over the run's tasks of each task's score on its
selection split (``--selection-split``: dev, or the held-out training rows), so a single-task or
fine-tuning run watches its task and a multi-task run all of them together. Its counters are the
method's state, saved in every resumable state, so a killed run resumes to the same decision. Each
epoch's history line records them (``early_stopping``), and the reason when training stops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...config import TrainConfig
from .base import Method


class StoppingCounters(nn.Module):
    """The best selection score so far and the evaluations since it (buffers, so resumable)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("best", torch.tensor(float("-inf"), dtype=torch.float64))
        self.register_buffer("waited", torch.tensor(0, dtype=torch.int64))


def selection_score(scores: dict[str, Any], splits: dict[str, str | None]) -> float | None:
    """The mean over tasks of each task's score on its selection split (None: no task has one)."""
    values = [scores[t][s]["score"] for t, s in splits.items() if s is not None and s in scores.get(t, {})]
    return float(np.mean(values)) if values else None


class EarlyStopping(Method):
    name = "early_stopping"

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.counters = StoppingCounters()
        self.last: dict[str, Any] = {}

    def state(self) -> nn.Module:
        return self.counters

    def after_evaluation(self, job: Any, state: Any, scores: dict[str, Any]) -> str | None:
        score = selection_score(scores, job.selection_splits)
        if score is None:
            return None
        best = float(self.counters.best)
        if score > best + self.min_delta:
            self.counters.best.fill_(score)
            self.counters.waited.zero_()
        else:
            self.counters.waited += 1
        waited = int(self.counters.waited)
        reason = None
        if waited >= self.patience:
            reason = (f"the selection score {score:.2f} has not risen above {float(self.counters.best):.2f} "
                      f"(+{self.min_delta:g}) for {waited} evaluations")
        self.last = {"score": round(score, 4), "best": round(float(self.counters.best), 4), "waited": waited,
                     **({"stopped": reason} if reason else {})}
        return reason

    def epoch_fields(self, job: Any, state: Any) -> dict[str, Any]:
        fields, self.last = ({"early_stopping": self.last} if self.last else {}), {}
        return fields


def early_stopping(cfg: TrainConfig) -> Method | None:
    if cfg.early_stopping_patience is None:
        return None
    return EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_min_delta)
