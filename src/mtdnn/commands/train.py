"""``mtdnn train [--config run.yaml] [--tasks rte,mrpc,stsb] [--epochs 3] ...``: one flag per
TrainConfig field (``config_flags.py``); the training is ``training/loop.py``."""

from __future__ import annotations

import argparse
from typing import Any

from .common import HelpFormatter, train_and_report
from .config_flags import add_config_flags, config_from_args


def add_parser(sub: Any) -> None:
    t = sub.add_parser("train", help="train MT-DNN; flags override --config", config_fields=True,
                       formatter_class=HelpFormatter,
                       description="Train MT-DNN. Options come from the defaults, then a --config YAML "
                       "file (keys: the flag names with underscores), then the flags given. The paper's "
                       "exact settings: --config configs/paper.yaml.")
    t.add_argument("--config", metavar="YAML", help="YAML file of options (the names of the flags, with "
                   "underscores: max_seq_len: 256); flags given override its values")
    add_config_flags(t)


def run(args: argparse.Namespace) -> int:
    return train_and_report(config_from_args(args))
