"""Loss weighting and gradient surgery beyond the paper: the loss compositions and the gradient
combination that ``--task-weights``, a task's ``loss_weight`` and ``--mtl-method`` plug into a step
(``training/step.py``), and ``MethodParts``, what the loop needs to know of them.

- ``WeightedTaskLoss``: the batch's loss times its task's static weight (``loss_weight`` in the
  task YAML, ``--task-weights rte=2,sst2=0.5`` overriding it).
- ``UncertaintyWeighting`` (Kendall, Gal and Cipolla 2018): a learned log-variance ``s_t`` per task;
  a classification or ranking task's loss ``L`` becomes ``exp(-s_t) L + s_t / 2`` (``L / sigma^2 +
  log sigma``), a regression task's ``exp(-s_t) L / 2 + s_t / 2`` (``L / (2 sigma^2) + log sigma``).
  Both wrap the run's other loss composition (``inner``: today's ``TaskLoss``, or another method's),
  so they combine with it. The log-variances are a parameter of this module, which the ``StepLoss`` holds: DDP synchronises
  their gradients with the model's, the optimiser gets them as a parameter group of their own (lr
  ``uncertainty_lr``, no weight decay), and resumable states save them (``MethodParts.state``).
  They are not part of the model's weights (epoch checkpoints), which inference does not need; each
  epoch's values are in history.jsonl.
- ``PCGradGradients`` (Yu et al. 2020, "Gradient surgery for multi-task learning"): a step takes one
  batch of each task (``sampling.TaskGroupSchedule``); each backward's gradient on the shared encoder
  is moved to a per-task row, the heads' gradients accumulate as usual; at the step's end each
  task's row is projected onto the normal plane of every other task's row it conflicts with
  (negative dot product), in a random order, and the projected rows are summed.

Which PCGrad implementation, and why: PCGrad's result is a weighted sum of the tasks' gradients
whose weights depend only on their Gram matrix, and ``torchjd`` (the maintained library of Jacobian
descent methods) computes exactly those weights from a Gram matrix (``PCGradWeighting``). We use
it. ``pytorch-optimizer``'s ``PCGrad`` wraps the optimiser and needs every task's loss at once,
from one graph (``pc_backward(losses)``); it does not fit a step whose tasks' batches arrive one at a
time through the loop (and DDP's reducer). ``torchjd``'s own backward functions need all losses at
once too, so only its weighting is used: the gradients are kept apart here, one row per task, and
the rows are combined with the weights it returns. It draws its projection order from torch's
global random generator: we call it inside ``torch.random.fork_rng`` seeded with (seed, step), so
the order is the same on every process and the training's random stream (dropout) is untouched.

Under DDP the per-task rows are averaged over the processes (one all-reduce) before the Gram
matrix is formed: every process projects the same global per-task gradients and makes the same
update. (DDP's own all-reduce on the step's last backward has already averaged that batch's part;
averaging an average again changes nothing, so one rule serves every row.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..tasks.schema import TaskDef
from .step import GradientCombination, LossComposition, SummedGradients, TaskLoss


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


def uncertainty_scale(task_type: str) -> float:
    """The factor of ``exp(-s) L``: 1/2 for regression (a Gaussian likelihood), 1 otherwise."""
    return 0.5 if task_type == "regression" else 1.0


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
        self.scales = {t.name: uncertainty_scale(t.type) for t in trained}
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


# ----------------------------------------------------------------------------- PCGrad
def pcgrad_weights(gram: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """PCGrad's combination weights ``w`` (the update is ``sum_i w_i g_i``) from the Gram matrix
    ``G_ij = g_i . g_j`` of the tasks' gradients, by ``torchjd``'s ``PCGradWeighting``; the random
    projection order comes from (seed, step), the global random state is left as it was."""
    from torchjd.aggregation import PCGradWeighting

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + step)
        return PCGradWeighting()(gram.double().cpu()).to(gram.dtype)


class StepCounter(nn.Module):
    """The optimiser steps a method has taken, as a buffer (so resumable states keep it)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def advance(self) -> int:
        self.steps += 1
        return int(self.steps)


