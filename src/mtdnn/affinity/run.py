"""The affinity on mtdnn's tasks: a short multi-task run of a config's tasks (``--budget`` optimiser
steps, the config's sampling) with the lookahead affinity measured along it."""

from __future__ import annotations

from typing import Any, Iterator

from ..config import TrainConfig
from ..data.batching import collate
from ..runtime import seed_everything, set_threads, to_device
from ..training.diagnostics import batch_loss, fresh_rows, shared_parameters
from ..training.distributed import Distributed
from ..training.methods.sampling import build_schedule
from ..training.optim import build_optimizer, build_scheduler
from ..training.setup import build_setup
from ..training.step import StepLoss, SummedGradients, optimizer_step, train_step
from .measure import AffinityResult, LossClosures, affinity_run


def _batches(schedule: Any) -> Iterator[Any]:
    epoch = 1
    while True:
        yield from schedule.epoch(epoch)
        epoch += 1


def run_affinity(cfg: TrainConfig, *, steps: int, every: int, lookahead_lr: float) -> AffinityResult:
    """The short multi-task run of ``cfg``'s tasks with the affinity measured along it."""
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    s = build_setup(cfg)
    splits = {n: d.train for n, d in s.data.items() if d.train is not None}
    schedule, pad_id = build_schedule(cfg, splits), s.tokenizer.pad_token_id or 0
    optimizer = build_optimizer(s.model, cfg, s.device)
    scheduler = build_scheduler(optimizer, steps, cfg.warmup_ratio)
    objective, gradients, single = StepLoss(s.model), SummedGradients(1), Distributed(device=s.device)
    batches = _batches(schedule)

    def one_step(step: int) -> None:
        s.model.train()
        b = next(batches)
        batch = to_device(collate(splits[b.task], b.indices, pad_id), s.device)
        train_step(objective, b.task, batch, None, dist=single, gradients=gradients, sync=True, device=s.device,
                   precision=cfg.precision, on_nan=cfg.on_nan, where=f"affinity step {step}")
        optimizer_step(s.model, optimizer, scheduler, gradients, cfg.max_grad_norm, drop_window=False)

    def probe(step: int) -> LossClosures:
        return {name: batch_loss(s.model, name, split, fresh_rows(split, cfg.batch_size, cfg.seed, step, k),
                                 pad_id=pad_id, device=s.device, precision=cfg.precision)
                for k, (name, split) in enumerate(splits.items())}

    return affinity_run(list(splits), shared_parameters(s.model), s.model, steps=steps, every=every,
                        lookahead_lr=lookahead_lr, train_step=one_step, probe=probe)
