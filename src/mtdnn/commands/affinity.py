"""``mtdnn affinity --target T --candidates A,B [--budget N] [--recommend K] ...``: which auxiliary
tasks help a target task (``mtdnn/affinity/``). Its own flags, then every ``mtdnn train`` option but
``--tasks``.

Output: a ranked table of the candidates' affinity onto the target on the terminal,
``affinity.json`` (the full task-by-task matrices), ``affinity.png`` (a heatmap; needs the
``plots`` extra) in ``--output-dir``; ``--recommend K`` prints the K best auxiliary tasks (those with
a positive affinity) and the ``mtdnn train`` command that uses them.
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path
from typing import Any

from ..affinity.heatmap import write_heatmap
from ..affinity.measure import ranking_table, recommend
from ..affinity.run import run_affinity
from ..config import TrainConfig
from ..errors import ConfigError
from ..run_dir import write_json
from .common import HelpFormatter
from .config_flags import add_config_flags, config_from_args


def add_parser(sub: Any) -> None:
    a = sub.add_parser("affinity", help="which auxiliary tasks help a target task (lookahead affinity)",
                       config_fields=True, formatter_class=HelpFormatter,
                       description="Estimate how much training on each candidate task helps the target: the "
                       "lookahead inter-task affinity of Fifty et al. 2021, averaged over a short multi-task "
                       "run of the target and the candidates (docs/interference.md). The training options are "
                       "those of `mtdnn train`.")
    a.add_argument("--target", required=True, help="the task to help")
    a.add_argument("--candidates", required=True, metavar="A,B", help="candidate auxiliary tasks, comma-separated")
    a.add_argument("--budget", type=int, default=200, metavar="N", help="optimiser steps of the short run (default: 200)")
    a.add_argument("--every", type=int, default=10, metavar="N", help="measure after every N-th step (default: 10)")
    a.add_argument("--lookahead-lr", type=float, default=1e-3, metavar="X",
                   help="learning rate of the lookahead SGD step (default: 0.001)")
    a.add_argument("--recommend", type=int, default=None, metavar="K",
                   help="print the K best auxiliary tasks and the mtdnn train command that uses them")
    a.add_argument("--config", metavar="YAML", help="YAML file of training options, as for mtdnn train")
    add_config_flags(a)


def _candidates(args: argparse.Namespace) -> list[str]:
    """The candidate tasks: at least one, each once, none the target."""
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    if not candidates:
        raise ConfigError("--candidates names no task", path="command line", field="candidates")
    if args.target in candidates:
        raise ConfigError(f"--candidates names the target '{args.target}': give the other tasks",
                          path="command line", field="candidates")
    twice = next((c for c in candidates if candidates.count(c) > 1), None)
    if twice is not None:
        raise ConfigError(f"--candidates names task '{twice}' twice", path="command line", field="candidates")
    return candidates


def affinity_config(args: argparse.Namespace) -> tuple[TrainConfig, str, list[str]]:
    """The training config of the affinity run (the target first, then the candidates)."""
    if getattr(args, "tasks", None):
        raise ConfigError("give the tasks as --target and --candidates", path="command line", field="tasks")
    candidates = _candidates(args)
    for flag, value in (("budget", args.budget), ("every", args.every), ("recommend", args.recommend or 1)):
        if value < 1:
            raise ConfigError(f"--{flag} must be at least 1", path="command line", field=flag)
    if not (args.lookahead_lr > 0 and math.isfinite(args.lookahead_lr)):
        raise ConfigError("--lookahead-lr must be a positive number", path="command line", field="lookahead_lr")
    args.tasks = ",".join([args.target, *candidates])
    args.output_dir = args.output_dir or f"runs/affinity-{args.target}"
    cfg = config_from_args(args)
    if cfg.mtl_method != "none" or cfg.resume or cfg.init_from:
        raise ConfigError("affinity measures a plain multi-task run: no --mtl-method, --resume or --init-from",
                          path="command line", field="mtl_method")
    return cfg.model_copy(update={"predict_test": False}), args.target, candidates


def train_command(target: str, auxiliaries: list[str], args: argparse.Namespace) -> str:
    """The ``mtdnn train`` command of the target with its recommended auxiliary tasks."""
    words = ["mtdnn", "train", "--tasks", ",".join([target, *auxiliaries])]
    for flag, value in (("--config", args.config), ("--task-files", args.task_files),
                        ("--data-dir", args.data_dir), ("--encoder", args.encoder)):
        if value:
            words += [flag, str(value)]
    words += ["--output-dir", f"runs/{target}-with-{'-'.join(auxiliaries) or 'none'}"]
    return " ".join(shlex.quote(w) for w in words)


def run(args: argparse.Namespace) -> int:
    """Measure, print the ranking, write the JSON and the heatmap."""
    cfg, target, _ = affinity_config(args)
    result = run_affinity(cfg, steps=args.budget, every=args.every, lookahead_lr=args.lookahead_lr)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "affinity.json", result.to_json(target) | {"config": cfg.model_dump(mode="json")})
    write_heatmap(result, out / "affinity.png", target)
    print(ranking_table(result, target))
    print(f"\nwrote {out / 'affinity.json'} and {out / 'affinity.png'}")
    if args.recommend is not None:
        best = recommend(result, target, args.recommend)
        note = "" if len(best) == args.recommend else f" (only {len(best)} with a positive affinity)"
        print(f"\nrecommended auxiliary tasks for {target}: {', '.join(best) or 'none'}{note}")
        print(train_command(target, best, args))
    return 0
