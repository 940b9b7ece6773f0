"""``mtdnn``: argument parsing only; the work is done by the modules it calls.

    mtdnn tasks
    mtdnn tasks init FILE|HF_DATASET [--name N] [--output my_task.yaml]
    mtdnn tasks check my_task.yaml [--data-dir DIR]
    mtdnn train [--config run.yaml] [--tasks rte,mrpc,stsb] [--epochs 3] ...
    mtdnn evaluate RUN_DIR [--tasks ...] [--reports DIR]
    mtdnn predict RUN_DIR --task rte --input pairs.tsv --output predictions.tsv
    mtdnn distill --teachers RUN_A,RUN_B --tasks rte,mrpc --output-dir runs/student
    mtdnn shrink-encoder --layers 0,2,4 --output encoders/minilm-l3

The flags of ``mtdnn train`` are generated from :class:`mtdnn.config.TrainConfig`: one flag per
field (``max_seq_len`` -> ``--max-seq-len``), typed by its annotation, helped by its description,
with its default shown. A flag that is not given is ``None`` in the parsed arguments, so a value
of the ``--config`` file stays. A bad flag is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
import types
from pathlib import Path
from typing import Any, Literal, NoReturn, Sequence, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from .config import TrainConfig, load_config_file, make_config, resume_values
from .errors import ConfigError, MtdnnError
from .tasks.commands import add_task_commands, run_task_command

log = logging.getLogger("mtdnn")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are a one-line :class:`ConfigError` (``main`` prints it).
    With ``config_fields``, an error about a flag names its TrainConfig field."""

    def __init__(self, *args: Any, config_fields: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_fields = config_fields

    def error(self, message: str) -> NoReturn:
        head, sep, rest = message.partition(": ")
        flag = head.removeprefix("argument ").split("/")[0]
        field = flag.lstrip("-").replace("-", "_")
        if self.config_fields and sep and head.startswith("argument --") and field in TrainConfig.model_fields:
            raise ConfigError(f"{flag}: {rest} (see `{self.prog} --help`)", path="command line", field=field)
        raise ConfigError(f"{message} (see `{self.prog} --help`)", path="command line")


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps help text at spaces only, so that flags and paths in it stay whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)


def _task_sizes(text: str) -> dict[str, int]:
    """``rte=1000,stsb=500`` -> ``{"rte": 1000, "stsb": 500}`` (argparse type of a dict[str, int])."""
    sizes: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        task, eq, number = (x.strip() for x in item.partition("="))
        size: int | None
        try:
            size = int(number)
        except ValueError:
            size = None
        if not eq or not task or size is None:
            raise argparse.ArgumentTypeError(f"expected task=N,task=N (e.g. rte=1000,stsb=500), got {item!r}")
        if task in sizes:
            raise argparse.ArgumentTypeError(f"task {task!r} is given twice")
        sizes[task] = size
    return sizes


def _task_weights(text: str) -> dict[str, float]:
    """``rte=2,sst2=0.5`` -> ``{"rte": 2.0, "sst2": 0.5}`` (argparse type of a dict[str, float])."""
    weights: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        task, eq, number = (x.strip() for x in item.partition("="))
        try:
            value = float(number)
        except ValueError:
            value = None
        if item and (not eq or not task or value is None):
            raise argparse.ArgumentTypeError(f"expected task=X,task=X (e.g. rte=2,sst2=0.5), got {item!r}")
        if item and task in weights:
            raise argparse.ArgumentTypeError(f"task {task!r} is given twice")
        if item:
            weights[task] = value
    return weights


