"""Diagnostics of task interference, and the per-epoch records of the methods beyond the paper.

- ``task_gradients``: each task's gradient on the shared encoder, on one batch per task, with the
  model in eval mode (no dropout: the same batch gives the same gradient, and the training's random
  stream is not touched), through ``torch.autograd.grad`` (no ``.grad`` is written). Used by
  ``--log-grad-cosine`` and by ``mtdnn affinity``.
- ``cosine_matrix``: the cosine similarity of those gradients, from their Gram matrix.
- ``TrainingMonitor``: what a run with these options logs. ``--log-grad-cosine N``: after every
  N-th optimiser step, the cosine matrix of the tasks' encoder gradients on one fresh batch per
  task (drawn from (seed, step)) at the current weights, so that the gradients compared are at
  the same point (the batches of the last N steps were taken at N different weights); it costs one
  forward and backward per task every N steps, computed on rank 0 only, and changes nothing in the
  training (same weights with and without it). The matrices go into the epoch's history line
  (``"grad_cosine": {"tasks": [...], "steps": [...], "matrices": [...]}``) and TensorBoard
  (``grad_cosine/<a>~<b>``). A sampled schedule's mixture (``"mixture": {task: batches}``) and the
  learned log-variances of ``--mtl-method uncertainty`` (``"uncertainty_log_variance"``) are
  recorded per epoch the same way. A run without these options writes none of these keys.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..data.batching import collate, task_batches
from ..data.tokenized import TokenizedSplit
from ..runtime import autocast, to_device
from .sampling import count_mixture

_FRESH = 7  # the random stream of the diagnostic batches: (seed, step, _FRESH, task index)


def fresh_rows(split: TokenizedSplit, batch_size: int, seed: int, step: int, index: int) -> np.ndarray:
    """One random batch of a task's training rows (whole candidate groups for ranking tasks),
    determined by (seed, step, task index)."""
    rng = np.random.default_rng([seed, step, _FRESH, index])
    return task_batches(split, batch_size, rng, group_by_length=False)[0]


def flat_gradient(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """The gradient of ``loss`` with respect to ``params``, flattened (zeros where unused)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                      for g, p in zip(grads, params)])


def task_gradients(losses: dict[str, Callable[[], torch.Tensor]], params: list[nn.Parameter]) -> torch.Tensor:
    """One row per task: the gradient of its loss (a closure) on ``params``."""
    return torch.stack([flat_gradient(loss(), params) for loss in losses.values()])


def cosine_matrix(rows: torch.Tensor) -> list[list[float]]:
    """``cos(g_i, g_j)`` for every pair of rows (0 where a row is all zeros)."""
    gram = (rows.double() @ rows.double().T)
    norms = gram.diagonal().clamp_min(0).sqrt()
    denom = torch.outer(norms, norms)
    cos = torch.where(denom > 0, gram / denom.clamp_min(1e-300), torch.zeros_like(gram))
    return [[round(float(v), 6) for v in row] for row in cos]


def batch_loss(model: nn.Module, task: str, split: TokenizedSplit, rows: np.ndarray, *, pad_id: int,
               device: torch.device, precision: str) -> Callable[[], torch.Tensor]:
    """A closure computing ``model``'s loss of ``task`` on ``rows`` of its split."""
    batch = to_device(collate(split, rows, pad_id), device)

    def loss() -> torch.Tensor:
        with autocast(device, precision):
            return model.loss(task, batch)
    return loss


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.encoder.parameters() if p.requires_grad]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (no dropout), its previous mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class TrainingMonitor:
    """The per-step and per-epoch records of a run's methods beyond the paper (see the module)."""

    def __init__(self, *, cosine_every: int | None, log_mixture: bool, uncertainty: Any = None) -> None:
        self.cosine_every, self.log_mixture, self.uncertainty = cosine_every, log_mixture, uncertainty

    @property
    def active(self) -> bool:
        return bool(self.cosine_every or self.log_mixture or self.uncertainty is not None)

    def after_update(self, job: Any, state: Any) -> None:
        """After optimiser step ``state.update``: the gradient cosines, every ``cosine_every`` steps."""
        if not self.cosine_every or state.update % self.cosine_every or not job.dist.is_main:
            return
        names = list(job.train_splits)
        matrix = self.gradient_cosines(job, state.update)
        rec = state.records.setdefault("grad_cosine", {"tasks": names, "steps": [], "matrices": []})
        rec["steps"].append(state.update)
        rec["matrices"].append(matrix)
        if job.writer is not None:
            for i, a in enumerate(names):
                for j in range(i + 1, len(names)):
                    job.writer.add_scalar(f"grad_cosine/{a}~{names[j]}", matrix[i][j], state.update)

    def gradient_cosines(self, job: Any, step: int) -> list[list[float]]:
        model, cfg = job.model, job.cfg
        losses = {name: batch_loss(model, name, split, fresh_rows(split, cfg.batch_size, cfg.seed, step, k),
                                   pad_id=job.pad_id, device=job.setup.device, precision=cfg.precision)
                  for k, (name, split) in enumerate(job.train_splits.items())}
        with evaluating(model):
            rows = task_gradients(losses, shared_parameters(model))
        return cosine_matrix(rows)

    def epoch_fields(self, job: Any, state: Any) -> dict[str, Any]:
        """The keys this epoch adds to its history line (none for a plain run); TensorBoard too."""
        out: dict[str, Any] = {}
        if self.log_mixture:
            out["mixture"] = count_mixture(job.schedule.epoch(state.epoch), list(job.train_splits))
        if self.uncertainty is not None:
            out["uncertainty_log_variance"] = {t: round(v, 6) for t, v in self.uncertainty.values().items()}
        out.update(state.records)
        if job.writer is not None:
            for key in ("mixture", "uncertainty_log_variance"):
                for task, v in out.get(key, {}).items():
                    job.writer.add_scalar(f"{key}/{task}", v, state.epoch)
        return out
