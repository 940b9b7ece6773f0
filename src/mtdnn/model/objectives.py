"""Losses and predictions. A head produces one tensor; a task's kind (``mtdnn.kinds``) turns it
into a loss (training) or predictions (evaluation), whatever the head; the ranking loss and
decision live here."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ranking_loss(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor,
                 gamma: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Pairwise ranking: for each question, -log( sum_{A+} exp(g s(A+)) / sum_{A'} exp(g s(A')) ),
    averaged (or summed) over the questions of the batch. ``groups`` holds a question id per row."""
    uniq, inverse = torch.unique(groups, return_inverse=True)
    z = gamma * scores.float()
    neg_inf = torch.full((len(uniq),), float("-inf"), device=z.device)
    all_lse = scatter_logsumexp(z, inverse, neg_inf)
    pos_z = z.masked_fill(labels != 1, float("-inf"))
    pos_lse = scatter_logsumexp(pos_z, inverse, neg_inf)
    has_pos = torch.isfinite(pos_lse)
    if not has_pos.any():
        return z.sum() * 0.0
    per_group = (all_lse - pos_lse)[has_pos]
    return per_group.sum() if reduction == "sum" else per_group.mean()


def scatter_logsumexp(values: torch.Tensor, index: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    mx = init.clone().scatter_reduce(0, index, values, reduce="amax", include_self=True)
    safe_mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    summed = torch.zeros_like(mx).scatter_add(0, index, torch.exp(values - safe_mx[index]))
    return summed.log() + safe_mx


# ---- divergences of two outputs (SMART, distillation)
def symmetric_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, KL(p||q) + KL(q||p) = sum_c (p_c - q_c)(log p_c - log q_c), p = softmax(a),
    q = softmax(b) (a and b: logits or log-probabilities, (B, C))."""
    la, lb = F.log_softmax(a.float(), dim=-1), F.log_softmax(b.float(), dim=-1)
    return ((la.exp() - lb.exp()) * (la - lb)).sum(dim=-1)


def group_log_softmax(scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """log softmax of ``scores`` (N,) within each group of rows with the same ``groups`` id."""
    uniq, inverse = torch.unique(groups, return_inverse=True)
    init = torch.full((len(uniq),), float("-inf"), device=scores.device, dtype=scores.dtype)
    return scores - scatter_logsumexp(scores, inverse, init)[inverse]


def group_symmetric_kl(a: torch.Tensor, b: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Per group, the symmetric KL of the within-group softmax distributions of scores a and b."""
    la, lb = group_log_softmax(a.float(), groups), group_log_softmax(b.float(), groups)
    per_row = (la.exp() - lb.exp()) * (la - lb)
    uniq, inverse = torch.unique(groups, return_inverse=True)
    return torch.zeros(len(uniq), device=a.device).index_add(0, inverse, per_row)


def rank_predictions(scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """1 for the best-scored candidate of each group, 0 for the others."""
    uniq, inverse = torch.unique(groups, return_inverse=True)
    best = torch.full((len(uniq),), float("-inf"), device=scores.device)
    best = best.scatter_reduce(0, inverse, scores.float(), reduce="amax", include_self=True)
    is_best = scores.float() >= best[inverse]
    # ties: keep only the first row reaching the maximum in each group
    first = torch.full((len(uniq),), len(scores), device=scores.device, dtype=torch.long)
    pos = torch.arange(len(scores), device=scores.device)
    first = first.scatter_reduce(0, inverse, torch.where(is_best, pos, len(scores)), reduce="amin")
    return (pos == first[inverse]).long()
