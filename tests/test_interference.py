"""Multi-task methods, the units: task sampling (the mixture drawn against the formula, proportional unchanged),
loss weighting (static weights, the uncertainty weights' gradient by hand), PCGrad on hand-computed
2-D gradients (conflicting and not), the gradient cosine, the lookahead affinity on a toy problem
(a task and its copy, a random-label task), and the options' validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import mtdnn
from mtdnn.affinity import affinity_run, lookahead_affinity, recommend
from mtdnn.cli import build_parser
from mtdnn.commands.config_flags import config_from_args
from mtdnn.data.batching import epoch_schedule
from mtdnn.errors import ConfigError
from mtdnn.tasks.schema import parse_task
from mtdnn.training.diagnostics import cosine_matrix
from mtdnn.training.methods.pcgrad import PCGradGradients, pcgrad_weights
from mtdnn.training.methods.sampling import (CappedProportionalSchedule, SampledSchedule, TaskGroupSchedule,
                                             build_schedule, mixture_probabilities, sampling_exponent)
from mtdnn.training.methods.weighting import UncertaintyWeighting, WeightedTaskLoss, task_weights
from mtdnn.training.schedule import ProportionalSchedule
from test_batching import make_split


def _cfg(**values) -> mtdnn.TrainConfig:
    return mtdnn.make_config(overrides={"tasks": "a,b,c", **values})


class _Sized:
    """A stand-in training split: only its size matters for the task draw."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


# ----------------------------------------------------------------------------- sampling
def test_mixture_formula_by_hand():
    sizes = {"a": 100, "b": 400, "c": 1600}
    assert mixture_probabilities(sizes, 1.0) == pytest.approx({"a": 100 / 2100, "b": 400 / 2100, "c": 1600 / 2100})
    # T = 2: sqrt sizes 10, 20, 40
    assert mixture_probabilities(sizes, 0.5) == pytest.approx({"a": 10 / 70, "b": 20 / 70, "c": 40 / 70})
    assert mixture_probabilities(sizes, 0.0) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert sampling_exponent("temperature", 5.0, 1, 3) == pytest.approx(0.2)
    # annealed (Stickland and Murray): 1 in the first epoch, 0.2 in the last, linear between
    assert [sampling_exponent("annealed", 2.0, e, 5) for e in (1, 2, 3, 5)] == pytest.approx([1.0, 0.8, 0.6, 0.2])
    assert sampling_exponent("annealed", 2.0, 1, 1) == 1.0


@pytest.mark.parametrize("method,temperature", [("temperature", 2.0), ("temperature", 5.0), ("uniform", 1.0)])
def test_drawn_mixture_is_within_three_standard_errors_of_the_formula(method, temperature):
    sizes = {"a": 120, "b": 2490, "c": 9000}
    sched = SampledSchedule({t: _Sized(n) for t, n in sizes.items()}, 32, seed=3, method=method,
                            temperature=temperature, epochs=1, batches_per_epoch=2000)
    draws = [t for epoch in range(1, 51) for t in sched.draw_tasks(epoch)]  # 100,000 draws
    n = len(draws)
    alpha = 0.0 if method == "uniform" else 1.0 / temperature
    total = sum(v ** alpha for v in sizes.values())
    for task, size in sizes.items():
        p = size ** alpha / total  # the formula, computed here
        se = math.sqrt(p * (1 - p) / n)
        freq = draws.count(task) / n
        assert abs(freq - p) < 3 * se, (task, freq, p, se)
    # T = 1 would be proportional: the smallest task would get 1% of the batches, not this
    if method == "temperature":
        assert draws.count("a") / n > 2 * 120 / sum(sizes.values())


def test_proportional_default_is_algorithm_one_bitwise():
    splits = {"a": make_split("a", [5, 9, 3, 7] * 10, seed=1), "b": make_split("b", [4, 6, 8] * 7, seed=2)}
    sched = build_schedule(_cfg(tasks="a,b", batch_size=4, seed=11), splits)
    assert type(sched) is ProportionalSchedule
    for epoch in (1, 2, 3):
        want = epoch_schedule(splits, 4, 11, epoch, True)
        got = sched.epoch(epoch)
        assert [b.task for b in got] == [b.task for b in want]
        assert all(np.array_equal(x.indices, y.indices) for x, y in zip(got, want))


