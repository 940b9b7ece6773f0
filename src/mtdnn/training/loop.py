"""The training loop: the paper's Algorithm 1, evaluation after every epoch, and the run directory.

Algorithm 1 (Liu et al. 2019), as ``train`` runs it::

    initialise the shared encoder from the pretrained model, the task heads randomly   open_run
    for epoch in 1 .. epochs:
        pack each task's training data into mini-batches of that task alone       schedule.epoch
        merge the mini-batches of all tasks and shuffle them
        for each mini-batch b_t of task t:                                        run_epoch
            compute task t's loss L_t(b_t)          (cross-entropy, squared error,    train_step
                                                      pairwise ranking)
            compute the gradient of L_t and update the model                      optimizer_step
        evaluate every task on its dev splits; each task keeps its best epoch     end_epoch
    write the metrics of the kept epochs                                          finish_run

Where the pieces live: ``job.py`` opens and finishes a run; ``step.py`` holds one step
(``train_step``, ``optimizer_step``) and the loss-composition and gradient-combination plug
points; ``schedule.py`` the batch schedule (Algorithm 1's, above); ``methods/`` the training
methods that give a run other parts at these plug points (sampling, loss weighting, PCGrad,
distillation, SMART, the gradient-cosine monitor);
``state.py`` the one mutable ``LoopState`` and the per-task epoch selection; ``checkpoint.py``
the resumable state; ``distributed.py`` what changes under torchrun (each rank's share of a
batch, DDP/FSDP wrapping). The head factory that builds the model's parts is in
``model/multitask.py``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.batching import Batch
from ..data.loader import schedule_loader
from ..evaluation import evaluate_tasks
from ..failures import TrainingProgress, recorded_training_failures
from ..metrics import glue_average
from ..run_dir import RunDir, save_weights, write_json
from ..runtime import to_device
from .checkpoint import save_train_state
from .job import Job, finish_run, open_run
from .state import LoopState, update_selection
from .step import optimizer_step, train_step

log = logging.getLogger(__name__)


def train(cfg: TrainConfig) -> Path:
    """Train (multi-task) as ``cfg`` says; returns the run directory. An unexpected exception leaves
    its traceback in the run directory's ``error.log`` and is raised as ``RunFailed``; the run stays
    resumable (``mtdnn/failures.py``)."""
    progress = TrainingProgress(cfg.epochs)
    with recorded_training_failures(Path(cfg.resume or cfg.output_dir), progress):
        job, state = open_run(cfg)
        progress.state = state
        for _ in range(state.epoch, job.cfg.epochs + 1):
            t0 = time.perf_counter()
            run_epoch(job, state)                              # one step per scheduled batch
            train_seconds = time.perf_counter() - t0
            evaluated = state.epoch % job.cfg.eval_every == 0 or state.epoch == job.cfg.epochs
            dev = evaluate_tasks(job.model, job.setup.data, batch_size=job.cfg.eval_batch_size,
                                 device=job.setup.device, precision=job.cfg.precision, pad_id=job.pad_id,
                                 progress=job.cfg.progress and job.dist.is_main, dist=job.dist,
                                 keep=state.keep_predictions) if evaluated else {}
            state.best, state.selection = update_selection(state.best, state.selection, job.setup.tasks, dev,
                                                           state.epoch, evaluated, job.cfg.selection,
                                                           job.selection_splits)
            stop = job.methods.after_evaluation(job, state, dev) if evaluated else None  # early stopping
            end_epoch(job, state, dev, train_seconds, time.perf_counter() - t0 - train_seconds)
            log.info("epoch %d: %s", state.epoch - 1, _summary_line(dev))
            if stop:
                log.info("training stops after epoch %d: %s", state.epoch - 1, stop)
                break
        return finish_run(job, state)


def run_epoch(job: Job, state: LoopState) -> None:
    """The steps of epoch ``state.epoch`` from batch ``state.batch`` (not 0 after a resume) to its end."""
    cfg, dist, model = job.cfg, job.dist, job.model
    model.train()
    schedule = job.schedule.epoch(state.epoch)
    todo = schedule[state.batch:]
    # this process's share of each global batch (all of it in a single process) and its loss scale
    shares = [dist.share(job.train_splits[b.task], b.indices, model.tasks[b.task].type) for b in todo]
    # padded batches in schedule order, collated ahead by cfg.num_workers processes (0: inline)
    batches = schedule_loader(job.train_splits, [Batch(b.task, rows) for b, (rows, _) in zip(todo, shares)],
                              job.pad_id, num_workers=cfg.num_workers, device=job.setup.device)
    bar = tqdm(todo, initial=state.batch, total=len(schedule), desc=f"epoch {state.epoch}/{cfg.epochs}",
               disable=not (cfg.progress and dist.is_main), dynamic_ncols=True)
    for b, (_, per_unit), batch in zip(bar, shares, batches):
        if job.faults:
            job.faults.at_batch(dist.rank, state.epoch, state.batch)
        sync = (state.batch + 1) % job.window == 0 or state.batch + 1 == len(schedule)
        where = f"step {state.update + 1} (epoch {state.epoch}, batch {state.batch + 1})"
        result = train_step(job.objective, b.task, to_device(batch, job.setup.device), per_unit, dist=dist,
                            gradients=job.gradients, sync=sync, device=job.setup.device,
                            precision=cfg.precision, on_nan=cfg.on_nan, where=where)
        state.count_batch(b.task, result.loss, len(b.indices), result.skipped)
        state.drop_window = state.drop_window or result.drop_window
        if sync:
            optimizer_step(model, job.optimizer, job.scheduler, job.gradients, cfg.max_grad_norm,
                           drop_window=state.drop_window)
            state.drop_window = False
            state.update += 1
            _after_update(job, state, b.task, result.loss, last=state.batch == len(schedule))


def _after_update(job: Job, state: LoopState, task: str, loss: float, last: bool) -> None:
    """Step logging, the mid-epoch resumable checkpoint (``checkpoint_every``), test faults."""
    cfg = job.cfg
    if state.update % cfg.log_every == 0 and job.writer is not None:
        job.writer.add_scalar(f"train/loss/{task}", loss, state.update)
        job.writer.add_scalar("train/lr", job.scheduler.get_last_lr()[0], state.update)
    job.methods.after_update(job, state)  # e.g. SMART's anchor, gradient cosines (training/methods/)
    if cfg.checkpoint_every and state.update % cfg.checkpoint_every == 0 and not last \
            and job.dist.is_main and not job.dist.fsdp:
        save_train_state(job.run, job.model, job.optimizer, job.scheduler, state, job.method_state)
    if job.faults:
        job.faults.after_step(state.update)


def end_epoch(job: Job, state: LoopState, dev: dict[str, Any], train_seconds: float, eval_seconds: float) -> None:
    """Record the epoch (history.jsonl, TensorBoard), save its weights and the selection, drop the
    checkpoints no task keeps, and save the resumable state of the next epoch's start."""
    record = {"epoch": state.epoch, "step": state.update, "train_examples": state.n_examples,
              "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2),
              "train_loss": {t: float(np.mean(v)) for t, v in state.losses.items()}, "dev": dev,
              "skipped_batches": state.skipped}
    if dev:
        record["glue_average"] = glue_average({t: next(iter(dev[t].values()))["score"] for t in dev})
    record.update(job.methods.epoch_fields(job, state))  # the mixture drawn, learned loss weights, ...
    if job.faults:
        job.faults.after_epoch(job.dist.rank, state.epoch, lambda: job.dist.replica_state_dict(job.model))
    weights = job.dist.full_state_dict(job.model)  # FSDP: gathered from the shards (every rank takes part)
    state.history.append(record)
    epoch = state.epoch
    state.next_epoch()
    if not job.dist.is_main:
        return
    save_weights(job.run.checkpoint(epoch), weights, {"epoch": str(epoch)})
    job.run.append_history(record)
    _log_epoch(job.writer, record)
    write_json(job.run.selection_file, {"tasks": state.selection, "last": epoch})
    if not job.cfg.save_all_epochs:
        _prune_checkpoints(job.run, keep=set(state.selection.values()) | {epoch})
    if not job.dist.fsdp:  # FSDP's sharded optimiser state is not saved: such runs do not resume
        save_train_state(job.run, job.model, job.optimizer, job.scheduler, state, job.method_state)


def _prune_checkpoints(run: RunDir, keep: set[int]) -> None:
    for p in (run.path / "checkpoints").glob("epoch-*.safetensors"):
        if int(p.stem.split("-")[1]) not in keep:
            p.unlink()


def _summary_line(dev: dict[str, dict[str, dict[str, float]]]) -> str:
    return "; ".join(f"{t}/{sp} " + ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "score")
                     for t, splits in dev.items() for sp, m in splits.items())


def _log_epoch(writer, record: dict[str, Any]) -> None:
    if writer is None:
        return
    for task, splits in record["dev"].items():
        for split, metrics in splits.items():
            for k, v in metrics.items():
                writer.add_scalar(f"{task}/{split}/{k}", v, record["epoch"])
    for task, v in record["train_loss"].items():
        writer.add_scalar(f"train/epoch_loss/{task}", v, record["epoch"])
    writer.flush()
