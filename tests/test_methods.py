"""A training method is one object of one interface (``mtdnn.training.methods``): a method defined
here, registered from here, trains a run through every hook it implements (the schedule, a loss
composition, a parameter group, resumable state, per-step and per-epoch records, the finish)
without any change of the loop."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from mtdnn.cli import main
from mtdnn.config import make_config
from mtdnn.errors import ConfigError
from mtdnn.training.methods import (Method, MethodContext, MethodSet, build_methods, register_method,
                                    registered_methods, unregister_method)
from mtdnn.training.schedule import ProportionalSchedule
from mtdnn.training.step import SummedGradients, TaskLoss
from toy_tasks import train_argv, write_toy_data


class OneTaskSchedule:
    """Algorithm 1's batches of one task only."""

    def __init__(self, inner: ProportionalSchedule, task: str) -> None:
        self.inner, self.task = inner, task
        self.batches_per_epoch = len(self.epoch(1))

    def epoch(self, epoch: int) -> list[Any]:
        return [b for b in self.inner.epoch(epoch) if b.task == self.task]


class Gain(nn.Module):
    """A learned factor ``exp(g)`` on the loss of the composition inside."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.log_gain = nn.Parameter(torch.zeros(()))

    def forward(self, model: nn.Module, task: str, batch: dict[str, torch.Tensor], per_unit: float | None):
        return torch.exp(self.log_gain) * self.inner(model, task, batch, per_unit)


class ToyMethod(Method):
    name = "toy"
    finished: list[dict[str, Any]] = []

    def __init__(self) -> None:
        self.gain: Gain | None = None
        self.steps = 0

    def schedule(self, run: MethodContext) -> OneTaskSchedule:
        cfg = run.cfg
        return OneTaskSchedule(ProportionalSchedule(run.splits, cfg.batch_size, cfg.seed), "toycls")

    def compose(self, inner: Any, run: MethodContext) -> Gain:
        self.gain = Gain(inner)
        return self.gain

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.gain.log_gain], "lr": 0.1, "weight_decay": 0.0}]

    def state(self) -> nn.Module:
        return self.gain

    def after_update(self, job: Any, state: Any) -> None:
        self.steps += 1

    def epoch_fields(self, job: Any, state: Any) -> dict[str, Any]:
        return {"toy": {"steps": self.steps, "log_gain": round(float(self.gain.log_gain.detach()), 6)}}

    def finish(self, job: Any, state: Any) -> None:
        ToyMethod.finished.append({"state": sorted(job.method_state.state_dict()), "steps": self.steps})


@pytest.fixture
def toy_method():
    register_method("toy", lambda cfg: ToyMethod() if "toycls" in cfg.tasks else None)
    ToyMethod.finished.clear()
    yield
    unregister_method("toy")


def test_a_method_registered_here_trains_a_run(toy_method, tmp_path, tiny_encoder, cache_dir):
    assert registered_methods()[-1] == "toy"
    task_file, data_dir = write_toy_data(tmp_path)
    out = tmp_path / "run"
    assert main(train_argv(task_file, data_dir, tiny_encoder, cache_dir, out, epochs=1)) == 0
    (record,) = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert set(record["train_loss"]) == {"toycls"}  # its schedule: only toycls batches
    assert record["toy"]["steps"] == record["step"] > 0  # its per-step hook ran after every update
    assert record["toy"]["log_gain"] != 0.0  # its parameter group was trained with the model
    assert ToyMethod.finished == [{"state": ["log_gain"], "steps": record["step"]}]  # its state, its finish


def test_the_parts_of_a_plain_run_are_the_papers():
    cfg = make_config(overrides={"tasks": "rte"})
    methods = build_methods(cfg)
    assert [m.name for m in methods] == ["task_weights"]  # static weights, all 1 here: the task's loss

    class Setup:
        tasks: list = []
        model = nn.Linear(1, 1)

    parts = MethodSet.assemble(methods, MethodContext(cfg, Setup(), None, {}))
    assert isinstance(parts.compose, TaskLoss) and isinstance(parts.gradients, SummedGradients)
    assert isinstance(parts.schedule, ProportionalSchedule) and parts.state is None and parts.param_groups == []


def test_two_methods_cannot_both_give_the_schedule(toy_method):
    class Other(Method):
        name = "other"

        def schedule(self, run: MethodContext) -> Any:
            return object()

    cfg = make_config(overrides={"tasks": "rte"})
    with pytest.raises(ConfigError, match="toy and other"):
        MethodSet.assemble([ToyMethod(), Other()], MethodContext(cfg, None, None, {}))
