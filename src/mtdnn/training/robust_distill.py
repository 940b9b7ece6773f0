"""How ``--teachers`` (distillation, ``training/distill.py``) and ``--adv`` (SMART,
``training/smart.py``) enter a run: both are loss compositions wrapped around the one the run
already has (the task's loss, or the weighted one of ``training/mtl.py``), in this order::

    SmartLoss(DistillLoss(base))      # SMART regularises the student; the KD and gold losses inside

With neither option the run's parts are returned unchanged (the golden run stays bitwise equal).
SMART's proximal anchor (a moving average of the weights) is learned state: it joins the method
state that resumable checkpoints keep (``MethodParts.state``), and follows the optimiser's steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..config import TrainConfig
from .distill import distill_composition
from .mtl import MethodParts
from .smart import EmaAnchor, smart_parts


class CombinedState(nn.Module):
    """The method state of ``training/mtl.py`` and SMART's anchor, saved together."""

    def __init__(self, method: nn.Module, smart_anchor: EmaAnchor) -> None:
        super().__init__()
        self.method, self.smart_anchor = method, smart_anchor


def with_robustness(cfg: TrainConfig, setup: Any, dist: Any, methods: MethodParts) -> tuple[MethodParts, EmaAnchor | None]:
    """``methods`` with the distillation and SMART compositions of ``cfg`` around its composition,
    and SMART's proximal anchor (None without ``--adv-proximal``), which the caller attaches to the
    optimiser (``EmaAnchor.follow``)."""
    compose = methods.compose
    if cfg.teachers:
        compose = distill_composition(cfg, setup, dist, compose)
    anchor = None
    if cfg.adv:
        compose, anchor = smart_parts(cfg, setup.model, compose, dist.fsdp)
    if compose is methods.compose:
        return methods, None
    state = methods.state
    if anchor is not None:
        state = anchor if state is None else CombinedState(state, anchor)
    return dataclasses.replace(methods, compose=compose, state=state), anchor
