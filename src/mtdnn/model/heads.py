"""Task-specific output modules. Every head maps the encoder's hidden states to one output tensor:

- ``LinearHead``: dropout + linear on the [CLS] vector -> (B, C) logits (classification),
  (B, 1) a score (regression, ranking).
- ``TokenHead``: dropout + linear on every token -> (B, T, C) logits (tagging).
- ``SANHead``: the stochastic answer network -> (B, C) log of the step-averaged probabilities,
  so that cross-entropy on it is the paper's -log(mean_k P^k).

Which head a task gets is its kind's ``build_head`` (``mtdnn.kinds``); losses and predictions
depend on the kind, not the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LinearHead(nn.Module):
    reads_cls_only = True  # only hidden_states[:, 0]: the encoder's last layer may skip the rest

    def __init__(self, hidden: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, n_out)

    def forward(self, hidden_states: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.proj(self.dropout(hidden_states[:, 0]))


class TokenHead(nn.Module):
    """Dropout + linear on every token's hidden state -> (B, T, C) logits (tagging)."""

    reads_cls_only = False

    def __init__(self, hidden: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, n_out)

    def forward(self, hidden_states: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.proj(self.dropout(hidden_states))


def step_keep_mask(batch: int, steps: int, rate: float, device=None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic prediction dropout: drop whole steps per example with probability ``rate``,
    always keeping at least one (a row that loses every step keeps one chosen at random)."""
    keep = torch.rand(batch, steps, device=device, generator=generator) >= rate
    empty = ~keep.any(dim=1)
    if empty.any():
        pick = torch.randint(steps, (int(empty.sum()),), device=device, generator=generator)
        keep[empty.nonzero(as_tuple=True)[0], pick] = True
    return keep


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)


class SANHead(nn.Module):
    """Multi-step answer module over premise memory M^p and hypothesis memory M^h.

    s^0 = sum_j alpha_j M^h_j, alpha = softmax(w1^T M^h)
    for k = 0..K-1:  beta = softmax(s^k W2 M^p^T);  x^k = sum_j beta_j M^p_j
                     P^k = softmax(W3 [s^k; x^k; |s^k - x^k|; s^k * x^k]);  s^{k+1} = GRU(x^k, s^k)
    output = log(mean over kept steps of P^k)
    """

    def __init__(self, hidden: int, n_labels: int, steps: int = 5, step_dropout: float = 0.1,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.steps = steps
        self.step_dropout = step_dropout
        self.dropout = nn.Dropout(dropout)
        self.w1 = nn.Linear(hidden, 1, bias=False)
        self.w2 = nn.Linear(hidden, hidden, bias=False)
        self.gru = nn.GRUCell(hidden, hidden)
        self.w3 = nn.Linear(4 * hidden, n_labels)

    def forward(self, hidden_states: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seg, attn = batch["seg"], batch["attention_mask"].bool()
        prem_mask, hyp_mask = (seg == 0) & attn, (seg == 1) & attn
        # an example whose segment was truncated away attends over all its tokens instead
        prem_mask = torch.where(prem_mask.any(1, keepdim=True), prem_mask, attn)
        hyp_mask = torch.where(hyp_mask.any(1, keepdim=True), hyp_mask, attn)
        mem = self.dropout(hidden_states)

        alpha = _masked_softmax(self.w1(mem).squeeze(-1), hyp_mask)            # (B, T)
        s = torch.bmm(alpha.unsqueeze(1), mem).squeeze(1)                       # (B, H)
        log_probs = []
        for k in range(self.steps):
            scores = torch.bmm(mem, self.w2(s).unsqueeze(-1)).squeeze(-1)       # (B, T)
            beta = _masked_softmax(scores, prem_mask)
            x = torch.bmm(beta.unsqueeze(1), mem).squeeze(1)                    # (B, H)
            feats = torch.cat([s, x, (s - x).abs(), s * x], dim=-1)
            log_probs.append(F.log_softmax(self.w3(feats).float(), dim=-1))
            if k + 1 < self.steps:
                s = self.gru(x, s)
        lp = torch.stack(log_probs, dim=1)                                     # (B, K, C)
        if self.training and self.step_dropout > 0:
            keep = step_keep_mask(lp.shape[0], self.steps, self.step_dropout, device=lp.device)
        else:
            keep = torch.ones(lp.shape[:2], dtype=torch.bool, device=lp.device)
        lp = lp.masked_fill(~keep.unsqueeze(-1), float("-inf"))
        n_kept = keep.sum(dim=1, keepdim=True).to(lp.dtype)
        return torch.logsumexp(lp, dim=1) - n_kept.log()
