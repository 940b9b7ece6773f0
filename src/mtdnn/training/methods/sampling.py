"""Task sampling beyond Algorithm 1: the batch schedules of ``--sampling`` (and PCGrad's grouped
steps), and the mixture they draw.

- ``proportional`` (default): Algorithm 1, ``schedule.ProportionalSchedule``, unchanged. With
  ``max_epoch_examples_per_task`` N, a task larger than N contributes a fresh random N of its rows
  (rounded up to whole batches) each epoch (``CappedProportionalSchedule``).
- ``temperature`` (T5, mT5): every step draws its task with probability proportional to
  ``n_t ** (1 / T)``; T = 1 is proportional, a large T uniform.
- ``uniform``: every task equally often (``n_t ** 0``).
- ``annealed`` (Stickland and Murray 2019): the exponent moves from 1 in the first epoch to 0.2 in
  the last, ``alpha_e = 1 - 0.8 * (e - 1) / (E - 1)``: first proportional, then close to uniform.

``n_t`` is the task's number of training examples, at most ``max_epoch_examples_per_task`` (T5's
mixing limit). The sampled schedules take ``steps_per_epoch`` optimiser steps per epoch (default:
as many as a proportional epoch has). A task drawn k times in an epoch gives k batches from its own
stream: shuffled passes over its data, one after another (a small task is repeated, a large one
seen in part), each pass's batches in random order (so that a part of a pass is not biased by the
length grouping).

``TaskGroupSchedule`` is PCGrad's (``--mtl-method pcgrad``): every optimiser step holds one batch
of each task (``grad_accum_steps`` of each), in the tasks' order.

``Sampling`` is the method of ``--sampling`` and ``max_epoch_examples_per_task``; PCGrad's method
(``pcgrad.py``) gives its grouped schedule. Both record each epoch's mixture (``"mixture"``).

Every schedule depends only on (seed, epoch) and the config: every process of a distributed run
builds the same one, and a resumed run skips exactly the batches already done.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterator

import numpy as np

from ...config import TrainConfig
from ...data.batching import Batch, task_batches
from ...records import TokenizedSplit
from ..schedule import BatchSchedule, ProportionalSchedule
from .base import Method, MethodContext

ANNEAL_FINAL_EXPONENT = 0.2  # Stickland and Murray 2019: alpha = 1 - 0.8 (e - 1) / (E - 1)

# keys of the random streams (numpy SeedSequence entropy after (seed, epoch)); each kind of draw
# has its own stream, so that changing one does not move the others
_DRAW_TASKS, _TASK_STREAM, _CAP = 1, 2, 3


def sampling_exponent(method: str, temperature: float, epoch: int, epochs: int) -> float:
    """The exponent alpha of ``p_t ~ n_t ** alpha`` in ``epoch`` (1-based) of ``epochs``."""
    if method == "proportional":
        return 1.0
    if method == "temperature":
        return 1.0 / temperature
    if method == "uniform":
        return 0.0
    if method == "annealed":
        if epochs <= 1:
            return 1.0
        return 1.0 - (1.0 - ANNEAL_FINAL_EXPONENT) * (epoch - 1) / (epochs - 1)
    raise ValueError(f"unknown sampling method {method!r}")


def mixture_probabilities(sizes: dict[str, int], exponent: float) -> dict[str, float]:
    """``p_t = n_t ** exponent / sum_u n_u ** exponent`` (tasks without examples get 0)."""
    weights = {t: (float(n) ** exponent if n > 0 else 0.0) for t, n in sizes.items()}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("no task has training examples")
    return {t: w / total for t, w in weights.items()}


def count_mixture(batches: list[Batch], tasks: list[str]) -> dict[str, int]:
    """Batches per task (every task of ``tasks``, in that order, 0 if it has none)."""
    counts = Counter(b.task for b in batches)
    return {t: counts.get(t, 0) for t in tasks}


def _shuffled_pass(split: TokenizedSplit, batch_size: int, rng: np.random.Generator,
                   group_by_length: bool) -> list[np.ndarray]:
    """One pass over a task's data: its batches (``task_batches``) in random order."""
    batches = task_batches(split, batch_size, rng, group_by_length)
    return [batches[i] for i in rng.permutation(len(batches))]


