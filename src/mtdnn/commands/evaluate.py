"""``mtdnn evaluate RUN_DIR [--tasks ...] [--reports DIR]``: a saved run (or an export) on its
tasks' dev/test splits (``api.py``: ``Run.evaluation``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..api import load_run
from ..reports import write_report
from ..run_dir import write_json
from .common import print_metrics


def add_parser(sub: Any) -> None:
    e = sub.add_parser("evaluate", help="evaluate a saved run on its tasks' dev/test splits")
    e.add_argument("run_dir", help="a run directory, or a folder written by mtdnn export --format hf")
    e.add_argument("--tasks", default=None, help="comma-separated subset of the run's tasks")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--max-eval-examples", type=int, default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--output", default=None, help="also write the metrics as JSON here")
    e.add_argument("--reports", default=None, metavar="DIR",
                   help="also write the per-class reports of the tasks that predict classes here "
                        "(<task>.<split>.json, and the confusion-matrix PNG of each task's selection split), "
                        "as a finished run's reports/")


def run(args: argparse.Namespace) -> int:
    run_ = load_run(args.run_dir, device=args.device)
    tasks = [t for t in args.tasks.split(",") if t] if args.tasks else None
    result = run_.evaluation(tasks, data_dir=args.data_dir, batch_size=args.batch_size,
                             max_eval_examples=args.max_eval_examples)
    print_metrics(result.metrics)
    if args.output:
        write_json(args.output, result.metrics)
    if args.reports:
        for name, splits in result.reports.items():
            task = run_.task(name)
            for split, report in splits.items():
                write_report(Path(args.reports), task, split, report, with_plot=split == task.selection_split)
        print(f"per-class reports of {', '.join(result.reports) or 'no task'} in {args.reports}")
    return 0
