"""The training loop's pieces, each on its own: the per-task selection update, the loop state,
one training step, the optimiser step, the batch schedule, the model's loss scaling, the head
factory plug point, and the test-only fault hook."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mtdnn.data.batching import epoch_schedule
from mtdnn.errors import ConfigError
from mtdnn.faults import Faults
from mtdnn.model.multitask import MultiTaskModel, PlainHeads
from mtdnn.tasks.registry import builtin_tasks
from mtdnn.training.distributed import Distributed
from mtdnn.training.schedule import ProportionalSchedule
from mtdnn.training.state import LoopState, update_selection
from mtdnn.training.step import (StepLoss, SummedGradients, TrainingError, optimizer_step,
                                 train_step)


# ----------------------------------------------------------------------------- selection
def _tasks():
    b = builtin_tasks()
    return [b["rte"], b["stsb"], b["ax"]]  # ax borrows MNLI's head: never selected on its own


def _dev(rte: float, stsb: float) -> dict:
    return {"rte": {"dev": {"accuracy": rte, "score": rte}}, "stsb": {"dev": {"score": stsb}}}


def test_selection_keeps_each_tasks_best_epoch():
    best, sel = update_selection({}, {}, _tasks(), _dev(50.0, 10.0), 1, True, "best")
    assert sel == {"rte": 1, "stsb": 1} and best == {"rte": 50.0, "stsb": 10.0}
    best2, sel2 = update_selection(best, sel, _tasks(), _dev(48.0, 20.0), 2, True, "best")
    assert sel2 == {"rte": 1, "stsb": 2} and best2 == {"rte": 50.0, "stsb": 20.0}
    assert sel == {"rte": 1, "stsb": 1}  # a pure function: the inputs are unchanged
    _, sel3 = update_selection(best2, sel2, _tasks(), _dev(50.0, 20.0), 3, True, "best")
    assert sel3 == {"rte": 1, "stsb": 2}  # a tie keeps the earlier epoch


def test_selection_last_and_not_evaluated_epochs():
    _, sel = update_selection({"rte": 90.0}, {"rte": 1}, _tasks(), _dev(40.0, 5.0), 2, True, "last")
    assert sel == {"rte": 2, "stsb": 2}
    # an epoch without evaluation: "best" keeps what it had, "last" moves on
    assert update_selection({"rte": 1.0}, {"rte": 1}, _tasks(), {}, 2, False, "best")[1] == {"rte": 1}
    assert update_selection({}, {}, _tasks(), {}, 2, False, "last")[1] == {"rte": 2, "stsb": 2}


def test_selection_task_without_dev_split_keeps_the_last_epoch():
    t = builtin_tasks()["rte"]
    no_dev = t.model_copy(update={"splits": {k: v for k, v in t.splits.items() if v.role == "train"}})
    assert no_dev.selection_split is None
    best, sel = update_selection({}, {}, [no_dev], {}, 1, True, "best")
    best, sel = update_selection(best, sel, [no_dev], {}, 2, True, "best")
    assert sel == {"rte": 2}


# ----------------------------------------------------------------------------- loop state
def test_loop_state_counts_and_rolls_over():
    s = LoopState(batches_per_epoch=3)
    s.count_batch("a", 0.5, 8, skipped=False)
    s.count_batch("b", float("nan"), 4, skipped=True)
    s.count_batch("a", 0.25, 8, skipped=False)
    assert (s.batch, s.n_examples, s.losses, s.skipped) == (3, 16, {"a": [0.5, 0.25]}, {"b": 1})
    saved = s.saved()
    assert LoopState.from_saved(saved) == s
    assert "history" not in saved and "drop_window" not in saved
    s.history.append({"epoch": 1})
    s.next_epoch()
    assert (s.epoch, s.batch, s.n_examples, s.losses, s.skipped) == (2, 0, 0, {}, {})
    assert s.history == [{"epoch": 1}]  # history survives the epoch change


# ----------------------------------------------------------------------------- a step
class _Toy(nn.Module):
    """A two-task model with the MultiTaskModel loss interface: task 'reg' regresses x @ w."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -1.0]))

    def loss(self, task, batch, per_unit=None):
        summed = ((batch["x"] @ self.w - batch["labels"]) ** 2).sum()
        return summed * (1 / len(batch["labels"]) if per_unit is None else per_unit)


def _batch(y0: float = 0.0) -> dict:
    return {"x": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "labels": torch.tensor([y0, 0.0])}


def _step(objective, batch, gradients, on_nan="stop"):
    return train_step(objective, "reg", batch, None, dist=Distributed(), gradients=gradients, sync=True,
                      device=torch.device("cpu"), precision="fp32", on_nan=on_nan, where="step 1")


def test_train_step_backward_of_the_mean_loss():
    model = _Toy()
    res = _step(StepLoss(model), _batch(), SummedGradients(accumulation_steps=2))
    # residuals x @ w - y = [1, -2]: mean of squares 2.5; d/dw = mean(2 r x) = [1, -4]; halved (2 steps)
    assert res.loss == pytest.approx(2.5) and not res.skipped
    assert model.w.grad.tolist() == pytest.approx([0.5, -2.0])


