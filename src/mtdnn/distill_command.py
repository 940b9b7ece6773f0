"""The ``mtdnn distill`` and ``mtdnn shrink-encoder`` commands (registered by ``mtdnn.cli``)::

    mtdnn distill --teachers runs/t1,runs/t2,runs/t3 --tasks rte,mrpc,stsb --output-dir runs/student
    mtdnn shrink-encoder --layers 0,2,4 --output encoders/minilm-l3 [--encoder default]

``distill`` is ``mtdnn train`` with ``--teachers`` required: it takes every flag of ``train``
(``--kd-alpha``, ``--kd-temperature``, ``--encoder`` for a smaller student, ...). See
``training/distill.py`` and ``model/shrink.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from .errors import ConfigError


def add_distill_parsers(sub: Any) -> None:
    """The ``distill`` and ``shrink-encoder`` subcommands, on ``mtdnn``'s subparsers."""
    from .cli import _HelpFormatter, add_config_flags

    d = sub.add_parser("distill", help="train a student on the averaged soft targets of teacher runs "
                       "(mtdnn train with --teachers)", config_fields=True, formatter_class=_HelpFormatter,
                       description="Knowledge distillation: mtdnn train with --teachers RUN_A,RUN_B,... "
                       "required; the loss is kd_alpha * KD + (1 - kd_alpha) * gold.")
    d.add_argument("--config", metavar="YAML", help="YAML file of options, as for mtdnn train")
    add_config_flags(d)
    s = sub.add_parser("shrink-encoder", help="save an encoder with only some of its layers (a smaller student)")
    s.add_argument("--encoder", default="default", help="encoder name or folder (default: the embedded MiniLM)")
    s.add_argument("--layers", required=True, help="0-based layers to keep, comma-separated (e.g. 0,2,4)")
    s.add_argument("--output", required=True, help="folder to write the smaller encoder to")


def run_command(args: argparse.Namespace) -> int:
    if args.command == "shrink-encoder":
        from .model.shrink import parse_layers, shrink_encoder

        out = shrink_encoder(args.encoder, parse_layers(args.layers), args.output)
        print(f"wrote {out}")
        return 0
    from .cli import _print_metrics, config_from_args
    from .training.loop import train

    cfg = config_from_args(args)
    if not cfg.teachers:
        raise ConfigError("mtdnn distill needs --teachers RUN_A,RUN_B,... (finished runs)", field="teachers")
    t0 = time.perf_counter()
    run_dir = train(cfg)
    if os.environ.get("RANK", "0") != "0":  # a torchrun job: rank 0 reports
        return 0
    print(f"\nrun directory: {run_dir}  (wall time {time.perf_counter() - t0:.0f} s)")
    _print_metrics(json.loads((run_dir / "metrics.json").read_text()))
    return 0
