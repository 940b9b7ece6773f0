"""Opening and finishing a training run: ``open_run`` builds everything the loop uses (a ``Job``)
and the ``LoopState`` it starts from (fresh, or restored by ``--resume``); ``finish_run`` writes
the metrics of the kept epochs and the submission files, and ends the run.

The run's parts at the plug points come from two places: its head factory
(``training/setup.py: head_factory``) builds the model, loads ``--init-from`` and writes what the
run keeps when it finishes; its training methods (``training/methods/``, built from the config in
``build_methods``) give the batch schedule, the loss composition, the gradient combination, extra
optimiser parameters, state for the resumable checkpoints and per-epoch records. A run with no
method and the plain heads is the paper's Algorithm 1.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.tensorboard import SummaryWriter

from ..config import TrainConfig
from ..errors import CheckpointError, ConfigError
from ..evaluation import predict, prediction_labels, write_submission
from ..faults import Faults
from ..records import TokenizedSplit
from ..reports import write_class_reports
from ..run_dir import RunDir, write_json
from ..runtime import ROUNDING_PACKAGES, environment, seed_everything, set_threads
from .checkpoint import (check_resume_config, check_resume_tasks, has_train_state, load_train_state,
                         read_history, remove_train_state, reset_run_state)
from .distributed import Distributed
from .optim import build_optimizer, build_scheduler
from .methods import MethodContext, MethodSet, build_methods
from .schedule import BatchSchedule
from .setup import Setup, build_setup
from .state import LoopState, selection_splits
from .step import GradientCombination, StepLoss

log = logging.getLogger(__name__)


@dataclass
class Job:
    """Everything the training loop uses; built once by ``open_run``."""

    cfg: TrainConfig
    setup: Setup
    dist: Distributed
    run: RunDir
    train_splits: dict[str, TokenizedSplit]
    methods: MethodSet         # the schedule, loss composition, gradient combination and their state
    objective: nn.Module       # StepLoss, wrapped by DDP/FSDP under torchrun
    optimizer: Any
    scheduler: Any
    writer: Any                # TensorBoard SummaryWriter on rank 0, else None
    faults: Faults | None      # test-only fault injection (mtdnn/faults.py); None outside tests
    selection_splits: dict[str, str | None] = field(default_factory=dict)  # task -> where it selects

    @property
    def model(self) -> nn.Module:
        return self.setup.model

    @property
    def schedule(self) -> BatchSchedule:
        return self.methods.schedule

    @property
    def gradients(self) -> GradientCombination:
        return self.methods.gradients

    @property
    def window(self) -> int:
        """Batches per optimiser step: the accumulation steps (times the tasks with PCGrad)."""
        return self.methods.window

    @property
    def method_state(self) -> nn.Module | None:
        """The learned state of the run's methods (saved in resumable states), or None."""
        return self.methods.state

    @property
    def pad_id(self) -> int:
        return self.setup.tokenizer.pad_token_id or 0


def open_run(cfg: TrainConfig) -> tuple[Job, LoopState]:
    """Check the config, build the model and data, prepare the run directory (rank 0 writes it),
    and restore the state of a resumed run. Nothing is written before the inputs are checked."""
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    dist = Distributed.from_config(cfg)  # joins torchrun's process group, if launched by it
    if cfg.resume:  # continue the run in cfg.resume (checked before anything is built or written)
        cfg = cfg.model_copy(update={"output_dir": str(cfg.resume)})
        check_resume_config(cfg, RunDir(cfg.resume))
    s = build_setup(cfg)
    run = RunDir(cfg.output_dir)
    resuming = _prepare_run_dir(cfg, s, dist, run)
    train_splits = {n: d.train for n, d in s.data.items() if d.train is not None}
    methods = MethodSet.assemble(build_methods(cfg), MethodContext(cfg, s, dist, train_splits))
    total_updates = math.ceil(methods.schedule.batches_per_epoch / methods.window) * cfg.epochs
    objective = dist.wrap(StepLoss(s.model, methods.compose), cfg)
    optimizer = build_optimizer(s.model, cfg, s.device)
    for group in methods.param_groups:  # e.g. the uncertainty log-variances
        optimizer.add_param_group(group)
    scheduler = build_scheduler(optimizer, total_updates, cfg.warmup_ratio)
    state = LoopState(batches_per_epoch=methods.schedule.batches_per_epoch)
    if resuming:  # model, optimiser, scheduler and RNG states; the loop's position and records
        state = load_train_state(run, s.model, optimizer, scheduler, state.batches_per_epoch, methods.state)
        state.history = read_history(run, state.epoch - 1)
        log.info("resuming %s at epoch %d, batch %d (step %d)", run.path, state.epoch, state.batch, state.update)
    if dist.is_main:  # once the state has loaded: a refused resume changes nothing
        _record_environment(run, s.device, dist.world_size, resuming)
    splits = selection_splits(s.tasks, {n: list(d.evals) for n, d in s.data.items()}, cfg.selection_split)
    if dist.is_main and not resuming and cfg.selection_split == "holdout":
        write_json(run.holdout_file, {"fraction": cfg.holdout_fraction, "seed": cfg.subset_seed,
                                      "lines": {n: d.holdout_lines for n, d in s.data.items() if d.holdout_lines}})
    job = Job(cfg, s, dist, run, train_splits, methods, objective, optimizer, scheduler,
              SummaryWriter(str(run.tb_dir)) if dist.is_main else None, Faults.from_environment(), splits)
    log.info("training %s: %d batches per epoch, %d epochs, %d optimiser steps on %s", ", ".join(train_splits),
             state.batches_per_epoch, cfg.epochs, total_updates, s.device)
    return job, state


