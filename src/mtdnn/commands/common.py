"""What several commands share: the help formatter, the metrics table, the report of a finished
training, the flags that choose an exported run's epochs. Imports no command."""

from __future__ import annotations

import argparse
import json
import os
import textwrap
import time

from ..config import TrainConfig
from ..metrics import glue_average
from ..model.adapters import print_parameters
from ..training.loop import train


class HelpFormatter(argparse.HelpFormatter):
    """Wraps help text at spaces only, so that flags and paths in it stay whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)


def print_metrics(metrics: dict[str, dict[str, dict[str, float]]]) -> None:
    """The metrics of every task and split, and their GLUE-style average."""
    print(f"{'task':<12} {'split':<16} metrics")
    firsts = {}
    for task, splits in metrics.items():
        for split, m in splits.items():
            firsts.setdefault(task, m["score"])
            vals = ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "score")
            print(f"{task:<12} {split:<16} {vals}")
    print(f"average of the tasks' scores (GLUE-style): {glue_average(firsts):.2f}")


def train_and_report(cfg: TrainConfig) -> int:
    """Train ``cfg``, then print the run directory, its metrics and (an adapter run) its parameters."""
    t0 = time.perf_counter()
    run_dir = train(cfg)
    if os.environ.get("RANK", "0") != "0":  # a torchrun job: rank 0 reports
        return 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"\nrun directory: {run_dir}  (wall time {time.perf_counter() - t0:.0f} s)")
    print_metrics(metrics)
    print_parameters(run_dir)  # adapter runs: trainable and stored parameters per task
    return 0


def add_epoch_flags(p: argparse.ArgumentParser) -> None:
    """``--epoch`` and ``--per-task-epochs``: which epoch's weights an export or a server uses."""
    p.add_argument("--epoch", type=int, default=None,
                   help="the epoch whose weights serve every task (default: the run's last epoch)")
    p.add_argument("--per-task-epochs", action="store_true",
                   help="each task keeps its own selected epoch (one encoder per distinct epoch)")
