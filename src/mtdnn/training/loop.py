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
from ..data.batching import collate, epoch_schedule
from ..errors import MtdnnError
from ..evaluation import predict, prediction_labels, score, write_submission
from ..metrics import glue_average
from ..run_dir import RunDir, save_weights, write_json
from ..runtime import autocast, seed_everything, set_threads, to_device
from .optim import build_optimizer, build_scheduler
from .setup import Setup, build_setup, load_model_weights

log = logging.getLogger(__name__)


class TrainingError(MtdnnError):
    """Training cannot go on (for example a NaN loss)."""


def train(cfg: TrainConfig) -> Path:
    """Train (multi-task) as ``cfg`` says; returns the run directory."""
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    s = build_setup(cfg)
    run = RunDir(cfg.output_dir)
    resolved = cfg.model_dump(mode="json") | {"encoder_resolved": s.encoder_name}
    run.write_setup(resolved, s.tasks, s.tokenizer, s.model.encoder.config)
    if run.history_file.exists():
        run.history_file.unlink()
    model, device, pad_id = s.model, s.device, s.tokenizer.pad_token_id or 0
    train_splits = {n: d.train for n, d in s.data.items() if d.train is not None}

    per_epoch = len(epoch_schedule(train_splits, cfg.batch_size, cfg.seed, 1, cfg.group_by_length))
    total_updates = math.ceil(per_epoch / cfg.grad_accum_steps) * cfg.epochs
    optimizer = build_optimizer(model, cfg, device)
    scheduler = build_scheduler(optimizer, total_updates, cfg.warmup_ratio)
    writer = _tensorboard(run.tb_dir)
    history: list[dict[str, Any]] = []
    selection: dict[str, int] = {}
    best: dict[str, float] = {}
    update = 0
    log.info("training %s: %d batches per epoch, %d epochs, %d optimiser steps on %s",
             ", ".join(train_splits), per_epoch, cfg.epochs, total_updates, device)

    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        schedule = epoch_schedule(train_splits, cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)
        losses: dict[str, list[float]] = defaultdict(list)
        n_examples = 0
        bar = tqdm(schedule, desc=f"epoch {epoch}/{cfg.epochs}", disable=not cfg.progress, dynamic_ncols=True)
        for i, b in enumerate(bar):
            batch = to_device(collate(train_splits[b.task], b.indices, pad_id), device)
            with autocast(device, cfg.precision):
                loss = model.loss(b.task, batch)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss is {loss.item()} on task '{b.task}' at epoch {epoch}, "
                                    f"batch {i + 1} (try a lower --lr)")
            (loss / cfg.grad_accum_steps).backward()
            losses[b.task].append(loss.item())
            n_examples += len(b.indices)
            if (i + 1) % cfg.grad_accum_steps == 0 or i + 1 == len(schedule):
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                update += 1
                if update % cfg.log_every == 0 and writer is not None:
                    writer.add_scalar(f"train/loss/{b.task}", loss.item(), update)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], update)
                bar.set_postfix(task=b.task, loss=f"{loss.item():.3f}")
        train_time = time.perf_counter() - t0

        evaluated = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
        dev = evaluate_all(s, progress=cfg.progress) if evaluated else {}
        record = {"epoch": epoch, "step": update, "train_examples": n_examples,
                  "train_seconds": round(train_time, 2), "eval_seconds": round(time.perf_counter() - t0 - train_time, 2),
                  "train_loss": {t: float(np.mean(v)) for t, v in losses.items()}, "dev": dev}
        save_weights(run.checkpoint(epoch), model, {"epoch": str(epoch)})
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
        run.append_history(record)
        _log_epoch(writer, record)
        write_json(run.selection_file, {"tasks": selection, "last": epoch})
        _prune_checkpoints(run, keep=set(selection.values()) | {epoch})
        log.info("epoch %d: %s", epoch, _summary_line(dev))

    metrics = {t: history[selection[t] - 1]["dev"][t] for t in selection if history[selection[t] - 1]["dev"].get(t)}
    write_json(run.metrics_file, metrics)
    if cfg.predict_test:
        write_submissions(s, run, selection)
    if writer is not None:
        writer.close()
    return run.path


def evaluate_all(s: Setup, progress: bool = False) -> dict[str, dict[str, dict[str, float]]]:
    """task -> split -> metrics, for every labeled evaluation split."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, td in s.data.items():
        for split_name, split in td.evals.items():
            preds = predict(s.model, td.task, split, batch_size=s.cfg.eval_batch_size, device=s.device,
                            precision=s.cfg.precision, pad_id=s.tokenizer.pad_token_id or 0, progress=progress)
            out.setdefault(name, {})[split_name] = score(td.task, split, preds)
    return out


def write_submissions(s: Setup, run: RunDir, selection: dict[str, int]) -> None:
    """Predict each test split with the epoch its task keeps and write the GLUE TSV."""
    loaded = None
    for name, td in s.data.items():
        if not td.tests:
            continue
        epoch = selection.get(s.model.head_name(name))
        if epoch is None:
            continue
        if epoch != loaded:
            load_model_weights(s.model, run.checkpoint(epoch))
            loaded = epoch
        for split_name, split in td.tests.items():
            preds = predict(s.model, td.task, split, batch_size=s.cfg.eval_batch_size, device=s.device,
                            precision=s.cfg.precision, pad_id=s.tokenizer.pad_token_id or 0, progress=s.cfg.progress)
            fname = td.task.splits[split_name].submission or f"{name}.{split_name}.tsv"
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