def test_sampled_schedule_batches_are_real_depend_on_seed_and_epoch_only():
    splits = {"a": make_split("a", [5, 9, 3, 7] * 5, seed=1), "b": make_split("b", [4, 6, 8] * 30, seed=2)}
    cfg = _cfg(tasks="a,b", batch_size=4, sampling="uniform", steps_per_epoch=40, seed=5)
    sched = build_schedule(cfg, splits)
    assert isinstance(sched, SampledSchedule) and sched.batches_per_epoch == 40
    e1 = sched.epoch(1)
    assert [b.task for b in e1] == sched.draw_tasks(1)
    for b in e1:
        assert 1 <= len(b.indices) <= 4 and b.indices.max() < len(splits[b.task])
    # small task "a" (20 rows, 5 batches a pass) is drawn ~20 times: its passes repeat, each whole
    a_rows = np.concatenate([b.indices for b in e1 if b.task == "a"])
    first = a_rows[:20]
    assert sorted(first.tolist()) == list(range(20))
    again = build_schedule(cfg, splits).epoch(1)  # rebuilt (as on resume, or on another rank)
    assert all(x.task == y.task and np.array_equal(x.indices, y.indices) for x, y in zip(e1, again))
    assert [b.task for b in sched.epoch(2)] != [b.task for b in e1]


def test_default_steps_and_cap():
    splits = {"a": make_split("a", [5] * 40, seed=1), "b": make_split("b", [4] * 10, seed=2)}
    # proportional has ceil(40/4) + ceil(10/4) = 13 batches: the sampled schedules default to that
    assert build_schedule(_cfg(tasks="a,b", batch_size=4, sampling="temperature"), splits).batches_per_epoch == 13
    assert build_schedule(_cfg(tasks="a,b", batch_size=4, sampling="temperature", grad_accum_steps=2),
                          splits).batches_per_epoch == 14  # 7 steps of 2
    capped = build_schedule(_cfg(tasks="a,b", batch_size=4, max_epoch_examples_per_task=12), splits)
    assert isinstance(capped, CappedProportionalSchedule)
    e1, e2 = capped.epoch(1), capped.epoch(2)
    assert {t: sum(len(b.indices) for b in e1 if b.task == t) for t in "ab"} == {"a": 12, "b": 10}
    a1 = {int(i) for b in e1 if b.task == "a" for i in b.indices}
    a2 = {int(i) for b in e2 if b.task == "a" for i in b.indices}
    assert len(a1) == 12 and a1 != a2  # a fresh subset each epoch
    # the cap also limits a task's size in the sampled mixture (T5's limit)
    sampled = build_schedule(_cfg(tasks="a,b", batch_size=4, sampling="uniform", max_epoch_examples_per_task=12), splits)
    assert sampled.sizes == {"a": 12, "b": 10}


def test_pcgrad_groups_one_batch_of_every_task_per_step():
    splits = {"a": make_split("a", [5] * 40, seed=1), "b": make_split("b", [4] * 10, seed=2),
              "c": make_split("c", [3] * 8, seed=3)}
    sched = build_schedule(_cfg(batch_size=4, mtl_method="pcgrad"), splits)
    assert isinstance(sched, TaskGroupSchedule)
    assert sched.batches_per_epoch == 3 * math.ceil((10 + 3 + 2) / 3)  # 5 steps of 3 batches
    assert [b.task for b in sched.epoch(1)] == ["a", "b", "c"] * 5


