"""Which methods a run has, and what they give it together.

``register_method(name, build)``: ``build(cfg)`` returns the method ``cfg`` asks for, or None. The
built-in methods register in ``builtin.py``; a method defined elsewhere registers the same way,
with no change of the loop. ``build_methods(cfg)`` builds a run's methods in registration order,
which is the order of their loss compositions (each wraps the ones before it) and of the keys of
their epoch records. ``MethodSet.assemble`` gathers their parts, with the paper's defaults where no
method gives one: Algorithm 1's schedule, the task's loss, the summed gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ...config import TrainConfig
from ...errors import ConfigError
from ..schedule import BatchSchedule, ProportionalSchedule
from ..step import GradientCombination, LossComposition, SummedGradients, TaskLoss
from .base import Method, MethodContext

Builder = Callable[[TrainConfig], "Method | None"]

_BUILDERS: dict[str, Builder] = {}


def register_method(name: str, build: Builder) -> None:
    """Add a method: ``build(cfg)`` gives it for the runs whose config asks for it (else None)."""
    if name in _BUILDERS:
        raise ValueError(f"a method named {name!r} is registered already")
    _BUILDERS[name] = build


def unregister_method(name: str) -> None:
    del _BUILDERS[name]


def registered_methods() -> list[str]:
    return list(_BUILDERS)


def build_methods(cfg: TrainConfig) -> list[Method]:
    """The methods of ``cfg``, in registration order."""
    return [m for build in _BUILDERS.values() if (m := build(cfg)) is not None]


def _only_one(methods: list[Method], parts: list[Any], what: str) -> Any:
    given = [(m.name, p) for m, p in zip(methods, parts) if p is not None]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(n for n, _ in given)} each give the run a {what}: "
                          "use one of them", field="mtl_method")
    return given[0][1] if given else None


@dataclass
class MethodSet:
    """A run's methods and the parts they give it together."""

    methods: list[Method]
    schedule: BatchSchedule
    compose: LossComposition
    gradients: GradientCombination
    param_groups: list[dict[str, Any]] = field(default_factory=list)
    state: nn.Module | None = None  # kept in resumable states: one method's own, or all by name

    @classmethod
    def assemble(cls, methods: list[Method], run: MethodContext) -> "MethodSet":
        cfg = run.cfg
        schedule = _only_one(methods, [m.schedule(run) for m in methods], "batch schedule") or \
            ProportionalSchedule(run.splits, cfg.batch_size, cfg.seed, cfg.group_by_length)
        compose: LossComposition = TaskLoss()
        for m in methods:
            compose = m.compose(compose, run)
        gradients = _only_one(methods, [m.gradients(run) for m in methods], "gradient combination") or \
            SummedGradients(cfg.grad_accum_steps)
        groups = [g for m in methods for g in m.param_groups()]
        states = {m.name: s for m in methods if (s := m.state()) is not None}
        state = next(iter(states.values())) if len(states) == 1 else nn.ModuleDict(states) if states else None
        return cls(methods, schedule, compose, gradients, groups, state)

    @property
    def window(self) -> int:
        """Batches per optimiser step."""
        return self.gradients.window

    def after_update(self, job: Any, state: Any) -> None:
        for m in self.methods:
            m.after_update(job, state)

    def after_evaluation(self, job: Any, state: Any, scores: dict[str, Any]) -> str | None:
        """Why training stops after this evaluation (the first method's reason), or None."""
        reasons = [m.after_evaluation(job, state, scores) for m in self.methods]
        return next((r for r in reasons if r), None)

    def epoch_fields(self, job: Any, state: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in self.methods:
            out.update(m.epoch_fields(job, state))
        return out

    def finish(self, job: Any, state: Any) -> None:
        for m in self.methods:
            m.finish(job, state)
