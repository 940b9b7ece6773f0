"""Data-parallel training on ``torch.distributed``: DistributedDataParallel (default) or FSDP.

``torchrun --nproc_per_node N -m mtdnn train ...`` starts N processes ("ranks") and gives each
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. Each rank joins one process group (NCCL on GPUs,
gloo on CPU) and:

- builds the same epoch schedule (it depends only on seed and epoch), so the global batch of every
  step holds one task, as in a single-process run;
- takes its own contiguous share of each global batch: its rows, or whole candidate groups for
  ranking tasks (``Distributed.share``);
- scales its summed loss by ``world_size / units of the GLOBAL batch`` (the ``per_unit`` the
  model's loss takes); DDP averages gradients over the ranks, so the gradients are the
  single-process run's (up to float rounding). A rank whose
  share is empty still runs forward and backward (one row, loss * 0): the gradient all-reduce needs
  every rank;
- predicts every ``world_size``-th row of each evaluation split; the outputs are gathered, so every
  rank scores the whole split, each example once (``evaluation.predict(dist=...)``).

A single process (not launched by torchrun) takes none of these paths: ``share`` gives the whole
batch and no scale, so the model computes the batch's plain mean loss, and ``wrap`` returns the
module it is given. Only rank 0 writes the run directory (``is_main``). The process-group timeout (``dist_timeout``)
bounds how long a rank waits for a dead or stuck peer in any collective. See docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import socket
import sys
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     set_model_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.elastic.multiprocessing.errors import ErrorHandler
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

from ..errors import ConfigError
from ..kinds import get_kind
from ..model.weights import load_model_weights
from ..run_dir import load_weights
from ..runtime import pick_device

log = logging.getLogger(__name__)


def launched() -> bool:
    """True in a process of a multi-process torchrun job (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def joined() -> bool:
    """This process is a rank of a multi-process torchrun job, so it joins (or has joined) the
    job's process group once the training code is imported: the CLI then ends it through
    ``leave()``."""
    return launched()


@dataclass
class Distributed:
    """Where this process stands in the job. ``world_size == 1``: a plain single-process run (every
    method is then a no-op or the identity)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    parallel: str = "ddp"
    owns_group: bool = False  # this object created the process group (and destroys it in close())

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self.enabled and self.parallel == "fsdp"

    # ------------------------------------------------------------------ setup / teardown
    @classmethod
    def from_config(cls, cfg) -> "Distributed":
        """Join torchrun's job when launched by it (NCCL on GPUs, gloo on CPU), else a single process."""
        device = pick_device(cfg.device)
        if not launched():
            if cfg.parallel == "fsdp":
                log.warning("--parallel fsdp: a single process, nothing to shard (launch with torchrun)")
            return cls(device=device, parallel=cfg.parallel)
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} "
                                  "GPU(s): start at most one process per GPU (--nproc-per-node)", field="device")
            torch.cuda.set_device(local_rank)
            device, backend = torch.device("cuda", local_rank), "nccl"
        else:
            backend = "gloo"
        owns = not dist.is_initialized()  # else: a script of the user's set it up
        if owns:
            dist.init_process_group(backend, timeout=timedelta(seconds=cfg.dist_timeout),
                                    device_id=device if device.type == "cuda" else None)
        if rank != 0:  # one copy of the log: rank 0's (warnings and errors from every rank)
            logging.getLogger("mtdnn").setLevel(logging.WARNING)
        ctx = cls(rank, world, local_rank, device, cfg.parallel, owns)
        log.info("distributed: %d processes (%s, %s), rank 0 on %s, process-group timeout %d s",
                 world, backend, cfg.parallel.upper(), socket.gethostname(), cfg.dist_timeout)
        return ctx

    def close(self) -> None:
        """End of a successful run: wait for every rank, then leave the process group."""
        if self.enabled and dist.is_initialized():
            self.barrier()
            if self.owns_group:
                dist.destroy_process_group()

    # ------------------------------------------------------------------ model
    def wrap(self, objective: nn.Module, cfg) -> nn.Module:
        """The module the training step calls (``objective``: ``training.step.StepLoss``), made
        distributed. DDP: a replica per rank, gradients all-reduced. ``find_unused_parameters=True``:
        the heads of the tasks not in a step get no gradient; DDP leaves a globally unused parameter's
        grad untouched (None), so the optimiser skips it as in a single-process run.
        FSDP: every encoder layer and the rest of the model sharded over the ranks (``fully_shard``),
        bf16 parameters/compute with fp32 gradient reduction under ``--precision bf16``.
        A single process: ``objective`` itself."""
        model, trainer = objective.model, objective
        if not self.enabled:
            return objective
        if self.parallel == "fsdp":
            self._fully_shard(model, cfg)  # ranks start equal: same seed, same pretrained weights
        else:
            # DDP broadcasts rank 0's weights and buffers at init: every replica starts equal. The
            # buffers (position ids) never change: no need to sync them again before each forward
            buffers = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                       inspect.signature(DDP.__init__).parameters else {"broadcast_buffers": False})
            trainer = DDP(trainer, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                          find_unused_parameters=True, **buffers)
        torch.manual_seed(cfg.seed + 100_003 * self.rank)  # a different dropout stream on each rank
        return trainer

    def _fully_shard(self, model: nn.Module, cfg) -> None:
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if cfg.precision == "bf16" else MixedPrecisionPolicy())
        units = set(getattr(model.encoder, "_no_split_modules", None) or [])
        for m in list(model.encoder.modules()):
            if type(m).__name__ in units:
                fully_shard(m, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)  # the root: embeddings left over, all heads

    def no_sync(self, trainer: nn.Module, skip_sync: bool):
        """DDP: no gradient all-reduce on the non-final micro-steps of gradient accumulation.
        (FSDP reduce-scatters on every micro-step: it keeps the gradients sharded.)"""
        if skip_sync and hasattr(trainer, "no_sync"):
            return trainer.no_sync()
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ data
    def shard(self, indices: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of a global batch: consecutive units (rows, or the rows of
        one candidate group for ranking tasks); shares differ by at most one unit and may be empty."""
        if not self.enabled or len(indices) == 0:
            return indices
        g = groups[indices]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        bounds = np.r_[starts, len(indices)]
        n = len(starts)
        lo, hi = self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size
        return indices[bounds[lo]:bounds[hi]]

    def share(self, split, indices: np.ndarray, task_type: str) -> tuple[np.ndarray, float | None]:
        """(rows this rank computes, ``per_unit`` for their summed loss). ``per_unit`` is
        ``world_size / units of the global batch``: averaged over the ranks by DDP, the gradients are
        those of the global batch's mean loss. An empty share gives one row and 0. A single process:
        the whole batch and None (the model's loss is the batch's mean)."""
        if not self.enabled:
            return indices, None
        units = get_kind(task_type).loss_units(torch.from_numpy(split.labels[indices]),
                                              torch.from_numpy(split.groups[indices]))
        rows = self.shard(indices, split.groups)
        if len(rows) == 0:
            return indices[:1], 0.0
        return rows, self.world_size / max(units, 1)

    # ------------------------------------------------------------------ collectives
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def global_loss(self, loss: torch.Tensor) -> float:
        """The global batch's mean loss from this rank's scaled loss (``loss / world_size`` summed over
        the ranks: one all-reduce of a scalar). Not finite if any rank's loss is not, so every rank
        takes the same stop/skip decision."""
        value = loss.detach().float().reshape(1)
        if not self.enabled:
            return float(value.item())
        value = value / self.world_size
        dist.all_reduce(value)
        return float(value.item())

    def after_skipped_forward(self, loss: torch.Tensor) -> bool:
        """A batch is skipped (non-finite loss, on every rank alike). DDP's forward expects a backward
        (its gradient reduction waits for it): run one that adds nothing. Gradients may still pick up
        NaN where activations are not finite, so the caller drops the accumulation window's
        gradients (True). FSDP and single processes need neither (False)."""
        if not self.enabled or self.fsdp:
            return False
        (loss.nan_to_num(0.0, 0.0, 0.0) * 0.0).backward()
        return True

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    # ------------------------------------------------------------------ weights
    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's weights for saving, on rank 0. FSDP gathers them (a collective: every
        rank calls it); other ranks get ``{}``."""
        if self.fsdp:
            return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return model.state_dict() if self.is_main else {}

    def load_weights(self, model: nn.Module, path: Path) -> None:
        """Load a checkpoint written by rank 0: rank 0 reads it and broadcasts it, so the other
        ranks (other nodes) need no shared file system."""
        if not self.enabled:
            load_model_weights(model, path)
            return
        state = load_weights(path) if self.is_main else {}
        if self.fsdp:  # FSDP leaves the root's parameters unsharded after a forward (an evaluation):
            model.reshard()  # loading needs them as the sharded DTensors again
        set_model_state_dict(model, state, options=StateDictOptions(
            full_state_dict=True, broadcast_from_rank0=True, strict=True))

    def replica_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """This rank's full weights (FSDP: gathered on every rank, a collective)."""
        if self.fsdp:
            return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        return model.state_dict()


def report_crash(exc: BaseException) -> int:
    """An uncaught exception in a rank: print it with the rank, record it for torchrun's summary
    (its error file), and return the exit code 1."""
    rank = os.environ.get("RANK", "?")
    print(f"mtdnn: error on rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    with contextlib.suppress(Exception):
        ErrorHandler().record_exception(exc)
    return 1


def leave(rc: int) -> NoReturn:
    """End a process that joined a process group, with ``rc``, through ``os._exit``.

    Why: with gloo, about 1 run in 10 on a 2-core VM died at interpreter exit with SIGABRT
    ("terminate called without an active exception") after all work, ``barrier()`` and
    ``destroy_process_group()`` were done, from a C++ thread destroyed during interpreter teardown;
    torchrun then reports the whole job as failed. By this point every file is written (rank 0's
    writes are atomic and fsynced, the TensorBoard writer closed) and every rank has passed the final
    barrier, so there is nothing left for the interpreter's teardown to do: flush what remains and
    leave without it. The same holds after an error (exit code non-zero): no teardown that could
    block on a dead peer."""
    with contextlib.suppress(Exception):
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(rc)
