"""Diagnostics of task interference: per-task gradients and their cosines.

- ``task_gradients``: each task's gradient on the shared encoder, on one batch per task, with the
  model in eval mode (no dropout: the same batch gives the same gradient, and the training's random
  stream is not touched), through ``torch.autograd.grad`` (no ``.grad`` is written). Used by
  ``--log-grad-cosine`` and by ``mtdnn affinity``.
- ``cosine_matrix``: the cosine similarity of those gradients, from their Gram matrix.
- ``training/methods/monitor.py`` logs them during training (``--log-grad-cosine``); ``mtdnn
  affinity`` measures along a short run of its own.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..data.batching import collate, task_batches
from ..records import TokenizedSplit
from ..runtime import autocast, to_device

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
