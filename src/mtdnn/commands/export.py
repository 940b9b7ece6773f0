"""``mtdnn export RUN_DIR --format hf|onnx --output DIR``: a run as folders other tools load::

    mtdnn export RUN_DIR --format hf --output DIR [--task T] [--epoch N | --per-task-epochs]
    mtdnn export RUN_DIR --format onnx --output DIR [--quantize int8]

The work is in ``mtdnn/export/``."""

from __future__ import annotations

import argparse
from typing import Any

from ..export import export_run
from .common import add_epoch_flags


def add_parser(sub: Any) -> None:
    e = sub.add_parser("export", help="write a run as a Hugging Face folder or an ONNX graph")
    e.add_argument("run_dir", help="a run directory")
    e.add_argument("--format", choices=["hf", "onnx"], default="hf")
    e.add_argument("--output", required=True, help="the folder to write (replaced if an earlier export)")
    e.add_argument("--task", default=None, help="hf only: one task as a standard folder (no custom code): "
                   "sequence classification, token classification (tagging) or question answering (span)")
    e.add_argument("--quantize", choices=["int8"], default=None, help="onnx only: also write model.int8.onnx")
    add_epoch_flags(e)


def run(args: argparse.Namespace) -> int:
    for line in export_run(args.run_dir, args.output, fmt=args.format, task=args.task, epoch=args.epoch,
                           per_task_epochs=args.per_task_epochs, quantize=args.quantize):
        print(line)
    return 0
