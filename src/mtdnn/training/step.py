"""One training step as a unit: ``train_step`` (forward, loss, backward of one batch; returns its
loss or a skip) and ``optimizer_step`` (combine the gradients, clip, step, schedule, zero).

Plug points of a step, each an interface with the paper's behaviour as its default:

- ``LossComposition``: the loss of one batch, from the model, the task and the batch. The default
  is ``TaskLoss``, the task's own loss; the training methods (``training/methods/``: task weights,
  uncertainty weighting, distillation, SMART) wrap it, each around the one before it. It runs
  inside ``StepLoss.forward``, the module DDP wraps, so whatever a composition computes has its
  gradients synchronised.
- ``GradientCombination``: how the backward passes of an optimiser step's ``window`` batches
  become the gradient the optimiser sees. The default is ``SummedGradients`` (autograd's sum,
  divided by the accumulation steps); a method that needs each task's gradient apart (PCGrad,
  ``training/methods/pcgrad.py``) sees every ``backward`` of the window and changes the gradients
  in ``combine``.

The batch schedule (which task's batch comes when) is the third plug point
(``training/schedule.py``), the head factory the fourth (``model/multitask.py``). Which
implementation a run uses is decided by its methods (``training/methods/registry.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import MtdnnError
from ..runtime import autocast

log = logging.getLogger(__name__)


class TrainingError(MtdnnError):
    """Training cannot go on (for example a NaN loss)."""


# ----------------------------------------------------------------------------- loss composition
class LossComposition(Protocol):
    def __call__(self, model: nn.Module, task: str, batch: dict[str, torch.Tensor],
                 per_unit: float | None) -> torch.Tensor:
        """The loss of ``batch`` of ``task``: its mean over the batch's units, or its summed loss
        times ``per_unit`` when given (a distributed rank's share, see ``Distributed.share``)."""


class TaskLoss:
    """The task's own loss (cross-entropy, squared error, pairwise ranking): ``model.loss``."""

    def __call__(self, model: nn.Module, task: str, batch: dict[str, torch.Tensor],
                 per_unit: float | None) -> torch.Tensor:
        return model.loss(task, batch, per_unit)


class StepLoss(nn.Module):
    """``forward(task, batch, per_unit)`` -> the batch's loss as ``compose`` makes it. The module a
    step calls, and the one DDP wraps: DDP synchronises the gradients of what runs in its forward."""

    def __init__(self, model: nn.Module, compose: LossComposition | None = None) -> None:
        super().__init__()
        self.model = model
        self.compose = compose or TaskLoss()

    def forward(self, task: str, batch: dict[str, torch.Tensor], per_unit: float | None = None) -> torch.Tensor:
        return self.compose(self.model, task, batch, per_unit)


# ----------------------------------------------------------------------------- gradient combination
class GradientCombination(Protocol):
    window: int  # batches per optimiser step

    def backward(self, loss: torch.Tensor, task: str) -> None:
        """Backward pass of one batch's loss (of ``task``) in the current optimiser step."""

    def combine(self, model: nn.Module) -> None:
        """The window's backward passes are done: leave the gradient to apply in ``.grad``."""


class SummedGradients:
    """Autograd's sum of the window's gradients; each loss divided by the accumulation steps, so
    the update is that of the window's mean loss."""

    def __init__(self, accumulation_steps: int = 1) -> None:
        self.accumulation_steps = accumulation_steps

    @property
    def window(self) -> int:
        return self.accumulation_steps

    def backward(self, loss: torch.Tensor, task: str) -> None:
        (loss / self.accumulation_steps).backward()

    def combine(self, model: nn.Module) -> None:
        return None  # autograd has summed them already


# ----------------------------------------------------------------------------- the step
@dataclass(frozen=True)
class StepResult:
    loss: float            # the global batch's loss, the same on every rank (not finite if skipped)
    skipped: bool = False  # a non-finite loss under on_nan "skip": no backward pass
    drop_window: bool = False  # the accumulation window's gradients must be dropped (see Distributed)


def train_step(objective: nn.Module, task: str, batch: dict[str, torch.Tensor], per_unit: float | None, *,
               dist: Any, gradients: GradientCombination, sync: bool, device: torch.device,
               precision: str, on_nan: str, where: str) -> StepResult:
    """Forward, loss and backward of one batch. ``sync``: the last batch of an optimiser step (DDP
    all-reduces the gradients only then). A non-finite loss stops the run (``on_nan == "stop"``;
    ``where`` says where in the message) or skips the batch (same decision on every rank)."""
    with dist.no_sync(objective, skip_sync=not sync):
        with autocast(device, precision):
            loss = objective(task, batch, per_unit)
        value = dist.global_loss(loss)  # the global batch's loss, the same on every rank
        if not math.isfinite(value):
            if on_nan == "stop":
                raise TrainingError(f"loss is {value} on task '{task}' at {where}; try a lower --lr, "
                                    "or --on-nan skip to skip such batches")
            log.warning("skipping a batch: loss is %s on task '%s' at %s", value, task, where)
            return StepResult(value, skipped=True, drop_window=dist.after_skipped_forward(loss))
        gradients.backward(loss, task)
    return StepResult(value)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                   gradients: GradientCombination, max_grad_norm: float, drop_window: bool) -> None:
    """Apply the window's gradient: combine, clip (``max_grad_norm > 0``), step, schedule, zero.
    ``drop_window``: a skipped batch's backward may have left NaN: the window applies nothing."""
    if drop_window:
        optimizer.zero_grad(set_to_none=True)
    gradients.combine(model)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
