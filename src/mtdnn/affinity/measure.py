"""The lookahead affinity of every task onto every other at one point of a run, its average along a
run, and the ranking of the candidates onto a target (see the package's docstring for the method)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..training.diagnostics import cosine_matrix, evaluating, task_gradients

LossClosures = dict[str, Callable[[], torch.Tensor]]


@torch.no_grad()
def _losses(losses: LossClosures) -> np.ndarray:
    return np.array([float(f()) for f in losses.values()])


def lookahead_affinity(losses: LossClosures, shared: list[nn.Parameter], lr: float) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, cos)`` at the current weights: ``Z[i, j] = 1 - L_j(theta - lr g_i) / L_j(theta)`` with
    ``g_i`` task i's gradient on ``shared``, and the cosine matrix of the ``g_i``. ``losses``: one
    closure per task on its fixed batch (the caller chooses the mode, eval for no dropout)."""
    rows = task_gradients(losses, shared)
    base = _losses(losses)
    saved = [p.detach().clone() for p in shared]
    z = np.full((len(losses), len(losses)), np.nan)
    for i in range(len(losses)):
        with torch.no_grad():
            offset = 0
            for p in shared:
                n = p.numel()
                p.sub_(lr * rows[i, offset:offset + n].view_as(p).to(p.dtype))
                offset += n
        after = _losses(losses)
        with torch.no_grad():
            for p, s in zip(shared, saved):
                p.copy_(s)
        ok = base > 0
        z[i, ok] = 1.0 - after[ok] / base[ok]
    return z, np.array(cosine_matrix(rows))


@dataclass
class AffinityResult:
    tasks: list[str]
    steps: list[int]               # the optimiser steps after which it was measured
    affinity: np.ndarray           # mean Z[i, j] over the measurements
    affinity_se: np.ndarray        # its standard error over the measurements
    cosine: np.ndarray             # mean gradient cosine
    lookahead_lr: float

    def onto(self, target: str) -> list[tuple[str, float, float, float]]:
        """(task, affinity onto target, se, cosine) for every other task, best first."""
        j = self.tasks.index(target)
        rows = [(t, float(self.affinity[i, j]), float(self.affinity_se[i, j]), float(self.cosine[i, j]))
                for i, t in enumerate(self.tasks) if t != target]
        return sorted(rows, key=lambda r: -r[1] if math.isfinite(r[1]) else math.inf)

    def to_json(self, target: str | None = None) -> dict[str, Any]:
        def matrix(m: np.ndarray) -> dict[str, dict[str, float | None]]:
            return {a: {b: (round(float(m[i, j]), 8) if math.isfinite(m[i, j]) else None)
                        for j, b in enumerate(self.tasks)} for i, a in enumerate(self.tasks)}
        out: dict[str, Any] = {"tasks": self.tasks, "measured_after_steps": self.steps,
                               "lookahead_lr": self.lookahead_lr,
                               "affinity": matrix(self.affinity), "affinity_se": matrix(self.affinity_se),
                               "grad_cosine": matrix(self.cosine),
                               "meaning": "affinity[i][j] = 1 - L_j(after an SGD step on i) / L_j(before), "
                                          "mean over the measurements"}
        if target is not None:
            out["target"] = target
            out["ranking"] = [{"task": t, "affinity": a, "se": se, "grad_cosine": c}
                              for t, a, se, c in self.onto(target)]
        return out


def affinity_run(tasks: list[str], shared: list[nn.Parameter], model: nn.Module, *, steps: int, every: int,
                 lookahead_lr: float, train_step: Callable[[int], None],
                 probe: Callable[[int], LossClosures]) -> AffinityResult:
    """Train ``steps`` steps (``train_step(step)``), measuring ``lookahead_affinity`` on the batches
    of ``probe(step)`` after every ``every``-th step, in eval mode; average the measurements."""
    zs, cosines, at = [], [], []
    for step in range(1, steps + 1):
        train_step(step)
        if step % every == 0 or (step == steps and not at):
            with evaluating(model):
                z, cos = lookahead_affinity(probe(step), shared, lookahead_lr)
            zs.append(z)
            cosines.append(cos)
            at.append(step)
    stack = np.stack(zs)
    n = np.sum(np.isfinite(stack), axis=0)
    mean = np.nanmean(stack, axis=0)
    se = np.where(n > 1, np.nanstd(stack, axis=0, ddof=min(1, len(zs) - 1)) / np.sqrt(np.maximum(n, 1)), np.nan)
    return AffinityResult(list(tasks), at, mean, se, np.mean(np.stack(cosines), axis=0), lookahead_lr)


def ranking_table(result: AffinityResult, target: str) -> str:
    j = result.tasks.index(target)
    lines = [f"affinity onto {target}: 1 - L_{target}(after a step on the task) / L_{target}(before), mean over "
             f"{len(result.steps)} measurements in {result.steps[-1]} steps (lookahead lr {result.lookahead_lr:g})",
             f"{'rank':<5} {'task':<14} {'affinity':>10} {'± se':>10} {'grad cosine':>12}"]
    for k, (t, a, se, c) in enumerate(result.onto(target), 1):
        lines.append(f"{k:<5} {t:<14} {a:>+10.5f} {se:>10.5f} {c:>+12.3f}")
    lines.append(f"{'':<5} {target + ' (itself)':<14} {result.affinity[j, j]:>+10.5f} "
                 f"{result.affinity_se[j, j]:>10.5f} {1.0:>+12.3f}")
    return "\n".join(lines)


def recommend(result: AffinityResult, target: str, k: int) -> list[str]:
    """The ``k`` candidates with the highest positive affinity onto ``target``."""
    return [t for t, a, _, _ in result.onto(target) if math.isfinite(a) and a > 0][:k]