class PCGradGradients:
    """PCGrad over an optimiser step's window (``window`` batches: ``rounds`` of each task). Each
    loss is divided by ``window`` (the step applies the window's mean, as without PCGrad); the
    encoder gradient is PCGrad's combination of the tasks' rows, the heads' gradients their sum."""

    def __init__(self, tasks: list[str], shared: list[nn.Parameter], window: int, seed: int, dist: Any) -> None:
        self.tasks, self.row = list(tasks), {t: i for i, t in enumerate(tasks)}
        self.shared = [p for p in shared if p.requires_grad]
        self.shared_ids = {id(p) for p in self.shared}
        self.window, self.seed, self.dist = window, seed, dist
        self.numel = sum(p.numel() for p in self.shared)
        device = self.shared[0].device if self.shared else torch.device("cpu")
        self.rows = torch.zeros(len(tasks), self.numel, device=device)
        self.seen: set[str] = set()
        self.counter = StepCounter()  # saved in resumable states: the projection order of step n

    def backward(self, loss: torch.Tensor, task: str) -> None:
        (loss / self.window).backward()
        row, offset = self.rows[self.row[task]], 0
        for p in self.shared:
            n = p.numel()
            if p.grad is not None:
                row[offset:offset + n] += p.grad.reshape(-1)
                p.grad = None
            offset += n
        self.seen.add(task)

    def combine(self, model: nn.Module) -> None:
        step = self.counter.advance()
        if self._window_dropped(model):  # optimizer_step zeroed a window with a skipped batch
            self._reset()
            return
        if self.dist is not None and self.dist.enabled:
            torch.distributed.all_reduce(self.rows)
            self.rows /= self.dist.world_size
        present = [self.row[t] for t in self.tasks if t in self.seen]
        rows = self.rows if len(present) == len(self.tasks) else self.rows[present]
        weights = pcgrad_weights(rows @ rows.T, self.seed, step).to(rows.device)
        flat = weights @ rows
        offset = 0
        for p in self.shared:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n
        self._reset()

    def _window_dropped(self, model: nn.Module) -> bool:
        """After a skipped batch the optimiser step sets every gradient to None first: no
        parameter outside the encoder holds one then."""
        return all(p.grad is None for p in model.parameters() if id(p) not in self.shared_ids)

    def _reset(self) -> None:
        self.rows.zero_()
        self.seen.clear()


# ----------------------------------------------------------------------------- the parts of a run
@dataclass
class MethodParts:
    """What ``--task-weights``/``loss_weight`` and ``--mtl-method`` give a run."""

    compose: LossComposition
    gradients: GradientCombination
    window: int                                  # batches per optimiser step
    state: nn.Module | None = None               # learned parameters (uncertainty): saved in resume states
    extra_params: list[dict[str, Any]] = field(default_factory=list)  # optimiser parameter groups


def method_parts(cfg: TrainConfig, tasks: list[TaskDef], model: nn.Module, dist: Any,
                 defaults: tuple[LossComposition, GradientCombination]) -> MethodParts:
    """The loss composition and gradient combination of ``cfg`` (``defaults``, today's ``TaskLoss``
    and ``SummedGradients``, when no method and no weight is set)."""
    weights = task_weights(cfg, tasks)
    weighted = any(w != 1.0 for w in weights.values())
    compose, gradients = defaults
    state, groups = None, []
    window = cfg.grad_accum_steps
    if weighted and cfg.mtl_method != "uncertainty":
        compose = WeightedTaskLoss(weights, compose)
    if cfg.mtl_method == "uncertainty":  # the static weights go inside
        state = UncertaintyWeighting(tasks, weights, compose).to(next(model.parameters()).device)
        compose = state
        groups = [{"params": [state.log_variance], "lr": cfg.uncertainty_lr, "weight_decay": 0.0}]
    elif cfg.mtl_method == "pcgrad":
        names = list(weights)
        window = len(names) * cfg.grad_accum_steps
        gradients = PCGradGradients(names, list(model.encoder.parameters()), window, cfg.seed, dist)
        state = gradients.counter
    return MethodParts(compose, gradients, window, state, groups)


def default_parts(cfg: TrainConfig) -> tuple[LossComposition, GradientCombination]:
    return TaskLoss(), SummedGradients(cfg.grad_accum_steps)
