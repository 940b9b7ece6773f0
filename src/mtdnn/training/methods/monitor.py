"""``--log-grad-cosine N``: after every N-th optimiser step, the cosine matrix of the tasks' encoder
gradients on one fresh batch per task (drawn from (seed, step)) at the current weights, so that the
gradients compared are at the same point (the batches of the last N steps were taken at N
different weights). It costs one forward and backward per task every N steps, computed on rank 0
only, and changes nothing in the training (same weights with and without it). The matrices go into
the epoch's history line (``"grad_cosine": {"tasks": [...], "steps": [...], "matrices": [...]}``)
and TensorBoard (``grad_cosine/<a>~<b>``). The measurement itself is ``training/diagnostics.py``'s.
"""

from __future__ import annotations

from typing import Any

from ...config import TrainConfig
from ..diagnostics import batch_loss, cosine_matrix, evaluating, fresh_rows, shared_parameters, task_gradients
from .base import Method

RECORD = "grad_cosine"


class GradientCosines(Method):
    """The gradient-cosine monitor (see the module)."""

    name = "grad_cosine"

    def __init__(self, every: int) -> None:
        self.every = every

    def after_update(self, job: Any, state: Any) -> None:
        if state.update % self.every or not job.dist.is_main:
            return
        names = list(job.train_splits)
        matrix = gradient_cosines(job, state.update)
        rec = state.records.setdefault(RECORD, {"tasks": names, "steps": [], "matrices": []})
        rec["steps"].append(state.update)
        rec["matrices"].append(matrix)
        if job.writer is not None:
            for i, a in enumerate(names):
                for j in range(i + 1, len(names)):
                    job.writer.add_scalar(f"grad_cosine/{a}~{names[j]}", matrix[i][j], state.update)

    def epoch_fields(self, job: Any, state: Any) -> dict[str, Any]:
        return {RECORD: state.records[RECORD]} if RECORD in state.records else {}


def gradient_cosines(job: Any, step: int) -> list[list[float]]:
    """The cosine matrix of the tasks' encoder gradients at the current weights (eval mode)."""
    model, cfg = job.model, job.cfg
    losses = {name: batch_loss(model, name, split, fresh_rows(split, cfg.batch_size, cfg.seed, step, k),
                               pad_id=job.pad_id, device=job.setup.device, precision=cfg.precision)
              for k, (name, split) in enumerate(job.train_splits.items())}
    with evaluating(model):
        rows = task_gradients(losses, shared_parameters(model))
    return cosine_matrix(rows)


def gradient_monitor(cfg: TrainConfig) -> Method | None:
    return GradientCosines(cfg.log_grad_cosine) if cfg.log_grad_cosine else None
