"""PCGrad (Yu et al. 2020, "Gradient surgery for multi-task learning"), ``--mtl-method pcgrad``:
a step takes one batch of each task (``sampling.TaskGroupSchedule``); each backward's gradient on
the shared encoder is moved to a per-task row, the heads' gradients accumulate as usual; at the
step's end each task's row is projected onto the normal plane of every other task's row it
conflicts with (negative dot product), in a random order, and the projected rows are summed.

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

from typing import Any

import torch
from torch import nn
from torchjd.aggregation import PCGradWeighting

from ...config import TrainConfig
from ..step import GradientCombination
from .base import Method, MethodContext
from .sampling import grouped_schedule, mixture_fields


# ----------------------------------------------------------------------------- PCGrad
def pcgrad_weights(gram: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """PCGrad's combination weights ``w`` (the update is ``sum_i w_i g_i``) from the Gram matrix
    ``G_ij = g_i . g_j`` of the tasks' gradients, by ``torchjd``'s ``PCGradWeighting``; the random
    projection order comes from (seed, step), the global random state is left as it was."""
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


class PCGrad(Method):
    """``--mtl-method pcgrad``: one batch of every task per step, their encoder gradients projected."""

    name = "pcgrad"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def schedule(self, run: MethodContext) -> Any:
        return grouped_schedule(self.cfg, run.splits)

    def gradients(self, run: MethodContext) -> GradientCombination | None:
        names = [t.name for t in run.setup.tasks if t.head_from is None]
        window = len(names) * self.cfg.grad_accum_steps
        self.combination = PCGradGradients(names, list(run.model.encoder.parameters()), window, self.cfg.seed,
                                           run.dist)
        return self.combination

    def state(self) -> nn.Module | None:
        return self.combination.counter  # the projection order of step n

    def epoch_fields(self, job: Any, state: Any) -> dict[str, Any]:
        return mixture_fields(job, state)
