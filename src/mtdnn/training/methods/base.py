"""The interface of a training method: one object that may contribute to a run any of

- the batch schedule (``schedule``; at most one method of a run gives one),
- a loss composition around the one of the methods before it (``compose``),
- the gradient combination (``gradients``; at most one method of a run gives one),
- optimiser parameter groups (``param_groups``),
- state saved in the resumable state (``state``),
- what it does after every optimiser step and records per epoch (``after_update``,
  ``epoch_fields``),
- whether training stops after an epoch's evaluation (``after_evaluation``),
- what it does when the run finishes (``finish``).

Every hook's default contributes nothing, so a method implements only what it changes. The run's
methods are built from its config by the builders of ``registry.py`` and assembled into one
``MethodSet`` there; a run without any method is the paper's Algorithm 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from torch import nn

from ...config import TrainConfig
from ...errors import ConfigError
from ...records import TokenizedSplit
from ...tasks.schema import TaskDef
from ..schedule import BatchSchedule
from ..step import GradientCombination, LossComposition


@dataclass
class MethodContext:
    """What a method may build its parts from: the config, the run's setup (``training/setup.py``:
    tasks, model, data, device), the distributed context and the trained tasks' training splits."""

    cfg: TrainConfig
    setup: Any
    dist: Any
    splits: dict[str, TokenizedSplit]

    @property
    def model(self) -> nn.Module:
        return self.setup.model


class Method:
    """A training method beyond Algorithm 1 (see the module). ``name`` keys its resumable state."""

    name = "method"

    def schedule(self, run: MethodContext) -> BatchSchedule | None:
        """The run's batch schedule, or None to leave it to another method (default: Algorithm 1's)."""
        return None

    def compose(self, inner: LossComposition, run: MethodContext) -> LossComposition:
        """The loss composition around ``inner`` (the task's loss, or the methods' before this one)."""
        return inner

    def gradients(self, run: MethodContext) -> GradientCombination | None:
        """The run's gradient combination, or None (default: the accumulation steps' sum)."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the method's own parameters (after ``compose``)."""
        return []

    def state(self) -> nn.Module | None:
        """Learned state that resumable states keep (not part of the model's weights)."""
        return None

    def after_update(self, job: Any, state: Any) -> None:
        """After every optimiser step (``state.update`` steps done)."""

    def after_evaluation(self, job: Any, state: Any, scores: dict[str, Any]) -> str | None:
        """After an epoch's evaluation (``scores``: task -> split -> metrics; ``job.selection_splits``
        names each task's selection split): why training should stop now, or None to go on."""
        return None

    def epoch_fields(self, job: Any, state: Any) -> dict[str, Any]:
        """The keys the method adds to the epoch's history line (``state.epoch``)."""
        return {}

    def finish(self, job: Any, state: Any) -> None:
        """The run has finished training (called on every rank, before the run is complete)."""


def refuse_kinds(method: str, tasks: Iterable[TaskDef]) -> None:
    """Raise the one-line ConfigError of the first task whose kind cannot train with ``method``."""
    for task in tasks:
        why = task.kind.refuses(method)
        if why:
            raise ConfigError(f"{why}: task '{task.name}' ({task.type}) cannot train with it", field="tasks")
