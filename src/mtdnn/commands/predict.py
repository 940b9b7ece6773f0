"""``mtdnn predict RUN_DIR --task rte --input pairs.tsv --output predictions.tsv``: a file's
predictions by a saved run or an export (``api.py``: ``Run.predict_file``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..api import load_run


def add_parser(sub: Any) -> None:
    r = sub.add_parser("predict", help="predict a file with a saved run")
    r.add_argument("run_dir", help="a run directory, or a folder written by mtdnn export --format hf")
    r.add_argument("--task", required=True)
    r.add_argument("--input", required=True, help="TSV (default), .csv or .jsonl file with a header")
    r.add_argument("--output", required=True, help="TSV: index, prediction[, p_label...]")
    r.add_argument("--text-a", default=None, help="column of the first text (default: the task's own)")
    r.add_argument("--text-b", default=None, help="column of the second text")
    r.add_argument("--id-column", default=None)
    r.add_argument("--batch-size", type=int, default=128)
    r.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    n = load_run(args.run_dir, device=args.device).predict_file(
        args.task, args.input, args.output, text_a=args.text_a, text_b=args.text_b, id_column=args.id_column,
        batch_size=args.batch_size)
    print(f"wrote {n} predictions to {args.output}")
    return 0
