"""Unexpected exceptions (bugs, not ``MtdnnError``): what they leave behind.

An unexpected exception in training, evaluation or any other command ends with

- the full traceback written to a log file: ``RUN_DIR/error.log`` for ``mtdnn train`` (rank R of a
  torchrun job: ``RUN_DIR/error-rank<R>.log``), ``RUN_DIR/error-<command>.log`` for a command on a
  saved run (``evaluate``, ``predict``), else a file in the system's temporary folder;
- one line on stderr that says what failed and names that file, and exit code 1;
- for training, a run directory that is incomplete (no ``metrics.json``, or a resumable state left)
  and says so (``RunDir.incomplete_reason``): ``mtdnn train --resume RUN_DIR`` continues it from its
  last checkpoint.

Under torchrun the original exception is re-raised after its log is written, so the CLI reports it
through ``training.distributed.report_crash`` as before.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import MtdnnError
from .run_dir import RunDir
from .training.distributed import launched

TRAIN_LOG = "error.log"


class RunFailed(MtdnnError):
    """A command stopped by an unexpected exception; its traceback is in ``log_path``. The CLI
    prints the message (one line) and exits with ``exit_code``."""

    exit_code = 1

    def __init__(self, message: str, log_path: Path) -> None:
        super().__init__(message)
        self.log_path = log_path


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _versions() -> str:
    parts = [f"python {platform.python_version()}"]
    for name in ("mtdnn", "torch", "transformers", "datasets"):
        module = sys.modules.get(name)
        if module is not None:
            parts.append(f"{name} {getattr(module, '__version__', '?')}")
    return ", ".join(parts) + f" ({platform.platform()})"


def write_traceback(exc: BaseException, path: Path, what: str) -> Path:
    """Write the exception's full traceback, with the command line, the time and the versions, to
    ``path`` (its folder is created); where that cannot be written, to a file in the temporary
    folder. Returns the file written."""
    text = (f"{what}\n"
            f"time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
            f"command: {' '.join(sys.argv)}\n"
            f"working directory: {os.getcwd()}\n"
            f"versions: {_versions()}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path
    except OSError:
        fallback = temporary_log_path("error")
        fallback.write_text(text, encoding="utf-8")
        return fallback


def temporary_log_path(command: str) -> Path:
    """A new log file name in the temporary folder, for failures outside a run directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / f"mtdnn-{command}-{stamp}-{os.getpid()}.log"


@dataclass
class TrainingProgress:
    """Where a training run is, for the failure message: ``state`` is the loop's ``LoopState``
    once the run is open (None while it is being set up)."""

    epochs: int
    state: Any = None

    def describe(self) -> str:
        s = self.state
        if s is None:
            return "while setting up the run"
        if s.epoch > self.epochs:
            return "while writing the results of the run"
        if s.batches_per_epoch and s.batch >= s.batches_per_epoch:
            return f"while evaluating or saving epoch {s.epoch}"
        return f"in epoch {s.epoch} at batch {s.batch + 1}"


@contextmanager
def recorded_training_failures(run_path: Path, progress: TrainingProgress) -> Iterator[None]:
    """Around a training run: an unexpected exception is written to ``run_path/error.log`` and
    raised as ``RunFailed`` (under torchrun: written to ``error-rank<R>.log`` and re-raised as it
    is). ``MtdnnError`` and ``KeyboardInterrupt`` pass unchanged. The run's ``training.json`` is
    removed however training ends in this process."""
    try:
        yield
    except MtdnnError:
        raise
    except Exception as exc:
        where = progress.describe()
        if launched():
            write_traceback(exc, run_path / f"error-rank{os.environ.get('RANK', '0')}.log", f"training stopped {where}")
            raise
        log = write_traceback(exc, run_path / TRAIN_LOG, f"training stopped {where}")
        after = ("nothing was trained yet: run the command again once the cause is fixed"
                 if progress.state is None else
                 f"the run is incomplete: continue it with `mtdnn train --resume {run_path}`")
        raise RunFailed(f"training stopped {where} by an unexpected {first_line(exc)}; the full traceback "
                        f"is in {log}; {after}", log) from exc
    finally:  # however training ended in this process, it no longer trains the run
        RunDir(run_path).release_training()


def report_unexpected(exc: BaseException, command: str, run_dir: str | None) -> RunFailed:
    """An unexpected exception of a CLI command (outside ``recorded_training_failures``): its
    traceback is written to ``RUN_DIR/error-<command>.log`` when the command works on an existing
    run directory, else to the temporary folder. Returns the error the CLI prints."""
    slug = "-".join(command.split())
    if run_dir is not None and Path(run_dir).is_dir():
        path = Path(run_dir) / f"error-{slug}.log"
    else:
        path = temporary_log_path(slug)
    log = write_traceback(exc, path, f"mtdnn {command} failed")
    return RunFailed(f"mtdnn {command} failed with an unexpected {first_line(exc)}; the full traceback is in "
                     f"{log}", log)