def _without_none(annotation: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _flag_kind(name: str, annotation: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords that parse a field of this type (not the help)."""
    ann = _without_none(annotation)
    origin, args = get_origin(ann), get_args(ann)
    if ann is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"type": type(args[0]), "choices": list(args)}
    if origin is list and args == (str,):
        return {"type": str, "metavar": "A,B"}  # the field's validator splits the commas
    if origin is dict and args == (str, int):
        return {"type": _task_sizes, "metavar": "TASK=N,..."}
    if origin is dict and args == (str, float):
        return {"type": _task_weights, "metavar": "TASK=X,..."}
    if ann in (int, float, str):
        return {"type": ann, "metavar": {int: "N", float: "X", str: None}[ann]}
    raise TypeError(f"TrainConfig.{name}: no command-line form for type {annotation!r}")


def _default_text(info: FieldInfo) -> str | None:
    """The default as ``--help`` shows it; None for a required field or a None default (whose
    description says what unset means)."""
    if info.is_required():
        return None
    default = info.get_default(call_default_factory=True)
    if default is None:
        return None
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, dict):
        return ",".join(f"{k}={v}" for k, v in default.items()) or "none"
    if isinstance(default, list):
        return ",".join(map(str, default)) or "none"
    return str(default)


def _field_help(info: FieldInfo) -> str:
    """The field's description and its default: the help of its flag."""
    text = info.description or ""
    default = _default_text(info)
    if default is not None:
        text += f" (default: {default})"
    return text.replace("%", "%%")  # argparse %-formats help strings


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (plus its older spellings); not given: None."""
    for name, info in TrainConfig.model_fields.items():
        flags = [f"--{name.replace('_', '-')}", *TrainConfig.flag_aliases(name)]
        parser.add_argument(*flags, dest=name, default=None, help=_field_help(info),
                            **_flag_kind(name, info.annotation))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mtdnn", description="Multi-task fine-tuning of Transformer encoders (MT-DNN).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    tp = sub.add_parser("tasks", help="list the built-in tasks (and those of --task-file); `tasks init` drafts "
                        "a task YAML from data, `tasks check` checks a task file's data")
    tp.add_argument("--task-file", default=None, help="comma-separated YAML files with your own tasks")
    add_task_commands(tp)  # tasks init, tasks check (mtdnn/tasks/commands.py)

    t = sub.add_parser("train", help="train MT-DNN; flags override --config", config_fields=True,
                       formatter_class=_HelpFormatter,
                       description="Train MT-DNN. Options come from the defaults, then a --config YAML "
                       "file (keys: the flag names with underscores), then the flags given. The paper's "
                       "exact settings: --config configs/paper.yaml.")
    t.add_argument("--config", metavar="YAML", help="YAML file of options (the names of the flags, with "
                   "underscores: max_seq_len: 256); flags given override its values")
    add_config_flags(t)

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

    from .affinity import add_affinity_parser  # mtdnn affinity (mtdnn/affinity.py)
    add_affinity_parser(sub)
    from .distill_command import add_distill_parsers  # mtdnn distill, shrink-encoder (mtdnn/distill_command.py)
    add_distill_parsers(sub)
    from .deploy_cli import add_parsers as add_deploy_parsers  # mtdnn export, serve (mtdnn/deploy_cli.py)
    add_deploy_parsers(sub)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    file_values = load_config_file(args.config) if args.config else {}
    resume = getattr(args, "resume", None) or file_values.get("resume")
    if resume:  # the run's own config, then --config, then flags (train() rejects changed fields)
        file_values = {**resume_values(resume), **file_values, "resume": resume}
    fields = set(TrainConfig.model_fields)
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return make_config(file_values, overrides, source=args.config or "command line")


def _print_metrics(metrics: dict[str, dict[str, dict[str, float]]]) -> None:
    from .metrics import glue_average

    print(f"{'task':<12} {'split':<16} metrics")
    firsts = {}
    for task, splits in metrics.items():
        for split, m in splits.items():
            firsts.setdefault(task, m["score"])
            vals = ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "score")
            print(f"{task:<12} {split:<16} {vals}")
    print(f"average of the tasks' scores (GLUE-style): {glue_average(firsts):.2f}")


def _run(args: argparse.Namespace) -> int:
    if args.command in ("export", "serve"):
        from .deploy_cli import run as run_deploy
        return run_deploy(args)
    if args.command == "affinity":
        from .affinity import run_command
        return run_command(args)
    if args.command in ("distill", "shrink-encoder"):
        from .distill_command import run_command as run_distill_command
        return run_distill_command(args)
    if args.command == "tasks" and args.tasks_command:
        return run_task_command(args)
    if args.command == "tasks":
        from .tasks.registry import TaskRegistry
        reg = TaskRegistry([f for f in (args.task_file or "").split(",") if f])
        for name in reg.names():
            t = reg.get(name)
            desc = t.description.split(": ", 1)[-1].split(";")[0].split(". ")[0]
            print(f"{name:<10} {t.type:<14} {t.input:<7} head={t.head.kind:<6} {reg.origin(name):<9} {desc}")
        return 0
    if args.command == "train":
        from .training.loop import train
        import time
        cfg = config_from_args(args)
        t0 = time.perf_counter()
        run_dir = train(cfg)
        if os.environ.get("RANK", "0") != "0":  # a torchrun job: rank 0 reports
            return 0
        metrics = json.loads((run_dir / "metrics.json").read_text())
        print(f"\nrun directory: {run_dir}  (wall time {time.perf_counter() - t0:.0f} s)")
        _print_metrics(metrics)
        from .model.adapters import print_parameters
        print_parameters(run_dir)  # adapter runs: trainable and stored parameters per task
        return 0
    if args.command == "evaluate":
        from .api import load_run
        run = load_run(args.run_dir, device=args.device)
        tasks = [t for t in args.tasks.split(",") if t] if args.tasks else None
        result = run.evaluation(tasks, data_dir=args.data_dir, batch_size=args.batch_size,
                                max_eval_examples=args.max_eval_examples)
        _print_metrics(result.metrics)
        if args.output:
            from .run_dir import write_json
            write_json(args.output, result.metrics)
        if args.reports:
            from .reports import write_report
            for name, splits in result.reports.items():
                task = run.task(name)
                for split, report in splits.items():
                    write_report(Path(args.reports), task, split, report, with_plot=split == task.selection_split)
            print(f"per-class reports of {', '.join(result.reports) or 'no task'} in {args.reports}")
        return 0
    if args.command == "predict":
        from .api import load_run
        run = load_run(args.run_dir, device=args.device)
        n = run.predict_file(args.task, args.input, args.output, text_a=args.text_a, text_b=args.text_b,
                             id_column=args.id_column, batch_size=args.batch_size)
        print(f"wrote {n} predictions to {args.output}")
        return 0
    raise AssertionError(args.command)


def _print_error(err: MtdnnError) -> None:
    msg = " ".join(str(err).split())  # one line, whatever the message quotes from a file
    print(f"mtdnn: error: {msg if len(msg) <= 1000 else msg[:997] + '...'}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except MtdnnError as e:  # a bad flag (_Parser.error)
        _print_error(e)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:  # the dropped pooler is reported as "unexpected" weights on every load
        import transformers
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    try:
        rc = _run(args)
    except MtdnnError as e:
        _print_error(e)
        rc = getattr(e, "exit_code", 2)  # 2; 1 for failures.RunFailed (an unexpected exception)
    except KeyboardInterrupt:
        print("mtdnn: interrupted", file=sys.stderr)
        rc = 130
    except Exception as e:
        rc = _report_unexpected(e, args) if _distributed_job() is None else _distributed_job().report_crash(e)
    if _distributed_job() is not None:  # a torchrun process: leave through os._exit (see leave())
        _distributed_job().leave(rc)
    return rc


def _report_unexpected(exc: Exception, args: argparse.Namespace) -> int:
    """A bug: the traceback goes to a log file (``mtdnn/failures.py``), one line names it."""
    from .failures import report_unexpected

    command = " ".join(str(x) for x in (args.command, getattr(args, "tasks_command", None)) if x)
    err = report_unexpected(exc, command, getattr(args, "run_dir", None))
    _print_error(err)
    if args.verbose:
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return err.exit_code


def _distributed_job():
    """The distributed module, if this process joined a torchrun job's process group."""
    mod = sys.modules.get("mtdnn.training.distributed")
    return mod if mod is not None and mod.joined() else None


if __name__ == "__main__":
    sys.exit(main())
