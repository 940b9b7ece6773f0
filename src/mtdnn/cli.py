"""``mtdnn``: the entry point. Each subcommand is a module of ``mtdnn/commands/`` with the same two
functions, ``add_parser(subparsers)`` and ``run(args)``; ``COMMANDS`` is their table::

    mtdnn tasks [init FILE|HF_DATASET | check my_task.yaml]
    mtdnn train [--config run.yaml] [--tasks rte,mrpc,stsb] [--epochs 3] ...
    mtdnn evaluate RUN_DIR [--tasks ...] [--reports DIR]
    mtdnn predict RUN_DIR --task rte --input pairs.tsv --output predictions.tsv
    mtdnn affinity --target rte --candidates mrpc,stsb [--recommend 1]
    mtdnn distill --teachers RUN_A,RUN_B --tasks rte,mrpc --output-dir runs/student
    mtdnn shrink-encoder --layers 0,2,4 --output encoders/minilm-l3
    mtdnn export RUN_DIR --format hf|onnx --output DIR
    mtdnn serve RUN_DIR|EXPORT_DIR [--port 8000]

A bad flag is one line on stderr and exit code 2; an error of the work (:class:`MtdnnError`) one
line and its exit code; an unexpected exception one line naming its log file (``failures.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from types import ModuleType
from typing import Any, NoReturn, Sequence

import transformers

from .commands import affinity, distill, evaluate, export, predict, serve, shrink_encoder, tasks, train
from .config import TrainConfig
from .errors import ConfigError, MtdnnError
from .failures import report_unexpected

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


# the subcommands, in the order `mtdnn --help` lists them
COMMANDS: dict[str, ModuleType] = {"tasks": tasks, "train": train, "evaluate": evaluate, "predict": predict,
                                   "affinity": affinity, "distill": distill, "shrink-encoder": shrink_encoder,
                                   "export": export, "serve": serve}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mtdnn", description="Multi-task fine-tuning of Transformer encoders (MT-DNN).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return p


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
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    try:
        rc = COMMANDS[args.command].run(args)
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
    command = " ".join(str(x) for x in (args.command, getattr(args, "tasks_command", None)) if x)
    err = report_unexpected(exc, command, getattr(args, "run_dir", None))
    _print_error(err)
    if args.verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return err.exit_code


def _distributed_job():
    """The distributed module, if this process joined a torchrun job's process group."""
    mod = sys.modules.get("mtdnn.training.distributed")
    return mod if mod is not None and mod.joined() else None


if __name__ == "__main__":
    sys.exit(main())
