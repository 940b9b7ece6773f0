"""Fault injection, FOR TESTS ONLY: crash, hang or dump a training run at a known point.

Production code reaches this module through one environment hook, ``MTDNN_TEST_FAULTS``: when it
is unset (always, outside the test suite), ``Faults.from_environment()`` returns ``None`` and the
training loop calls nothing here. The value is a comma-separated list of ``key=value``:

``kill_at_step=N``
    the process kills itself with SIGKILL right after optimiser step N (after that step's
    checkpoint, if any): the kill -9 and resume test.
``fail_rank=R`` (with ``fail_batch=B``, default 2, and ``fail_mode=raise|exit|hang``, default raise)
    rank R of a torchrun job fails at batch B of epoch 1: raises, dies at once without any clean-up
    (``os._exit(17)``), or hangs: the distributed failure tests.
``dump_dir=D``
    every rank saves its weights to ``D/rank<R>-epoch<E>.safetensors`` after each epoch: the test
    that the ranks of a DDP run stay equal.

A malformed value is a one-line ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from .errors import ConfigError

ENV = "MTDNN_TEST_FAULTS"
FAIL_MODES = ("raise", "exit", "hang")


@dataclass(frozen=True)
class Faults:
    kill_at_step: int | None = None
    fail_rank: int | None = None
    fail_batch: int = 2
    fail_mode: str = "raise"
    dump_dir: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "Faults":
        kinds = {f.name: f for f in fields(cls)}
        values: dict[str, object] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in kinds:
                raise ConfigError(f"bad item '{item}' (known: {', '.join(kinds)})", field=ENV)
            if key in ("kill_at_step", "fail_rank", "fail_batch"):
                if not value.strip().isdigit():
                    raise ConfigError(f"{key} needs a whole number, not '{value}'", field=ENV)
                values[key] = int(value)
            else:
                values[key] = value
        if values.get("fail_mode", "raise") not in FAIL_MODES:
            raise ConfigError(f"fail_mode must be one of {', '.join(FAIL_MODES)}", field=ENV)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_environment(cls) -> "Faults | None":
        spec = os.environ.get(ENV, "").strip()
        return cls.parse(spec) if spec else None

    def at_batch(self, rank: int, epoch: int, batch: int) -> None:
        """Before batch ``batch`` (0-based) of ``epoch`` on ``rank``."""
        if self.fail_rank != rank or epoch != 1 or batch != self.fail_batch:
            return
        if self.fail_mode == "exit":
            os._exit(17)
        if self.fail_mode == "hang":
            time.sleep(10**6)
        raise RuntimeError(f"{ENV}: simulated failure of rank {rank}")

    def after_step(self, update: int) -> None:
        """After optimiser step ``update`` (and its checkpoint)."""
        if self.kill_at_step is not None and update == self.kill_at_step:
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

    def after_epoch(self, rank: int, epoch: int, state_dict: Callable[[], dict[str, torch.Tensor]]) -> None:
        """After the evaluation of ``epoch``; ``state_dict()`` gives this rank's full weights (a
        collective under FSDP: every rank calls this)."""
        if not self.dump_dir:
            return
        state = state_dict()
        Path(self.dump_dir).mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                  str(Path(self.dump_dir) / f"rank{rank}-epoch{epoch}.safetensors"))
