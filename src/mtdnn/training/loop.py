"""The training loop: the paper's Algorithm 1, evaluation after every epoch, and the run directory.

One epoch = every task's training set cut into mini-batches of that task alone, all tasks' batches
shuffled together, one optimiser step (or one accumulation micro-step) per batch with that task's
loss. After each epoch every task is evaluated on its dev splits; each task keeps its best epoch.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.batching import epoch_schedule
from ..data.loader import schedule_loader
from ..errors import ConfigError, MtdnnError
from ..evaluation import predict, prediction_labels, score, write_submission
from ..metrics import glue_average
from ..run_dir import RunDir, save_weights, write_json
from ..runtime import autocast, seed_everything, set_threads, to_device
from .distributed import Distributed
from .checkpoint import (LoopState, check_resume_config, check_resume_tasks, has_train_state,
                         load_train_state, maybe_kill_for_test, read_history, remove_train_state,
                         reset_run_state, save_train_state)
from .optim import build_optimizer, build_scheduler
from .setup import Setup, build_setup, load_model_weights

log = logging.getLogger(__name__)


class TrainingError(MtdnnError):
    """Training cannot go on (for example a NaN loss)."""


def train(cfg: TrainConfig) -> Path:
    """Train (multi-task) as ``cfg`` says; returns the run directory."""
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    ctx = Distributed.from_config(cfg)  # joins torchrun's process group, if launched by it
    if cfg.resume:  # continue the run in cfg.resume (checked before anything is built or written)
        cfg = cfg.model_copy(update={"output_dir": str(cfg.resume)})
        check_resume_config(cfg, RunDir(cfg.resume))
    s = build_setup(cfg)
    run = RunDir(cfg.output_dir)  # nothing is written before this point: bad input leaves no run dir
    resuming = bool(cfg.resume) and has_train_state(run)
    if ctx.enabled and cfg.resume and (ctx.fsdp or len(set(ctx.all_gather_object(resuming))) > 1):
        raise ConfigError("--resume of a distributed run needs --parallel ddp and the run directory on a "
                          "file system every process sees", field="resume")
    if ctx.fsdp and cfg.checkpoint_every:
        log.warning("--checkpoint-every is ignored with --parallel fsdp (no resumable state is saved)")
    if resuming:
        check_resume_tasks(s.tasks, run)
    elif ctx.is_main:  # only rank 0 writes the run directory
        if cfg.resume:
            log.warning("%s has no checkpoint yet: starting the run from the beginning", run.path)
        reset_run_state(run)
        resolved = cfg.model_dump(mode="json") | {"encoder_resolved": s.encoder_name}
        run.write_setup(resolved, s.tasks, s.tokenizer, s.model.encoder.config)
    model, device, pad_id = s.model, s.device, s.tokenizer.pad_token_id or 0
    train_splits = {n: d.train for n, d in s.data.items() if d.train is not None}

    per_epoch = len(epoch_schedule(train_splits, cfg.batch_size, cfg.seed, 1, cfg.group_by_length))
    total_updates = math.ceil(per_epoch / cfg.grad_accum_steps) * cfg.epochs
    trainer = ctx.wrap(model, cfg)  # trainer(task, batch) -> summed loss (DDP / FSDP under torchrun)
    optimizer = build_optimizer(model, cfg, device)
    scheduler = build_scheduler(optimizer, total_updates, cfg.warmup_ratio)
    start = LoopState(batches_per_epoch=per_epoch)
    history: list[dict[str, Any]] = []
    if resuming:  # model, optimiser, scheduler and RNG states; the loop's position and records
        start = load_train_state(run, s.model, optimizer, scheduler, per_epoch)
        history = read_history(run, start.epoch - 1)
        log.info("resuming %s at epoch %d, batch %d (step %d)", run.path, start.epoch, start.batch, start.update)
    writer = _tensorboard(run.tb_dir) if ctx.is_main else None
    selection: dict[str, int] = start.selection
    best: dict[str, float] = start.best
    update = start.update
    log.info("training %s: %d batches per epoch, %d epochs, %d optimiser steps on %s",
             ", ".join(train_splits), per_epoch, cfg.epochs, total_updates, device)

    for epoch in range(start.epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        schedule = epoch_schedule(train_splits, cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)
        first = start.batch if epoch == start.epoch else 0  # batches done before a resume
        losses: dict[str, list[float]] = defaultdict(list, start.losses if first else {})
        n_examples = start.n_examples if first else 0
        skipped: dict[str, int] = dict(start.skipped) if first else {}
        drop_grads = False
        # padded batches in schedule order, collated ahead by cfg.num_workers processes (0: inline)
        batches = schedule_loader(train_splits, schedule[first:], pad_id, num_workers=cfg.num_workers, device=device,
                                  rows=lambda b: ctx.share(train_splits[b.task], b.indices, model.tasks[b.task].type)[0])
        bar = tqdm(schedule[first:], initial=first, total=len(schedule), desc=f"epoch {epoch}/{cfg.epochs}",
                   disable=not (cfg.progress and ctx.is_main), dynamic_ncols=True)
        for i, b in enumerate(bar, start=first):
            ctx.debug_hooks(model, epoch, i)
            # this process's share of the global batch; factor: its summed loss -> its part of the mean
            rows, factor = ctx.share(train_splits[b.task], b.indices, model.tasks[b.task].type)
            batch = to_device(next(batches), device)  # = collate(train_splits[b.task], rows, pad_id)
            step_end = (i + 1) % cfg.grad_accum_steps == 0 or i + 1 == len(schedule)
            with ctx.no_sync(trainer, skip_sync=not step_end):
                with autocast(device, cfg.precision):
                    loss = trainer(b.task, batch) * factor
                value = ctx.global_loss(loss)  # the global batch's mean loss, the same on every rank
                if not math.isfinite(value):
                    where = f"task '{b.task}' at step {update + 1} (epoch {epoch}, batch {i + 1})"
                    if cfg.on_nan == "stop":
                        raise TrainingError(f"loss is {value} on {where}; try a lower --lr, "
                                            "or --on-nan skip to skip such batches")
                    skipped[b.task] = skipped.get(b.task, 0) + 1
                    log.warning("skipping a batch: loss is %s on %s", value, where)
                    drop_grads = ctx.after_skipped_forward(loss) or drop_grads
                else:
                    (loss / cfg.grad_accum_steps).backward()
                    losses[b.task].append(value)
                    n_examples += len(b.indices)
            if step_end:
                if drop_grads:  # DDP: a skipped batch drops its accumulation window (see after_skipped_forward)
                    optimizer.zero_grad(set_to_none=True)
                    drop_grads = False
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                update += 1
                if update % cfg.log_every == 0 and writer is not None:
                    writer.add_scalar(f"train/loss/{b.task}", value, update)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], update)
                bar.set_postfix(task=b.task, loss=f"{value:.3f}", refresh=False)  # drawn at tqdm's own pace
                if cfg.checkpoint_every and update % cfg.checkpoint_every == 0 and i + 1 < len(schedule) \
                        and ctx.is_main and not ctx.fsdp:
                    save_train_state(run, s.model, optimizer, scheduler, LoopState(
                        epoch, i + 1, update, n_examples, dict(losses), skipped, best, selection, per_epoch))
                maybe_kill_for_test(update)
        train_time = time.perf_counter() - t0

        evaluated = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
        dev = evaluate_all(s, progress=cfg.progress and ctx.is_main, dist=ctx) if evaluated else {}
        record = {"epoch": epoch, "step": update, "train_examples": n_examples,
                  "train_seconds": round(train_time, 2), "eval_seconds": round(time.perf_counter() - t0 - train_time, 2),
                  "train_loss": {t: float(np.mean(v)) for t, v in losses.items()}, "dev": dev,
                  "skipped_batches": skipped}
        ctx.debug_hooks(model, epoch, None)
        weights = ctx.full_state_dict(model)  # FSDP: gathered from the shards (every rank takes part)
        if ctx.is_main:
            save_weights(run.checkpoint(epoch), weights, {"epoch": str(epoch)})
        for t in s.tasks:
            sel = t.selection_split
            if t.head_from is not None or (sel and not evaluated and cfg.selection == "best"):
                continue
            value = dev[t.name][sel]["score"] if sel and evaluated else float(epoch)  # no dev split: the last epoch
            if cfg.selection == "last" or t.name not in best or value > best[t.name]:
                best[t.name], selection[t.name] = value, epoch
        if dev:
            record["glue_average"] = glue_average({t: next(iter(dev[t].values()))["score"] for t in dev})
        history.append(record)
        if ctx.is_main:
            run.append_history(record)
            _log_epoch(writer, record)
            write_json(run.selection_file, {"tasks": selection, "last": epoch})
            _prune_checkpoints(run, keep=set(selection.values()) | {epoch})
            if not ctx.fsdp:  # FSDP's sharded optimiser state is not saved: such runs do not resume
                save_train_state(run, s.model, optimizer, scheduler,
                                 LoopState(epoch + 1, 0, update, 0, {}, {}, best, selection, per_epoch))
        log.info("epoch %d: %s", epoch, _summary_line(dev))

    metrics = {t: history[selection[t] - 1]["dev"][t] for t in selection if history[selection[t] - 1]["dev"].get(t)}
    if ctx.is_main:
        write_json(run.metrics_file, metrics)
    if cfg.predict_test:
        write_submissions(s, run, selection, dist=ctx)
    if writer is not None:
        writer.close()
    if ctx.is_main:
        remove_train_state(run)  # the run is complete: nothing left to resume
    ctx.close()  # every rank waits here for the others, then leaves the process group
    return run.path


def evaluate_all(s: Setup, progress: bool = False, dist=None) -> dict[str, dict[str, dict[str, float]]]:
    """task -> split -> metrics, for every labeled evaluation split (``dist``: split over the ranks)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, td in s.data.items():
        for split_name, split in td.evals.items():
            preds = predict(s.model, td.task, split, batch_size=s.cfg.eval_batch_size, device=s.device,
                            precision=s.cfg.precision, pad_id=s.tokenizer.pad_token_id or 0, progress=progress,
                            dist=dist)
            out.setdefault(name, {})[split_name] = score(td.task, split, preds)
    return out


