"""``type: regression``: one real-valued score per input (STS-B).

The head gives one number, trained with mean squared error; predictions are the scores, scored
with Pearson and Spearman correlations. No per-class report."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..records import Column, RawSplit, SplitCheck
from .base import SCORE_METRICS, TaskKind
from .labels import show
from .specs import SplitSpec, TaskSpec

class Regression(TaskKind):
    name: ClassVar[str] = "regression"
    loss_name: ClassVar[str] = "mse"
    metric_choices: ClassVar[tuple[str, ...]] = SCORE_METRICS
    default_metrics: ClassVar[tuple[str, ...]] = ("pearson", "spearman")

    def validate(self, task: TaskSpec) -> None:
        super().validate(task)
        if task.labels:
            raise ValueError("a regression task has no labels")
        if task.adv_loss == "sym_kl":
            raise ValueError("adv_loss 'sym_kl' compares class distributions: a regression task uses mse or none")

    def check_metrics(self, metrics: list[str]) -> None:
        for m in metrics:
            if m not in SCORE_METRICS:
                raise ValueError(f"'{m}' needs predicted classes, a regression task predicts scores: "
                                 f"use {' or '.join(SCORE_METRICS)}")

    def parse_label(self, task: TaskSpec, split: SplitSpec, raw: Any, from_hub: bool) -> tuple[Any, str | None]:
        if raw is None or (isinstance(raw, str) and raw.strip() in split.missing_labels):
            return None, "missing"
        if isinstance(raw, bool):  # JSON true/false: not a score
            return None, f"score {show(raw)} is not a number"
        try:
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            return None, f"score {show(raw)} is not a number"
        if not math.isfinite(value):
            return None, f"score {show(raw)} is not a finite number"
        return value, None

    def encode_labels(self, task: TaskSpec, raw: RawSplit) -> tuple[np.ndarray, np.ndarray]:
        n = len(raw)
        if raw.labels and raw.labels[0] is None:
            return np.full(n, np.nan, np.float32), np.arange(n, dtype=np.int64)
        return np.asarray(raw.labels, dtype=np.float32), np.arange(n, dtype=np.int64)

    def holdout_strata(self, task: TaskSpec, raw: RawSplit) -> np.ndarray:
        """The tenth of the scores each row's score falls in."""
        scores = np.asarray(raw.labels, dtype=np.float64)
        edges = np.quantile(scores, np.linspace(0, 1, 11)[1:-1])
        return np.searchsorted(edges, scores, side="right")

    def loss(self, task: TaskSpec, output: torch.Tensor, batch: dict[str, torch.Tensor],
             reduction: str = "mean") -> torch.Tensor:
        return F.mse_loss(output.float().squeeze(-1), batch["labels"].float(), reduction=reduction)

    def api_values(self, task: TaskSpec, labels: list[str]) -> list[Any]:
        return [float(v) for v in labels]

    def standard_folder(self, task: TaskSpec) -> tuple[dict[int, str], str]:
        return {0: "score"}, "regression"

    def init_label_problem(self, label: Column) -> str | None:
        if label.kind == "text":
            return f"--type regression needs numbers in the label column '{label.name}'"
        return None

    def init_metrics(self, labels: list[str]) -> tuple[list[str], str]:
        return ["pearson", "spearman"], "correlations of the predicted and the gold scores"

    def label_stats(self, task: TaskSpec, raw: RawSplit, out: SplitCheck) -> None:
        y = np.asarray(raw.labels, dtype=np.float64)
        out.scores = {"min": float(y.min()), "max": float(y.max()), "mean": float(y.mean()), "std": float(y.std())}

    def adv_divergence(self, task: TaskSpec) -> str:
        return "mse"

    def uncertainty_scale(self) -> float:
        return 0.5

    def output_divergence(self, task: TaskSpec, divergence: str, a: torch.Tensor, b: torch.Tensor,
                          batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The squared difference of the scores, whatever the divergence named."""
        return ((a.float().squeeze(-1) - b.float().squeeze(-1)) ** 2).sum()

    def distill_targets(self, task: TaskSpec, outputs: list[tuple[np.ndarray, float]], groups: np.ndarray,
                        temperature: float) -> torch.Tensor:
        """The teachers' mean score (no temperature)."""
        return torch.from_numpy(np.mean([o for o, _ in outputs], axis=0).astype(np.float32))

    def distill_divergence(self, task: TaskSpec, output: torch.Tensor, target: torch.Tensor,
                           batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
        return ((output.float().squeeze(-1) - target) ** 2).sum()