# ----------------------------------------------------------------------------- loss weighting
class _FixedLoss(nn.Module):
    """A model whose loss of every task is ``value * x`` (x a parameter at 1)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.x = nn.Parameter(torch.ones(()))
        self.value = value

    def loss(self, task, batch, per_unit=None):
        return self.value * self.x


def _task(name: str, kind: str, weight: float = 1.0):
    extra = {"labels": ["x", "y"]} if kind == "classification" else {"metrics": ["pearson"]}
    return parse_task({"name": name, "type": kind, "input": "single", "loss_weight": weight, **extra,
                       "splits": {"train": {"path": "t.tsv", "role": "train",
                                            "columns": {"text_a": "a", "label": "l"}}}}, "test")


def test_static_weights_yaml_and_flag():
    tasks = [_task("a", "classification", 3.0), _task("b", "regression")]
    assert task_weights(_cfg(tasks="a,b"), tasks) == {"a": 3.0, "b": 1.0}
    cfg = config_from_args(build_parser().parse_args(["train", "--tasks", "a,b", "--task-weights", "b=0.5,a=2"]))
    assert cfg.task_weights == {"b": 0.5, "a": 2.0}
    assert task_weights(cfg, tasks) == {"a": 2.0, "b": 0.5}  # the flag overrides the YAML
    loss = WeightedTaskLoss({"a": 2.0, "b": 0.5})(_FixedLoss(3.0), "b", {}, None)
    assert float(loss.detach()) == pytest.approx(1.5)


def test_uncertainty_weights_gradient_by_hand():
    tasks = [_task("cls", "classification"), _task("reg", "regression")]
    unc = UncertaintyWeighting(tasks, {"cls": 1.0, "reg": 1.0})
    with torch.no_grad():
        unc.log_variance.copy_(torch.tensor([0.3, -0.2]))
    model = _FixedLoss(2.0)  # L = 2
    # classification: f = exp(-s) L + s/2 = 0.740818 * 2 + 0.15; df/ds = -exp(-s) L + 1/2; df/dx = exp(-s) L
    f = unc(model, "cls", {}, None)
    f.backward()
    assert float(f.detach()) == pytest.approx(1.6316364, abs=1e-6)
    assert unc.log_variance.grad.tolist() == pytest.approx([-0.9816364, 0.0], abs=1e-6)
    assert float(model.x.grad) == pytest.approx(1.4816364, abs=1e-6)
    # regression: f = exp(-s) L / 2 + s/2; df/ds = -exp(-s) L / 2 + 1/2 with exp(0.2) = 1.2214028
    unc.log_variance.grad = None
    f = unc(model, "reg", {}, None)
    f.backward()
    assert float(f.detach()) == pytest.approx(1.2214028 - 0.1, abs=1e-6)
    assert unc.log_variance.grad.tolist() == pytest.approx([0.0, -0.7214028], abs=1e-6)
    assert unc.values() == pytest.approx({"cls": 0.3, "reg": -0.2})


# ----------------------------------------------------------------------------- PCGrad
def test_pcgrad_weights_on_hand_computed_gradients():
    # conflicting: g1 = (1, 0), g2 = (-1, 1), g1.g2 = -1 < 0
    #   g1' = g1 - (-1 / 2) g2 = (0.5, 0.5);  g2' = g2 - (-1 / 1) g1 = (0, 1);  sum (0.5, 1.5)
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    w = pcgrad_weights(g @ g.T, seed=0, step=1)
    assert w.tolist() == pytest.approx([2.0, 1.5])
    assert (w @ g).tolist() == pytest.approx([0.5, 1.5])
    # not conflicting: g1 = (1, 0), g2 = (1, 1): nothing projected, the plain sum (2, 1)
    g = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    w = pcgrad_weights(g @ g.T, seed=0, step=1)
    assert (w @ g).tolist() == pytest.approx([2.0, 1.0])


def test_pcgrad_order_is_seeded_and_leaves_the_global_random_state():
    g = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
    before = torch.get_rng_state()
    a = [pcgrad_weights(g @ g.T, seed=4, step=s) for s in range(1, 6)]
    assert torch.equal(torch.get_rng_state(), before)
    b = [pcgrad_weights(g @ g.T, seed=4, step=s) for s in range(1, 6)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


class _TwoTaskToy(nn.Module):
    """Shared 2-D encoder weights theta; task t's loss is c_t . theta + head_t (gradient c_t)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 1, bias=False)
        self.heads = nn.ParameterDict({"a": nn.Parameter(torch.zeros(())), "b": nn.Parameter(torch.zeros(()))})
        self.c = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([-1.0, 1.0])}

    def loss(self, task: str) -> torch.Tensor:
        return (self.encoder.weight[0] * self.c[task]).sum() + self.heads[task]


def test_pcgrad_gradient_combination_in_a_step():
    model = _TwoTaskToy()
    comb = PCGradGradients(["a", "b"], list(model.encoder.parameters()), window=2, seed=0, dist=None)
    comb.backward(model.loss("a"), "a")
    assert model.encoder.weight.grad is None  # moved to task a's row
    comb.backward(model.loss("b"), "b")
    comb.combine(model)
    # PCGrad of (1, 0) and (-1, 1) is (0.5, 1.5); each loss was divided by the window (2)
    assert model.encoder.weight.grad[0].tolist() == pytest.approx([0.25, 0.75])
    assert float(model.heads["a"].grad) == pytest.approx(0.5) and float(model.heads["b"].grad) == pytest.approx(0.5)
    assert int(comb.counter.steps) == 1 and not comb.seen and float(comb.rows.abs().sum()) == 0.0