def write_submissions(s: Setup, run: RunDir, selection: dict[str, int], dist=None) -> None:
    """Predict each test split with the epoch its task keeps and write the GLUE TSV (``dist``:
    predicted by all ranks, written by rank 0)."""
    loaded = None
    for name, td in s.data.items():
        if not td.tests:
            continue
        epoch = selection.get(s.model.head_name(name))
        if epoch is None:
            continue
        if epoch != loaded:
            if dist is not None and dist.enabled:
                dist.load_weights(s.model, run.checkpoint(epoch))  # rank 0 reads and broadcasts
            else:
                load_model_weights(s.model, run.checkpoint(epoch))
            loaded = epoch
        main = dist is None or dist.is_main
        for split_name, split in td.tests.items():
            preds = predict(s.model, td.task, split, batch_size=s.cfg.eval_batch_size, device=s.device,
                            precision=s.cfg.precision, pad_id=s.tokenizer.pad_token_id or 0,
                            progress=s.cfg.progress and main, dist=dist)
            fname = td.task.splits[split_name].submission or f"{name}.{split_name}.tsv"
            if main:
                write_submission(run.submissions_dir / fname, split.uids, prediction_labels(td.task, preds))


def _prune_checkpoints(run: RunDir, keep: set[int]) -> None:
    for p in (run.path / "checkpoints").glob("epoch-*.safetensors"):
        if int(p.stem.split("-")[1]) not in keep:
            p.unlink()


def _summary_line(dev: dict[str, dict[str, dict[str, float]]]) -> str:
    return "; ".join(f"{t}/{sp} " + ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "score")
                     for t, splits in dev.items() for sp, m in splits.items())


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        log.warning("tensorboard is not installed: no event files")
        return None
    return SummaryWriter(str(path))


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