def test_train_step_non_finite_loss_stops_or_skips():
    model = _Toy()
    with pytest.raises(TrainingError, match="loss is inf on task 'reg' at step 1"):
        _step(StepLoss(model), _batch(float("inf")), SummedGradients())
    res = _step(StepLoss(model), _batch(float("inf")), SummedGradients(), on_nan="skip")
    assert res.skipped and math.isinf(res.loss) and not res.drop_window
    assert model.w.grad is None  # no backward pass


def test_optimizer_step_clips_steps_and_zeroes():
    model = _Toy()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)  # lr 0.5 throughout
    model.w.grad = torch.tensor([3.0, 4.0])  # norm 5, clipped to 1: [0.6, 0.8]
    optimizer_step(model, opt, sched, SummedGradients(), max_grad_norm=1.0, drop_window=False)
    assert model.w.detach().tolist() == pytest.approx([1.0 - 0.5 * 0.6, -1.0 - 0.5 * 0.8])
    assert model.w.grad is None and sched.last_epoch == 1
    before = model.w.detach().clone()
    model.w.grad = torch.tensor([float("nan"), 1.0])
    optimizer_step(model, opt, sched, SummedGradients(), max_grad_norm=1.0, drop_window=True)
    assert torch.equal(model.w.detach(), before)  # a dropped window changes nothing


# ----------------------------------------------------------------------------- model loss, schedule, heads
class _Encoder(nn.Module):
    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.config = type("C", (), {"hidden_size": hidden})()
        self.emb = nn.Embedding(50, hidden)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return type("O", (), {"last_hidden_state": self.emb(input_ids)})()


def _cls_batch() -> dict:
    return {"input_ids": torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]),
            "attention_mask": torch.ones(3, 3, dtype=torch.long), "labels": torch.tensor([0, 1, 1]),
            "groups": torch.arange(3), "seg": torch.zeros(3, 3, dtype=torch.long)}


def test_model_loss_is_the_mean_or_the_scaled_sum():
    torch.manual_seed(0)
    task = builtin_tasks()["sst2"]
    model = MultiTaskModel(_Encoder(), [task]).eval()
    batch = _cls_batch()
    logits = model("sst2", batch)
    ce = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum")
    assert model.loss("sst2", batch).item() == pytest.approx(ce.item() / 3)
    assert model.loss("sst2", batch, per_unit=0.25).item() == pytest.approx(ce.item() * 0.25)


def test_head_factory_builds_the_parts():
    calls = []

    class Counting(PlainHeads):
        def encoder(self, encoder, tasks):
            calls.append(("encoder", [t.name for t in tasks]))
            return encoder

        def head(self, task, hidden_size):
            calls.append(("head", task.name, hidden_size))
            return nn.Linear(hidden_size, 2)

    b = builtin_tasks()
    model = MultiTaskModel(_Encoder(hidden=6), [b["sst2"], b["cola"]], Counting())
    assert calls == [("encoder", ["sst2", "cola"]), ("head", "sst2", 6), ("head", "cola", 6)]
    assert isinstance(model.heads["cola"], nn.Linear)


class _Split:
    def __init__(self, n: int) -> None:
        self.groups = np.arange(n)
        self.lengths = np.arange(n) % 7 + 3

    def __len__(self) -> int:
        return len(self.groups)


def test_proportional_schedule_is_algorithm_1():
    splits = {"a": _Split(50), "b": _Split(20)}
    sched = ProportionalSchedule(splits, 8, seed=3)
    assert sched.batches_per_epoch == 7 + 3
    for epoch in (1, 2):
        got, want = sched.epoch(epoch), epoch_schedule(splits, 8, 3, epoch)
        assert [(b.task, b.indices.tolist()) for b in got] == [(b.task, b.indices.tolist()) for b in want]
        assert sorted(np.concatenate([b.indices for b in got if b.task == "a"]).tolist()) == list(range(50))
    # reshuffled each epoch: other rows in the batches
    assert [b.indices.tolist() for b in sched.epoch(1)] != [b.indices.tolist() for b in sched.epoch(2)]


# ----------------------------------------------------------------------------- faults
def test_fault_spec_parses_and_rejects():
    assert Faults.parse("kill_at_step=3") == Faults(kill_at_step=3)
    assert Faults.parse("fail_rank=1, fail_mode=exit") == Faults(fail_rank=1, fail_mode="exit")
    for bad in ("kill_at_step=x", "boom=1", "fail_mode=explode", "kill_at_step"):
        with pytest.raises(ConfigError, match="MTDNN_TEST_FAULTS"):
            Faults.parse(bad)


def test_faults_unset_outside_tests(monkeypatch):
    monkeypatch.delenv("MTDNN_TEST_FAULTS", raising=False)
    assert Faults.from_environment() is None
    monkeypatch.setenv("MTDNN_TEST_FAULTS", "fail_rank=0,fail_batch=1")
    f = Faults.from_environment()
    f.at_batch(rank=0, epoch=1, batch=0)  # not yet
    f.at_batch(rank=1, epoch=1, batch=1)  # another rank
    with pytest.raises(RuntimeError, match="simulated failure of rank 0"):
        f.at_batch(rank=0, epoch=1, batch=1)