# ----------------------------------------------------------------------------- cosine, affinity
def test_cosine_matrix_by_hand():
    rows = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [-2.0, 0.0]])
    c = cosine_matrix(rows)
    assert c[0][1] == pytest.approx(1 / math.sqrt(2)) and c[1][0] == pytest.approx(1 / math.sqrt(2))
    assert c[0][3] == pytest.approx(-1.0) and c[0][0] == pytest.approx(1.0)
    assert c[2] == [0.0, 0.0, 0.0, 0.0]  # a zero gradient: no direction


def _toy_problem():
    """A shared layer and one head per task: 'a' (a linear rule), 'copy' (a's data, a's initial
    head), 'noise' (other inputs, random labels)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x @ torch.randn(8, generator=g) > 0).long()
    xn, yn = torch.randn(256, 8, generator=g), torch.randint(0, 2, (256,), generator=g)
    torch.manual_seed(0)
    shared = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
    heads = nn.ModuleDict({"a": nn.Linear(16, 2), "noise": nn.Linear(16, 2)})
    heads["copy"] = nn.Linear(16, 2)
    heads["copy"].load_state_dict(heads["a"].state_dict())
    model = nn.ModuleDict({"shared": shared, "heads": heads})
    data = {"a": (x, y), "copy": (x, y), "noise": (xn, yn)}

    def loss(task: str):
        return lambda: nn.functional.cross_entropy(heads[task](shared(data[task][0])), data[task][1])
    return model, shared, {t: loss(t) for t in data}


def test_lookahead_affinity_copy_positive_random_labels_near_zero():
    model, shared, losses = _toy_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)

    def train_step(step: int) -> None:
        opt.zero_grad()
        sum(f() for f in losses.values()).backward()
        opt.step()

    result = affinity_run(list(losses), list(shared.parameters()), model, steps=40, every=4,
                          lookahead_lr=0.05, train_step=train_step, probe=lambda step: losses)
    z = dict(zip(result.tasks, result.affinity))
    i = {t: k for k, t in enumerate(result.tasks)}
    a_from_copy = z["copy"][i["a"]]
    a_from_noise = z["noise"][i["a"]]
    assert len(result.steps) == 10
    assert a_from_copy > 0 and a_from_copy == pytest.approx(z["a"][i["a"]])  # a copy helps as much as itself
    assert abs(a_from_noise) < 0.1 * a_from_copy, (a_from_noise, a_from_copy)
    assert recommend(result, "a", 2) == ["copy"]
    # the weights are restored exactly after each lookahead
    before = [p.detach().clone() for p in shared.parameters()]
    lookahead_affinity(losses, list(shared.parameters()), 0.05)
    assert all(torch.equal(p, q) for p, q in zip(shared.parameters(), before))


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("values,field", [
    ({"steps_per_epoch": 10}, "steps_per_epoch"),                    # proportional has no step count
    ({"sampling": "temperature", "mtl_method": "pcgrad"}, "mtl_method"),
    ({"task_weights": {"zzz": 2.0}}, "task_weights"),
    ({"task_weights": {"a": 0.0}}, "task_weights"),
    ({"task_weights": {"a": -1.0}}, "task_weights"),
    ({"sampling_temperature": 0.0}, "sampling_temperature"),
    ({"sampling": "softmax"}, "sampling"),
    ({"mtl_method": "uncertainty", "parallel": "fsdp"}, "parallel"),
    ({"log_grad_cosine": 0}, "log_grad_cosine"),
    ({"max_epoch_examples_per_task": 0}, "max_epoch_examples_per_task"),
])
def test_bad_options_name_the_field(values, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        _cfg(**values)


def test_bad_task_weights_flag_is_one_line(capsys):
    from mtdnn.cli import main
    assert main(["train", "--tasks", "rte", "--task-weights", "rte=two"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "field 'task_weights'" in err and "task=X" in err


def test_defaults_are_todays_behaviour():
    cfg = mtdnn.make_config(overrides={"tasks": "rte"})
    assert (cfg.sampling, cfg.mtl_method, cfg.task_weights, cfg.steps_per_epoch, cfg.log_grad_cosine,
            cfg.max_epoch_examples_per_task) == ("proportional", "none", {}, None, None, None)
    assert "log_grad_cosine" in mtdnn.TrainConfig.resume_may_change()
    assert "sampling" not in mtdnn.TrainConfig.resume_may_change()