def _stream(split: TokenizedSplit, batch_size: int, rng: np.random.Generator,
            group_by_length: bool) -> Iterator[np.ndarray]:
    """A task's batches, pass after pass, without end."""
    while True:
        yield from _shuffled_pass(split, batch_size, rng, group_by_length)


def _take_examples(batches: list[np.ndarray], cap: int | None) -> list[np.ndarray]:
    """The first batches holding at least ``cap`` rows (all of them when ``cap`` is None)."""
    if cap is None:
        return batches
    out, n = [], 0
    for b in batches:
        if n >= cap:
            break
        out.append(b)
        n += len(b)
    return out


def proportional_batches(sizes: dict[str, int], batch_size: int) -> int:
    """Batches of one proportional epoch: ``sum_t ceil(n_t / batch_size)`` (exact for rows; ranking
    batches of whole groups may differ by a few)."""
    return sum(math.ceil(n / batch_size) for n in sizes.values())


class CappedProportionalSchedule:
    """Algorithm 1 with at most ``cap`` examples of each task per epoch: a larger task's batches of
    the epoch are the first of a fresh shuffled pass that hold ``cap`` rows; all tasks' batches are
    merged and shuffled."""

    def __init__(self, splits: dict[str, TokenizedSplit], batch_size: int, seed: int, cap: int,
                 group_by_length: bool = True) -> None:
        self.splits, self.batch_size, self.seed, self.cap = splits, batch_size, seed, cap
        self.group_by_length = group_by_length
        self.batches_per_epoch = len(self.epoch(1))

    def epoch(self, epoch: int) -> list[Batch]:
        out = []
        for k, (name, split) in enumerate(self.splits.items()):
            rng = np.random.default_rng([self.seed, epoch, _CAP, k])
            one_pass = _shuffled_pass(split, self.batch_size, rng, self.group_by_length)
            out += [Batch(name, idx) for idx in _take_examples(one_pass, self.cap)]
        order = np.random.default_rng([self.seed, epoch, _DRAW_TASKS]).permutation(len(out))
        return [out[i] for i in order]


class SampledSchedule:
    """``batches_per_epoch`` batches, each of a task drawn with ``mixture_probabilities`` (the
    exponent of ``sampling_exponent`` for the epoch), each task's batches from its own stream."""

    def __init__(self, splits: dict[str, TokenizedSplit], batch_size: int, seed: int, *, method: str,
                 temperature: float, epochs: int, batches_per_epoch: int, cap: int | None = None,
                 group_by_length: bool = True) -> None:
        self.splits, self.batch_size, self.seed = splits, batch_size, seed
        self.method, self.temperature, self.epochs = method, temperature, epochs
        self.batches_per_epoch, self.group_by_length = batches_per_epoch, group_by_length
        self.sizes = {t: min(len(s), cap) if cap else len(s) for t, s in splits.items()}

    def probabilities(self, epoch: int) -> dict[str, float]:
        alpha = sampling_exponent(self.method, self.temperature, epoch, self.epochs)
        return mixture_probabilities(self.sizes, alpha)

    def draw_tasks(self, epoch: int) -> list[str]:
        """The task of every batch of ``epoch``, in training order."""
        p = self.probabilities(epoch)
        names = list(p)
        rng = np.random.default_rng([self.seed, epoch, _DRAW_TASKS])
        return [names[i] for i in rng.choice(len(names), size=self.batches_per_epoch, p=list(p.values()))]

    def epoch(self, epoch: int) -> list[Batch]:
        tasks = self.draw_tasks(epoch)
        streams = {name: _stream(split, self.batch_size, np.random.default_rng([self.seed, epoch, _TASK_STREAM, k]),
                                 self.group_by_length)
                   for k, (name, split) in enumerate(self.splits.items())}
        return [Batch(t, next(streams[t])) for t in tasks]


