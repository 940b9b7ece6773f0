"""The batch schedule: which task's mini-batch the training loop takes at each step of an epoch.

A plug point of the loop (``BatchSchedule``). The default is the paper's Algorithm 1
(``ProportionalSchedule``): every batch of every task once per epoch, all shuffled together, so
each task is seen in proportion to its size. A training method may give the run another
(``training/methods/sampling.py``: capped proportional, temperature, uniform and annealed sampling;
PCGrad's one batch of every task per step). A schedule must depend only on (seed, epoch): every process of a
distributed run builds the same one, and a resumed run skips the batches already done.
"""

from __future__ import annotations

from typing import Protocol

from ..data.batching import Batch, epoch_schedule
from ..records import TokenizedSplit


class BatchSchedule(Protocol):
    batches_per_epoch: int

    def epoch(self, epoch: int) -> list[Batch]:
        """The batches of ``epoch`` (1-based), in training order."""


class ProportionalSchedule:
    """Algorithm 1: each task's training set cut into batches of that task alone (whole candidate
    groups for ranking tasks, length-grouped with ``group_by_length``), all tasks' batches merged
    and shuffled every epoch."""

    def __init__(self, splits: dict[str, TokenizedSplit], batch_size: int, seed: int,
                 group_by_length: bool = True) -> None:
        self.splits, self.batch_size, self.seed, self.group_by_length = splits, batch_size, seed, group_by_length
        self.batches_per_epoch = len(self.epoch(1))

    def epoch(self, epoch: int) -> list[Batch]:
        return epoch_schedule(self.splits, self.batch_size, self.seed, epoch, self.group_by_length)