def _prepare_run_dir(cfg: TrainConfig, s: Setup, dist: Distributed, run: RunDir) -> bool:
    """Whether the run resumes from a saved state; a fresh run's directory is (re)written, and
    rank 0 is recorded as the process training it (``training.json``)."""
    busy = _trained_elsewhere(run) if dist.is_main else None
    busy = dist.all_gather_object(busy)[0]  # every rank stops on rank 0's verdict
    if busy is not None:
        raise CheckpointError(busy)
    resuming = bool(cfg.resume) and has_train_state(run)
    if dist.enabled and cfg.resume and (dist.fsdp or len(set(dist.all_gather_object(resuming))) > 1):
        raise ConfigError("--resume of a distributed run needs --parallel ddp and the run directory on a "
                          "file system every process sees", field="resume")
    if dist.fsdp and cfg.checkpoint_every:
        log.warning("--checkpoint-every is ignored with --parallel fsdp (no resumable state is saved)")
    if resuming:
        check_resume_tasks(s.tasks, run)
    elif dist.is_main:  # only rank 0 writes the run directory
        if cfg.resume:
            log.warning("%s has no checkpoint yet: starting the run from the beginning", run.path)
        reset_run_state(run)
        resolved = cfg.model_dump(mode="json") | {"encoder_resolved": s.encoder_name}
        run.write_setup(resolved, s.tasks + s.carried, s.tokenizer, s.model.encoder.config)
    if dist.is_main:
        run.claim_training()
    return resuming


# what, changed between the attempts at one run, changes its floating-point rounding
ROUNDING = ("processor", *ROUNDING_PACKAGES, "device", "gpu", "world_size", "threads")


def _record_environment(run: RunDir, device: Any, world_size: int, resuming: bool) -> None:
    """Add this attempt's environment to ``environment.json`` (a fresh run starts the list). A run
    resumed where it rounds otherwise than where it started (another processor, torch, device,
    process count or thread count) says so: its rest is not bitwise the uninterrupted run."""
    here = environment(device, world_size)
    earlier: list[dict[str, Any]] = []
    if resuming:
        try:
            earlier = run.read_environment()
        except CheckpointError as e:
            log.warning("%s; a new environment record is started", e)
    if earlier:
        changed = [k for k in ROUNDING if earlier[-1].get(k) != here[k]]
        if changed:
            log.warning("%s continues with %s (it was trained with %s): floating-point rounding differs, so the "
                        "run will not be bitwise the uninterrupted one", run.path,
                        ", ".join(f"{k} {here[k]}" for k in changed), ", ".join(f"{k} {earlier[-1].get(k)}" for k in changed))
    write_json(run.environment_file, [*earlier, here])


def _trained_elsewhere(run: RunDir) -> str | None:
    """The one-line refusal when another living process trains the run now, else None."""
    try:
        run.refuse_if_training()
    except CheckpointError as e:
        return str(e)
    return None


def finish_run(job: Job, state: LoopState) -> Path:
    """metrics.json (each task's metrics at the epoch it keeps), the per-class reports, the
    submission files, and the end of the run: nothing is left to resume; every rank leaves the
    process group."""
    history = state.history
    metrics = {t: history[e - 1]["dev"][t] for t, e in state.selection.items() if history[e - 1]["dev"].get(t)}
    # task fields chosen at the kept epoch's evaluation (a span v2.0 task's null threshold): the
    # submissions use them, and tasks.yaml records them once nothing is left to resume
    chosen = {n: f for n, td in job.setup.data.items() if (f := td.task.kind.chosen_fields(td.task, metrics.get(n, {})))}
    for n, fields in chosen.items():
        job.setup.data[n].task = job.setup.data[n].task.model_copy(update=fields)
    if job.dist.is_main:
        write_json(job.run.metrics_file, metrics)
    write_class_reports(job.setup, job.run, state.selection, dist=job.dist,  # reports/ (mtdnn/reports.py)
                        predicted=state.predicted)
    if job.cfg.predict_test:
        write_submissions(job.setup, job.run, state.selection, dist=job.dist)
    job.methods.finish(job, state)
    if job.dist.is_main:  # what the head factory keeps beyond the epoch checkpoints (an adapter run's parts)
        job.setup.factory.finish(job.model, job.run, state.selection, job.setup.tasks, job.cfg.init_from)
    if job.writer is not None:
        job.writer.close()
    if job.dist.is_main:
        remove_train_state(job.run)  # the run is complete: nothing left to resume
        if chosen:
            job.run.record_task_fields(chosen)
        job.run.release_training()
        job.setup.factory.complete(job.run)
    job.dist.close()  # every rank waits here for the others, then leaves the process group
    return job.run.path


def write_submissions(s: Setup, run: RunDir, selection: dict[str, int], dist: Distributed) -> None:
    """Predict each test split with the epoch its task keeps and write the GLUE TSV (predicted by
    all ranks, written by rank 0)."""
    loaded = None
    for name, td in s.data.items():
        epoch = selection.get(s.model.head_name(name))
        if not td.tests or epoch is None:
            continue
        if epoch != loaded:
            dist.load_weights(s.model, run.checkpoint(epoch))  # distributed: rank 0 reads and broadcasts
            loaded = epoch
        for split_name, split in td.tests.items():
            preds = predict(s.model, td.task, split, batch_size=s.cfg.eval_batch_size, device=s.device,
                            precision=s.cfg.precision, pad_id=s.tokenizer.pad_token_id or 0,
                            progress=s.cfg.progress and dist.is_main, dist=dist)
            fname = td.task.splits[split_name].submission or f"{name}.{split_name}.tsv"
            if dist.is_main:
                write_submission(run.submissions_dir / fname, split.uids, prediction_labels(td.task, preds))
