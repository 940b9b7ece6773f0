"""What the training loop carries from batch to batch and epoch to epoch (``LoopState``, the one
mutable object of the loop, saved in resumable checkpoints), and the per-task epoch selection as a
pure function (``update_selection``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..tasks.schema import TaskDef

# the fields a resumable checkpoint stores (state.json "loop"); the others are rebuilt on resume
SAVED_FIELDS = ("epoch", "batch", "update", "n_examples", "losses", "skipped", "best", "selection",
                "batches_per_epoch", "records")
# saved fields added after the first saved states: an older state without them gets the default
LATER_FIELDS = frozenset({"records"})


@dataclass
class LoopState:
    """Where the training loop is: ``batch`` batches of epoch ``epoch`` are done (``batch == 0``:
    the epoch has not started; epochs before ``epoch`` are complete and evaluated)."""

    epoch: int = 1
    batch: int = 0
    update: int = 0                                          # optimiser steps done in the run
    n_examples: int = 0                                      # training examples of this epoch
    losses: dict[str, list[float]] = field(default_factory=dict)  # this epoch's batch losses, per task
    skipped: dict[str, int] = field(default_factory=dict)   # batches skipped for a non-finite loss (epoch)
    best: dict[str, float] = field(default_factory=dict)    # task -> its best selection score so far
    selection: dict[str, int] = field(default_factory=dict)  # task -> the epoch it keeps
    batches_per_epoch: int = 0
    # this epoch's records of the diagnostics beyond the paper (training/diagnostics.py: gradient
    # cosines), written into its history line; empty unless such a diagnostic is on
    records: dict[str, Any] = field(default_factory=dict)
    # not saved: rebuilt on resume (history from history.jsonl; an accumulation window never spans a save)
    history: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)
    drop_window: bool = field(default=False, repr=False, compare=False)
    # (task, split, epoch) -> the predicted classes of that evaluation, for the per-class reports at the
    # end (mtdnn/reports.py), which then need no prediction pass of their own; empty after a resume
    predicted: dict[tuple[str, str, int], Any] = field(default_factory=dict, repr=False, compare=False)

    def saved(self) -> dict[str, Any]:
        """The JSON-ready part a resumable checkpoint stores."""
        return {k: getattr(self, k) for k in SAVED_FIELDS}

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> "LoopState":
        return cls(**{k: values[k] for k in SAVED_FIELDS if k in values or k not in LATER_FIELDS})

    def count_batch(self, task: str, loss: float, examples: int, skipped: bool) -> None:
        """One more batch of this epoch done: its loss, or a skip."""
        self.batch += 1
        if skipped:
            self.skipped[task] = self.skipped.get(task, 0) + 1
        else:
            self.losses.setdefault(task, []).append(loss)
            self.n_examples += examples

    def keep_predictions(self, task: str, split: str, predictions: Any) -> None:
        """The predicted classes of one split at this epoch's evaluation (``evaluate_tasks(keep=...)``)."""
        self.predicted[(task, split, self.epoch)] = predictions.preds

    def next_epoch(self) -> None:
        """Epoch ``epoch`` is complete (trained, evaluated, saved): start the next one."""
        self.epoch, self.batch, self.n_examples, self.losses, self.skipped = self.epoch + 1, 0, 0, {}, {}
        self.records = {}


def selection_splits(tasks: list[TaskDef], evals: dict[str, list[str]], where: str) -> dict[str, str | None]:
    """The split each task's kept epoch is chosen on: ``holdout`` where ``where`` asks for it and
    the task has one (``evals``: each task's evaluation splits), else its first dev split."""
    return {t.name: "holdout" if where == "holdout" and "holdout" in evals.get(t.name, []) else t.selection_split
            for t in tasks}


def update_selection(best: dict[str, float], selection: dict[str, int], tasks: list[TaskDef],
                     dev: dict[str, dict[str, dict[str, float]]], epoch: int, evaluated: bool,
                     mode: Literal["best", "last"],
                     splits: dict[str, str | None] | None = None) -> tuple[dict[str, float], dict[str, int]]:
    """Each task's kept epoch after ``epoch``: with ``mode == "best"``, the epoch of its best score
    on its selection split (``splits``, default its first dev split) so far (ties keep the earlier
    epoch); with ``"last"``, this epoch. A task without one keeps the last epoch; a task that
    borrows another's head (``head_from``) keeps nothing of its own. Returns new dicts (the inputs
    are not changed)."""
    best, selection = dict(best), dict(selection)
    for t in tasks:
        sel = splits[t.name] if splits is not None else t.selection_split
        if t.head_from is not None or (sel and not evaluated and mode == "best"):
            continue
        value = dev[t.name][sel]["score"] if sel and evaluated else float(epoch)  # no dev split: the last epoch
        if mode == "last" or t.name not in best or value > best[t.name]:
            best[t.name], selection[t.name] = value, epoch
    return best, selection