class TaskGroupSchedule:
    """PCGrad's steps: ``steps`` optimiser steps per epoch, each of ``rounds`` (the accumulation
    steps) batches of every task, in the tasks' order; each task's batches from its own stream."""

    def __init__(self, splits: dict[str, TokenizedSplit], batch_size: int, seed: int, *, steps: int,
                 rounds: int = 1, group_by_length: bool = True) -> None:
        self.splits, self.batch_size, self.seed, self.steps, self.rounds = splits, batch_size, seed, steps, rounds
        self.group_by_length = group_by_length
        self.window = len(splits) * rounds  # batches per optimiser step
        self.batches_per_epoch = steps * self.window

    def epoch(self, epoch: int) -> list[Batch]:
        streams = {name: _stream(split, self.batch_size, np.random.default_rng([self.seed, epoch, _TASK_STREAM, k]),
                                 self.group_by_length)
                   for k, (name, split) in enumerate(self.splits.items())}
        return [Batch(name, next(streams[name]))
                for _ in range(self.steps * self.rounds) for name in self.splits]


def grouped_schedule(cfg: TrainConfig, splits: dict[str, TokenizedSplit]) -> TaskGroupSchedule:
    """PCGrad's schedule: ``steps_per_epoch`` steps (default: a proportional epoch's batches over
    the window), each of ``grad_accum_steps`` batches of every task."""
    window = len(splits) * cfg.grad_accum_steps
    steps = cfg.steps_per_epoch or max(1, math.ceil(_default_batches(cfg, splits) / window))
    return TaskGroupSchedule(splits, cfg.batch_size, cfg.seed, steps=steps, rounds=cfg.grad_accum_steps,
                             group_by_length=cfg.group_by_length)


def sampling_schedule(cfg: TrainConfig, splits: dict[str, TokenizedSplit]) -> BatchSchedule:
    """The schedule of ``--sampling`` and ``max_epoch_examples_per_task`` (Algorithm 1's without either)."""
    if cfg.sampling == "proportional":
        if cfg.max_epoch_examples_per_task is None:
            return ProportionalSchedule(splits, cfg.batch_size, cfg.seed, cfg.group_by_length)
        return CappedProportionalSchedule(splits, cfg.batch_size, cfg.seed, cfg.max_epoch_examples_per_task,
                                          cfg.group_by_length)
    steps = cfg.steps_per_epoch or max(1, math.ceil(_default_batches(cfg, splits) / cfg.grad_accum_steps))
    return SampledSchedule(splits, cfg.batch_size, cfg.seed, method=cfg.sampling,
                           temperature=cfg.sampling_temperature, epochs=cfg.epochs,
                           batches_per_epoch=steps * cfg.grad_accum_steps,
                           cap=cfg.max_epoch_examples_per_task, group_by_length=cfg.group_by_length)


def _default_batches(cfg: TrainConfig, splits: dict[str, TokenizedSplit]) -> int:
    sizes = {t: min(len(s), cfg.max_epoch_examples_per_task or len(s)) for t, s in splits.items()}
    return proportional_batches(sizes, cfg.batch_size)


def build_schedule(cfg: TrainConfig, splits: dict[str, TokenizedSplit]) -> BatchSchedule:
    """The schedule ``cfg`` asks for (``ProportionalSchedule``, Algorithm 1, by default)."""
    return grouped_schedule(cfg, splits) if cfg.mtl_method == "pcgrad" else sampling_schedule(cfg, splits)


def mixture_fields(job: Any, state: Any) -> dict[str, Any]:
    """The epoch's mixture (``{"mixture": {task: batches}}``), also to TensorBoard."""
    mixture = count_mixture(job.schedule.epoch(state.epoch), list(job.train_splits))
    if job.writer is not None:
        for task, v in mixture.items():
            job.writer.add_scalar(f"mixture/{task}", v, state.epoch)
    return {"mixture": mixture}


class Sampling(Method):
    """``--sampling`` other than proportional, or ``max_epoch_examples_per_task``: the run's
    schedule, and the mixture it drew in every epoch's record."""

    name = "sampling"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def schedule(self, run: MethodContext) -> BatchSchedule | None:
        return sampling_schedule(self.cfg, run.splits)

    def epoch_fields(self, job: Any, state: Any) -> dict[str, Any]:
        return mixture_fields(job, state)


def task_sampling(cfg: TrainConfig) -> Method | None:
    """The sampling method of ``cfg`` (None for Algorithm 1's schedule, and with PCGrad, whose
    grouped schedule counts a capped task's examples itself)."""
    if cfg.mtl_method == "pcgrad" or (cfg.sampling == "proportional" and cfg.max_epoch_examples_per_task is None):
        return None
    return Sampling(cfg)
