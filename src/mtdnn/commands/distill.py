"""``mtdnn distill --teachers runs/t1,runs/t2 --tasks rte,mrpc,stsb --output-dir runs/student``:
``mtdnn train`` with ``--teachers`` required. It takes every flag of ``train`` (``--kd-alpha``,
``--kd-temperature``, ``--encoder`` for a smaller student, ...); see ``training/methods/distill.py``."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from .common import HelpFormatter, train_and_report
from .config_flags import add_config_flags, config_from_args


def add_parser(sub: Any) -> None:
    d = sub.add_parser("distill", help="train a student on the averaged soft targets of teacher runs "
                       "(mtdnn train with --teachers)", config_fields=True, formatter_class=HelpFormatter,
                       description="Knowledge distillation: mtdnn train with --teachers RUN_A,RUN_B,... "
                       "required; the loss is kd_alpha * KD + (1 - kd_alpha) * gold.")
    d.add_argument("--config", metavar="YAML", help="YAML file of options, as for mtdnn train")
    add_config_flags(d)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if not cfg.teachers:
        raise ConfigError("mtdnn distill needs --teachers RUN_A,RUN_B,... (finished runs)", field="teachers")
    return train_and_report(cfg)
