"""The output module of span tasks: a start and an end logit per token."""

from __future__ import annotations

import torch
from torch import nn

NULL_INDEX = 0
# the logit of tokens that cannot start or end an answer (finite: half precision holds it)
MASKED = -1e4


class SpanHead(nn.Module):
    """Dropout + linear hidden -> 2 on every token: (B, T, 2) start and end logits. Only the
    tokens that can start or end an answer (segment 1: context tokens with characters) and the
    null position (index 0, [CLS] or <s>) keep their logits; all others get ``MASKED``."""

    reads_cls_only = False

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, 2)

    def forward(self, hidden_states: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.proj(self.dropout(hidden_states))
        keep = batch["seg"] == 1
        keep[:, NULL_INDEX] = True
        return logits.masked_fill(~keep.unsqueeze(-1), MASKED)
