"""Predict over a split, score it, evaluate every task's labeled splits (the one evaluation loop of
training and the API), and write GLUE submission files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.batching import collate, eval_order
from .data.pipeline import TaskData
from .model.multitask import MultiTaskModel
from .records import Predictions, TokenizedSplit
from .run_dir import atomic_write
from .runtime import autocast, to_device
from .tasks.schema import TaskDef


def predict(model: MultiTaskModel, task: TaskDef, split: TokenizedSplit, *, batch_size: int,
            device: torch.device, precision: str = "fp32", pad_id: int = 0,
            progress: bool = False, dist=None) -> Predictions:
    """Run the model over a split in length-sorted batches and return outputs in file order.

    ``dist``: the ``training.distributed.Distributed`` of a multi-process run. Each process then
    predicts every ``world_size``-th row of the length-sorted split and the outputs are gathered:
    every process returns the whole split's predictions, each row counted once. All processes run
    the same number of forward passes (a shorter shard adds a one-row pass whose output is dropped),
    as an FSDP forward is a collective."""
    sharded = dist is not None and dist.enabled
    was_training = model.training
    model.eval()
    outs: list[torch.Tensor] = []  # kept on the device: one copy to the host at the end, no sync per batch
    rows: list[np.ndarray] = []
    if sharded:
        mine = np.argsort(-split.lengths, kind="stable")[dist.rank::dist.world_size]
        largest_shard = -(-len(split) // dist.world_size)
        steps = -(-largest_shard // batch_size)  # batches of the largest shard
        batches = [mine[s:s + batch_size] for s in range(0, steps * batch_size, batch_size)]
    else:
        batches = eval_order(split, batch_size)
    # FSDP's unsharded parameters must not be created as inference tensors: no_grad there
    with torch.no_grad() if getattr(dist, "fsdp", False) else torch.inference_mode():
        for idx in tqdm(batches, desc=f"eval {task.name}/{split.split}", disable=not progress, leave=False):
            real = len(idx) > 0
            batch = to_device(collate(split, idx if real else np.arange(1), pad_id), device)
            with autocast(device, precision):
                out = model(task.name, batch)
            out = task.kind.eval_outputs(out.float(), batch)
            outs.append(out if real else out[:0])
            rows.append(idx)
    model.train(was_training)
    order = np.concatenate(rows).astype(np.int64)
    stacked = task.kind.stack_outputs(outs)
    if sharded:
        parts = dist.all_gather_object((order, stacked))
        order = np.concatenate([p[0] for p in parts])
        stacked = np.concatenate([p[1] for p in parts])
        if len(order) != len(split) or len(np.unique(order)) != len(split):
            raise RuntimeError(f"gathered {len(order)} predictions for the {len(split)} rows of "
                               f"{task.name}/{split.split}")
    outputs = np.empty_like(stacked)
    outputs[order] = stacked
    return Predictions(outputs, task.kind.decide(task, outputs, split))


def score(task: TaskDef, split: TokenizedSplit, preds: Predictions) -> dict[str, float]:
    """Metrics in percent plus ``score`` (GLUE's figure). For ranking, accuracy counts the best
    candidate of each question as positive and the others as negative (GLUE QNLI)."""
    return task.kind.score(task, split, preds.preds)


Metrics = dict[str, dict[str, dict[str, float]]]  # task -> split -> metric -> value


def evaluate_tasks(model: MultiTaskModel, data: dict[str, TaskData], *, batch_size: int,
                   device: torch.device, precision: str = "fp32", pad_id: int = 0,
                   progress: bool = False, dist=None,
                   before_task: Callable[[str], None] | None = None,
                   keep: Callable[[str, str, Predictions], None] | None = None) -> Metrics:
    """Predict and score every labeled evaluation split (``TaskData.evals``): task -> split ->
    metrics, tasks in ``data``'s order and splits in definition order; a task without such splits
    is left out. ``before_task(name)`` runs before a task's splits are predicted (the API loads the
    weights the task keeps); ``keep(task, split, predictions)`` is given each split's predictions
    (the loop keeps them for the per-class reports); ``dist`` as in ``predict``. A task's splits
    are predicted first and scored together (``TaskKind.score_splits``: span v2.0 tasks choose
    their null threshold on held-out predictions there)."""
    out: Metrics = {}
    for name, td in data.items():
        if not td.evals:
            continue
        if before_task is not None:
            before_task(name)
        evaluated = {split_name: (split, predict(model, td.task, split, batch_size=batch_size, device=device,
                                                 precision=precision, pad_id=pad_id, progress=progress, dist=dist))
                     for split_name, split in td.evals.items()}
        out[name] = td.task.kind.score_splits(td.task, evaluated)  # the splits together: a setting chosen on one
        if keep is not None:
            for split_name, (_, preds) in evaluated.items():
                keep(name, split_name, preds)
    return out


def prediction_labels(task: TaskDef, preds: Predictions) -> list[str]:
    """Predictions as they appear in submission files: label names, or scores (the task's kind)."""
    return task.kind.prediction_labels(task, preds.preds)


def write_submission(path: str | Path, uids: list[str], values: list[str]) -> None:
    with atomic_write(path) as f:
        f.write("index\tprediction\n")
        for uid, v in zip(uids, values):
            f.write(f"{uid}\t{v}\n")
