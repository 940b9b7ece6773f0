"""``mtdnn tasks`` lists the tasks (built-in and those of ``--task-file``); ``mtdnn tasks init`` drafts
a task YAML from data (``tasks/wizard.py``), ``mtdnn tasks check`` checks a task file's data
(``tasks/check.py``)::

    mtdnn tasks
    mtdnn tasks init FILE|HF_DATASET [--name N] [--output my_task.yaml]
    mtdnn tasks check my_task.yaml [--data-dir DIR]
"""

from __future__ import annotations

import argparse
from typing import Any

from ..records import InitOptions
from ..tasks.check import check_task_file, format_report
from ..tasks.registry import TaskRegistry
from ..tasks.wizard import init_task


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_parser(sub: Any) -> None:
    tp = sub.add_parser("tasks", help="list the built-in tasks (and those of --task-file); `tasks init` drafts "
                        "a task YAML from data, `tasks check` checks a task file's data")
    tp.add_argument("--task-file", default=None, help="comma-separated YAML files with your own tasks")
    # optional: without init or check, it lists the tasks
    tasks_sub = tp.add_subparsers(dest="tasks_command", metavar="{init,check}")
    _add_init(tasks_sub)
    _add_check(tasks_sub)


def _add_init(sub: Any) -> None:
    i = sub.add_parser("init", help="draft a task YAML from a data file or a datasets dataset",
                       description="Read a CSV/TSV/JSONL/parquet file (and its dev/test files beside it), a "
                       "CoNLL-style column file or JSON lines of words and tags (tagging), a SQuAD JSON file "
                       "(span), or a dataset datasets.load_dataset loads, guess the task, and write a "
                       "commented YAML draft that mtdnn train --task-file accepts.")
    i.add_argument("source", metavar="FILE|HF_DATASET", help="the training file, or a dataset name or folder")
    i.add_argument("--name", default=None, help="the task's name (default: from the file name)")
    i.add_argument("--output", default=None, help="the YAML file to write (default: NAME.yaml)")
    i.add_argument("--text", type=_names, default=None, metavar="A[,B]", help="the text column(s)")
    i.add_argument("--label", default=None, metavar="COLUMN", help="the label column (tagging: the tag column, or C,C,... to draft a task per tag column; "
                   "span: the answer text column)")
    i.add_argument("--id", default=None, metavar="COLUMN", help="the id column")
    i.add_argument("--group", default=None, metavar="COLUMN",
                   help="the column of candidate groups: makes a ranking task")
    i.add_argument("--dev", default=None, metavar="FILE", help="the dev file (default: found beside FILE)")
    i.add_argument("--test", default=None, metavar="FILE", help="the test file (default: found beside FILE)")
    i.add_argument("--label-names", type=_names, default=None, metavar="A,B,...",
                   help="names of integer labels, in numeric order (written as a label_map)")
    i.add_argument("--no-header", dest="header", action="store_false",
                   help="CSV/TSV files without a header line (columns are 0-based indices)")
    i.add_argument("--type", default=None, choices=["classification", "regression", "ranking", "tagging", "span"],
                   help="the task type (default: guessed from the file's shape and the labels; ranking: candidates "
                   "grouped by --group, else by their question)")
    i.add_argument("--dataset-config", default=None, metavar="NAME", help="the datasets configuration name")
    i.add_argument("--force", action="store_true", help="replace the output file if it exists")


def _add_check(sub: Any) -> None:
    c = sub.add_parser("check", help="read every split of a task file and report what training would meet",
                       description="Rows, dropped rows, labels, ranking groups, token lengths, duplicates and "
                       "train/dev overlap of every split; exit 1 on what would make training fail.")
    c.add_argument("task_file", metavar="TASK_FILE")
    c.add_argument("--data-dir", default=None, help="root of relative paths not found beside the task file "
                   "(default: $MTDNN_DATA_DIR, else ./data)")
    c.add_argument("--encoder", default="default", help="the encoder whose tokenizer counts tokens")
    c.add_argument("--max-seq-len", type=int, default=128, help="the training max length (default: 128)")
    c.add_argument("--tasks", type=_names, default=None, metavar="A,B", help="only these tasks of the file")
    c.add_argument("--hub", dest="allow_hub", action=argparse.BooleanOptionalAction, default=True,
                   help="load splits with a hub source from the Hugging Face hub when their file is missing")


def run(args: argparse.Namespace) -> int:
    if args.tasks_command == "init":
        return _init(args)
    if args.tasks_command == "check":
        return _check(args)
    return _list(args)


def _list(args: argparse.Namespace) -> int:
    reg = TaskRegistry([f for f in (args.task_file or "").split(",") if f])
    for name in reg.names():
        t = reg.get(name)
        desc = t.description.split(": ", 1)[-1].split(";")[0].split(". ")[0]
        print(f"{name:<10} {t.type:<14} {t.input:<7} head={t.head.kind:<6} {reg.origin(name):<9} {desc}")
    return 0


def _init(args: argparse.Namespace) -> int:
    opts = InitOptions(source=args.source, name=args.name, output=args.output, text=args.text, label=args.label,
                       id=args.id, group=args.group, dev=args.dev, test=args.test, label_names=args.label_names,
                       header=args.header, dataset_config=args.dataset_config, force=args.force,
                       type=args.type)
    out, draft, sources = init_task(opts)
    if draft.summary:
        print(f"wrote {out}: {draft.summary}")
        print(f"next: mtdnn tasks check {out}")
        print(f"      mtdnn train --task-file {out} --tasks {draft.name}")
        return 0
    labels = f", labels {', '.join(draft.labels)}" if draft.labels else ""
    splits = ", ".join(f"{s.split} ({len(s.rows)} rows)" for s in sources)
    print(f"wrote {out}: task {draft.name}, {draft.type}, input {draft.input}{labels}; splits {splits}")
    print(f"next: mtdnn tasks check {out}")
    print(f"      mtdnn train --task-file {out} --tasks {draft.name}")
    return 0


def _check(args: argparse.Namespace) -> int:
    report = check_task_file(args.task_file, data_dir=args.data_dir, encoder=args.encoder,
                             max_seq_len=args.max_seq_len, allow_hub=args.allow_hub, tasks=args.tasks)
    print(format_report(report))
    return 0 if report.ok else 1
