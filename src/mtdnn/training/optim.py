"""Optimiser and learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

try:  # torch's own list of devices with fused kernels; older torch has none
    from torch.optim.optimizer import _get_fused_kernels_supported_devices
except ImportError:  # pragma: no cover - older torch
    _get_fused_kernels_supported_devices = None

from ..config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW or Adamax; no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=_fused_ok(model, device) or None)
    return torch.optim.Adamax(groups, lr=cfg.lr)


def _fused_ok(model: nn.Module, device: torch.device) -> bool:
    """Whether to use torch's fused AdamW kernel: one kernel for all parameters instead of a Python
    loop over them, the same update up to float rounding. Always on CUDA; on CPU (torch >= 2.4) for
    plain float parameters (not FSDP's DTensors), where it is ~10-20x faster than the loop for
    MiniLM's 23M parameters (~0.15 s a step here, as long as a small batch's forward pass)."""
    if device.type == "cuda":
        return True
    if _get_fused_kernels_supported_devices is None or device.type not in _get_fused_kernels_supported_devices():
        return False
    params = [p for p in model.parameters() if p.requires_grad]
    return all(type(p.data) is torch.Tensor and p.is_floating_point() and p.device.type == device.type
               for p in params)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero."""
    return get_linear_schedule_with_warmup(optimizer, int(round(warmup_ratio * total_steps)), max(total_steps, 1))
