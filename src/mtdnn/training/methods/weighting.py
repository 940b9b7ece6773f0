"""Loss weighting beyond the paper: the loss compositions of a task's ``loss_weight`` and
``--task-weights`` (``TaskWeights``) and of ``--mtl-method uncertainty`` (``Uncertainty``).

- ``WeightedTaskLoss``: the batch's loss times its task's static weight (``loss_weight`` in the
  task YAML, ``--task-weights rte=2,sst2=0.5`` overriding it).
- ``UncertaintyWeighting`` (Kendall, Gal and Cipolla 2018): a learned log-variance ``s_t`` per task;
  a classification or ranking task's loss ``L`` becomes ``exp(-s_t) L + s_t / 2`` (``L / sigma^2 +
  log sigma``), a regression task's ``exp(-s_t) L / 2 + s_t / 2`` (``L / (2 sigma^2) + log sigma``).
  Both wrap the run's other loss composition (``inner``: the task's loss, or another method's),
  so they combine with it. The log-variances are a parameter of this module, which the ``StepLoss``
  holds: DDP synchronises their gradients with the model's, the optimiser gets them as a parameter
  group of their own (lr ``uncertainty_lr``, no weight decay), and resumable states save them (the
  method's ``state``). They are not part of the model's weights (epoch checkpoints), which inference
  does not need; each epoch's values are in history.jsonl (``uncertainty_log_variance``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...config import TrainConfig
from ...tasks.schema import TaskDef
from ..step import LossComposition, TaskLoss
from .base import Method, MethodContext


# ----------------------------------------------------------------------------- loss compositions
def task_weights(cfg: TrainConfig, tasks: list[TaskDef]) -> dict[str, float]:
    """Each trained task's static loss weight: ``--task-weights``, else its YAML ``loss_weight``."""
    return {t.name: float(cfg.task_weights.get(t.name, t.loss_weight)) for t in tasks if t.head_from is None}


class WeightedTaskLoss:
    """The loss of ``inner`` (default: the task's own loss) times the task's static weight."""

    def __init__(self, weights: dict[str, float], inner: LossComposition | None = None) -> None:
        self.weights, self.inner = dict(weights), inner or TaskLoss()

    def __call__(self, model: nn.Module, task: str, batch: dict[str, torch.Tensor],
                 per_unit: float | None) -> torch.Tensor:
        return self.weights.get(task, 1.0) * self.inner(model, task, batch, per_unit)


def uncertainty_scale(task: TaskDef) -> float:
    """The factor of ``exp(-s) L``, the task kind's: 1/2 for regression (a Gaussian likelihood),
    1 otherwise."""
    return task.kind.uncertainty_scale()


class UncertaintyWeighting(nn.Module):
    """``scale_t * exp(-s_t) * w_t * L_t + s_t / 2`` with a learned ``s_t = log sigma_t^2`` per task
    (starting at 0), ``w_t`` the static weight, ``scale_t`` from ``uncertainty_scale``, ``L_t`` the
    loss of ``inner`` (default: the task's own loss)."""

    def __init__(self, tasks: list[TaskDef], weights: dict[str, float] | None = None,
                 inner: LossComposition | None = None) -> None:
        super().__init__()
        self.inner = inner or TaskLoss()
        trained = [t for t in tasks if t.head_from is None]
        self.names = [t.name for t in trained]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.scales = {t.name: uncertainty_scale(t) for t in trained}
        self.weights = dict(weights or {})
        self.log_variance = nn.Parameter(torch.zeros(len(trained)))

    def forward(self, model: nn.Module, task: str, batch: dict[str, torch.Tensor],
                per_unit: float | None) -> torch.Tensor:
        s = self.log_variance[self.index[task]]
        loss = self.weights.get(task, 1.0) * self.inner(model, task, batch, per_unit)
        return self.scales[task] * torch.exp(-s) * loss + 0.5 * s

    def values(self) -> dict[str, float]:
        """Each task's current log-variance ``s_t``."""
        return {name: float(v) for name, v in zip(self.names, self.log_variance.detach().cpu().tolist())}


# ----------------------------------------------------------------------------- the methods
class TaskWeights(Method):
    """Static loss weights (``--task-weights``, a task's ``loss_weight``), when one is not 1."""

    name = "task_weights"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def compose(self, inner: LossComposition, run: MethodContext) -> LossComposition:
        weights = task_weights(self.cfg, run.setup.tasks)
        return WeightedTaskLoss(weights, inner) if any(w != 1.0 for w in weights.values()) else inner


class Uncertainty(Method):
    """``--mtl-method uncertainty``: learned per-task loss weights (the static weights inside)."""

    name = "uncertainty"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.weighting: UncertaintyWeighting | None = None

    def compose(self, inner: LossComposition, run: MethodContext) -> LossComposition:
        tasks = run.setup.tasks
        self.weighting = UncertaintyWeighting(tasks, task_weights(self.cfg, tasks), inner)
        self.weighting.to(next(run.model.parameters()).device)
        return self.weighting

    def param_groups(self) -> list[dict[str, Any]]:
        assert self.weighting is not None
        return [{"params": [self.weighting.log_variance], "lr": self.cfg.uncertainty_lr, "weight_decay": 0.0}]

    def state(self) -> nn.Module | None:
        return self.weighting

    def epoch_fields(self, job: Any, state: Any) -> dict[str, Any]:
        assert self.weighting is not None
        values = {t: round(v, 6) for t, v in self.weighting.values().items()}
        if job.writer is not None:
            for task, v in values.items():
                job.writer.add_scalar(f"uncertainty_log_variance/{task}", v, state.epoch)
        return {"uncertainty_log_variance": values}


def task_weighting(cfg: TrainConfig) -> Method | None:
    """The weighting method of ``cfg``: uncertainty (the static weights inside), else static weights."""
    return Uncertainty(cfg) if cfg.mtl_method == "uncertainty" else TaskWeights(cfg)
