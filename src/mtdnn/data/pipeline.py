"""From task definitions to tokenised splits: read, subset, tokenise (cached)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..records import RawSplit, TokenizedSplit
from ..tasks.schema import TaskDef
from .holdout import HOLDOUT, split_off
from .readers import read_split
from .tokenized import default_cache_dir, tokenize_split

log = logging.getLogger(__name__)


@dataclass
class TaskData:
    task: TaskDef
    train: TokenizedSplit | None = None
    evals: dict[str, TokenizedSplit] = field(default_factory=dict)   # labeled dev/test splits
    tests: dict[str, TokenizedSplit] = field(default_factory=dict)   # unlabeled splits (submissions)
    holdout_lines: list[int] = field(default_factory=list)  # source lines of the held-out training rows


def subset_rows(raw: RawSplit, n: int, seed: int, by_group: bool) -> RawSplit:
    """A fixed random subset of ``n`` rows (or question groups), kept in file order."""
    if by_group:
        gid = raw.group_ids().tolist()
        n_groups = max(gid) + 1 if gid else 0
        if n >= n_groups:
            return raw
        chosen = set(np.random.default_rng(seed).choice(n_groups, size=n, replace=False).tolist())
        return raw.select([i for i, g in enumerate(gid) if g in chosen])
    if n >= len(raw):
        return raw
    keep = np.sort(np.random.default_rng(seed).choice(len(raw), size=n, replace=False))
    return raw.select(keep.tolist())


def split_training_rows(raw: RawSplit, task: TaskDef, *, n_train: int | None, seed: int,
                        holdout_fraction: float | None) -> tuple[RawSplit, RawSplit | None]:
    """A training split's rows as a run trains on them: the seeded subset of ``n_train`` rows (or
    question groups), then, with ``holdout_fraction``, that share held out for selection. Returns
    the rows that train and the held-out rows (``None`` without a holdout)."""
    if n_train:
        raw = subset_rows(raw, n_train, seed, task.kind.keeps_groups)
    if not holdout_fraction:
        return raw, None
    return split_off(raw, task, holdout_fraction, seed)


def load_task_data(tasks: list[TaskDef], tokenizer, *, data_dir: str | Path, max_len: int,
                   cache_dir: str | Path | None = None, max_train_examples: int | dict[str, int | None] | None = None,
                   max_eval_examples: int | None = None, subset_seed: int = 0, allow_hub: bool = True,
                   with_train: bool = True, with_tests: bool = True,
                   holdout_fraction: float | None = None) -> dict[str, TaskData]:
    """Each task's tokenised splits. ``holdout_fraction``: that share of each training split is held
    out (``data/holdout.py``, seeded by ``subset_seed``) as the evaluation split ``holdout``."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out: dict[str, TaskData] = {}
    for task in tasks:
        td, held_out = TaskData(task), None
        for name, split in task.splits.items():
            if split.role == "train" and not with_train:
                continue
            if split.role == "test" and not split.labeled and not with_tests:
                continue
            try:
                raw = read_split(task, name, data_dir, allow_hub=allow_hub)
            except DataError as e:
                if split.role == "test" and not split.labeled:
                    log.warning("%s/%s: no submission file will be written: %s", task.name, name, e)
                    continue
                raise
            n_train = max_train_examples.get(task.name) if isinstance(max_train_examples, dict) else max_train_examples
            if split.role == "train":
                raw, held = split_training_rows(raw, task, n_train=n_train, seed=subset_seed,
                                                holdout_fraction=holdout_fraction)
                if held is not None:
                    held_out, td.holdout_lines = tokenize_split(task, held, tokenizer, max_len, cache), held.lines
                    log.info("%s/%s: %d training rows held out for selection", task.name, name, len(held))
            elif max_eval_examples and split.labeled:
                raw = raw.select(list(range(min(max_eval_examples, len(raw)))))
            tok = tokenize_split(task, raw, tokenizer, max_len, cache)
            log.info("%s/%s: %d examples from %s", task.name, name, len(tok), raw.source)
            if split.role == "train":
                td.train = tok
            elif split.labeled:
                td.evals[name] = tok
            else:
                td.tests[name] = tok
        if td.holdout_lines:  # after the task's own splits: the first evaluation split stays its dev split
            td.evals[HOLDOUT] = held_out
        out[task.name] = td
    return out
