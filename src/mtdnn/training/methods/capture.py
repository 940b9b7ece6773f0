"""What loss compositions that wrap another one share: seeing the model output their inner
composition computed (``captured_output``), and replaying the random stream of a forward pass
(``RngState``), so that a second forward of the same batch draws the same dropout masks.

A wrapping composition (``smart.py: SmartLoss``, ``distill.py: DistillLoss``)
calls its ``base`` (``TaskLoss``, a weighted loss, ...), which runs the model once on the batch; the
wrapper needs that forward's output too (the clean logits of SMART's regulariser, the student's
logits of distillation). Running the model a second time would cost a forward pass and draw other
dropout masks, so the wrapper records the output of the base's forward with a forward hook instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...tasks.schema import TaskDef


@dataclass
class Captured:
    """The output of the first plain forward (no perturbation) of the model inside the block."""

    output: torch.Tensor | None = None
    calls: int = 0


@contextmanager
def captured_output(model: nn.Module) -> Iterator[Captured]:
    """Record the output of ``model(task, batch)`` calls made inside the block (a perturbed forward,
    ``model(task, batch, perturbation=...)``, is not recorded)."""
    seen = Captured()

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        if kwargs.get("perturbation") is None and (len(args) < 3 or args[2] is None):
            seen.calls += 1
            if seen.output is None:
                seen.output = output

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


@dataclass
class RngState:
    """The global random state a forward pass draws from (CPU, and the CUDA device's): capture it
    before a forward, ``restore`` it before another forward of the same shapes to draw the same
    dropout masks (and SAN step masks)."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> "RngState":
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def base_output(model: nn.Module, base: Any, task: str, batch: dict[str, torch.Tensor],
                per_unit: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``base``'s loss of the batch and the model output it computed (a base that ran no plain
    forward of the model gets one run here)."""
    with captured_output(model) as seen:
        loss = base(model, task, batch, per_unit)
    output = seen.output if seen.output is not None else model(task, batch)
    return loss, output


def unit_scale(task: TaskDef, batch: dict[str, torch.Tensor], per_unit: float | None) -> float:
    """What the task loss multiplies its sum over the batch by (``MultiTaskModel.loss``): the
    rank's ``per_unit``, or 1 / the batch's units (rows; questions with a positive for ranking)."""
    if per_unit is not None:
        return per_unit
    return 1 / max(task.kind.loss_units(batch["labels"], batch["groups"]), 1)
