"""The scaffolding the experiment runners of the ``experiments`` package share (run, interference,
adapters, smart_distill, defaults_check): a small toolkit for grids of cells, where a cell is one
run whose record is a JSON file written as soon as it finishes, so that a runner is resumable.

- records: where a cell's JSON lives and reading it back (``Records``), the common parts of a
  record (the machine, the package versions, the time, a run's metrics, history and config), and
  the statistics the summaries show (``spread``, ``mean_sd``, ``rounded_mean``);
- reuse: the runners' grids overlap (the multi-task model of run's setting is interference's
  ``methods/proportional`` and smart_distill's ``kd/teacher``): ``equal_finished_run`` finds a
  finished run of another runner that trained exactly what a cell would, on this machine, so that
  the cell takes it instead of training again (``Reusable``);
- continuing: a cell whose process was killed continues from the last state its run saved (the
  end of an epoch) when it is run again, by ``--resume``, which ends with the same weights; its
  record's wall time adds the earlier attempts' seconds up to that state (``train_cell``, the
  attempts in the run directory's ``cell_attempts.json``);
- claiming: several processes ("streams") share a grid by lock files, one per cell, holding
  ``{"pid", "host", "stream"}``; a lock left by a dead process of this machine is taken over
  (``claim``, ``alive``), and ``work`` runs the cells until none is left;
- the plan: one row per cell (state, a column of the runner's choice, estimated seconds) and the
  seconds left per column (``PlanRow``, ``PlanTable``, ``seconds_left``);
- checking: ``--cell CELL --check`` trains a recorded cell again and compares what it reproduces
  (``compare``: its metrics and the other values that depend on nothing but the training);
- the command line every runner has, ``python -m experiments.NAME --plan | --run [--stream S] |
  --cell CELL [--check] | --summarize``, built from the callables of one experiment (``Runner``,
  ``runner_of`` a runner module, ``main``, ``cli``), with the offline, logging and summary steps
  every runner takes.

What stays in a runner is what is specific to its experiment: its Cell (each has its own fields),
its cells, how to run one, how to estimate and summarise them. The settings they share (encoder,
budgets, task lists, where each runner keeps its records and runs) are experiments.settings.
Lock files are used by interference, whose ``--stream`` names the process; the other runners'
``--stream`` is a filter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, Protocol, TypeVar

from experiments.stats import mean_sd, rounded_mean, spread  # noqa: F401  (the runners' one statistics module)

OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


class NamedCell(Protocol):
    """What the toolkit needs of a runner's cell: its name (each runner has its own Cell)."""

    name: str


C = TypeVar("C", bound=NamedCell)


@dataclass
class TrainCell:
    """A cell that is one ``mtdnn.train`` run: its config, the cells whose weights it starts from
    (``needs``), what its tables read (``meta``) and whether other cells start from its weights
    (``keep``)."""

    name: str
    config: dict[str, Any]
    needs: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    keep: bool = False


# ----------------------------------------------------------------------------- records
def result_file(folder: Path, name: str) -> Path:
    """The JSON record of cell ``name`` in ``folder`` (``a/b+c/d`` -> ``a__b_plus_c__d.json``)."""
    return folder / (_stem(name) + ".json")


def _stem(name: str) -> str:
    return name.replace("/", "__").replace("+", "_plus_")


def read_record(path: Path) -> dict[str, Any] | None:
    """A recorded cell's JSON, or None when the cell has not finished."""
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass(frozen=True)
class Records:
    """A folder of cell records, one JSON file per cell (``result_file``)."""

    folder: Path

    def path(self, name: str) -> Path:
        return result_file(self.folder, name)

    def load(self, name: str) -> dict[str, Any] | None:
        """The record of cell ``name``, or None when the cell has not finished."""
        return read_record(self.path(name))

    def all(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """cell -> record of every recorded cell whose name starts with ``prefix``, in file order."""
        found = (json.loads(p.read_text()) for p in sorted(self.folder.glob(_stem(prefix) + "*.json")))
        return {r["cell"]: r for r in found}


def machine() -> str:
    """The machine a record was made on: CPU model, cores, torch version, CUDA or CPU."""
    import torch

    from mtdnn.runtime import cpu_model
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {'CUDA' if torch.cuda.is_available() else 'CPU'}"


def package_versions() -> dict[str, str | None]:
    """The versions of the packages that can move a record's rounding (mtdnn.runtime.ROUNDING_PACKAGES)."""
    from mtdnn.runtime import package_versions as versions
    return versions()


def say(message: str) -> None:
    """Print ``[HH:MM:SS] message`` at once (runners' progress lines)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_average() -> list[float]:
    """The machine's 1-, 5- and 15-minute load averages when a cell finishes: on two cores a value
    above 2 means its wall time was shared with other work."""
    return [round(x, 2) for x in os.getloadavg()]


def timestamp() -> str:
    """The local time a record is finished, as records hold it."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def fresh_run_dir(run_dir: Path) -> None:
    """Remove what an interrupted attempt left in ``run_dir``: the cell starts again."""
    if run_dir.exists():
        shutil.rmtree(run_dir)


@dataclass(frozen=True)
class Reusable:
    """A run another runner keeps (its weights and small files) and the JSON record it wrote for it."""

    run_dir: Path
    record: Path


def same_training(cfg: Any, run_dir: Path) -> str | None:
    """Why the run in ``run_dir`` did not train what TrainConfig ``cfg`` would (None when it did):
    the rule of ``--resume`` (``training.checkpoint.config_difference`` and ``tasks_difference``):
    every field but threads, paths and logging, and the resolved task definitions, must be equal."""
    from mtdnn.run_dir import RunDir
    from mtdnn.tasks.registry import TaskRegistry
    from mtdnn.training.checkpoint import config_difference, tasks_difference

    run = RunDir(run_dir)
    diff = config_difference(cfg, run.read_config())
    if diff is not None:
        name, mine, theirs = diff
        return f"{name}: {theirs!r} there, {mine!r} here"
    task = tasks_difference(TaskRegistry(cfg.task_files).resolve(cfg.tasks, cfg.pair_head), run)
    return None if task is None else f"task {task} is defined differently"


def equal_finished_run(cfg: Any, candidates: Sequence[Reusable]) -> Reusable | None:
    """The first candidate that finished (record, metrics.json and a kept epoch's weights), was made
    on this machine (the record's ``machine``: training is deterministic on one machine, not across
    processors) and trained what ``cfg`` would (``same_training``); None if there is none."""
    here = machine()
    for c in candidates:
        record = read_record(c.record)
        if (record is None or record.get("machine") != here or not (c.run_dir / "metrics.json").is_file()
                or (c.run_dir / "training.json").is_file()
                or not any((c.run_dir / "checkpoints").glob("epoch-*.safetensors"))):
            continue
        if same_training(cfg, c.run_dir) is None:
            return c
    return None


ATTEMPTS_FILE = "cell_attempts.json"  # in a cell's run directory: when each attempt at it started


def continuable(cfg: Any, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds an interrupted attempt at the training TrainConfig ``cfg`` asks for
    that ``--resume`` can continue: its resumable state is saved, no living process trains it, and it
    trains what ``cfg`` would (``same_training``, the rule of ``--resume``)."""
    from mtdnn.errors import MtdnnError
    from mtdnn.run_dir import RunDir

    run = RunDir(run_dir)
    if not run.resume_state_file.is_file() or run.training_now() is not None:
        return False
    try:
        return same_training(cfg, run_dir) is None
    except (MtdnnError, OSError, ValueError):  # a config.yaml or tasks.yaml the kill left unreadable
        return False


def _earlier_seconds(run_dir: Path, attempts: list[dict[str, Any]]) -> float:
    """The wall seconds the earlier attempts at a cell spent on what is kept: each from its start to
    the last resumable state it saved (the last attempt's is the state on disk); without a record of
    the attempts (a run an older runner left), the epochs' seconds in history.jsonl."""
    if not attempts:
        return sum(h.get("train_seconds", 0.0) + h.get("eval_seconds", 0.0) for h in read_history(run_dir))
    from mtdnn.run_dir import RunDir

    last = attempts[-1]
    if "useful_seconds" not in last:
        saved = RunDir(run_dir).resume_state_file.stat().st_mtime
        last["useful_seconds"] = round(max(0.0, saved - last["started"]), 1)
    return sum(a["useful_seconds"] for a in attempts)


def train_cell(cfg: Any, run_dir: Path) -> tuple[float, dict[str, Any]]:
    """Train TrainConfig ``cfg`` into ``run_dir`` (its ``output_dir``), continuing an attempt that was
    killed (``continuable``: ``--resume`` from its last saved state, which gives the same run) or
    else starting afresh (what an interrupted attempt left is removed). Returns the wall seconds of
    the training (the earlier attempts' up to their last saved state, plus this one's) and what the
    cell's record adds: ``resumed``, when it continued."""
    import mtdnn
    from mtdnn.run_dir import write_json

    attempts_file = run_dir / ATTEMPTS_FILE
    earlier: float | None = None
    if continuable(cfg, run_dir):
        attempts = json.loads(attempts_file.read_text()) if attempts_file.is_file() else []
        earlier = _earlier_seconds(run_dir, attempts)
        say(f"{run_dir}: continuing the attempt that was stopped ({earlier / 60:.1f} min of it kept)")
        cfg = cfg.model_copy(update={"resume": str(run_dir)})
    else:
        fresh_run_dir(run_dir)
        attempts = []
    attempts.append({"started": round(time.time(), 1)})
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(attempts_file, attempts)
    t0 = time.perf_counter()
    mtdnn.train(cfg)
    this = time.perf_counter() - t0
    if earlier is None:
        return this, {}
    return earlier + this, {"resumed": {"attempts": len(attempts), "earlier_seconds": round(earlier, 1),
                                        "this_attempt_seconds": round(this, 1)}}


def copy_run(source: Path, run_dir: Path) -> None:
    """Copy a finished run's directory to ``run_dir`` (replacing what is there), without its resume
    state; a run that names its own directory in config.yaml keeps the source's path there."""
    fresh_run_dir(run_dir)
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("resume", "training.json", ".locks", ATTEMPTS_FILE))


def train_or_take(cfg: Any, run_dir: Path, homes: Sequence[Reusable]) -> tuple[float, dict[str, Any]]:
    """Train TrainConfig ``cfg`` into ``run_dir`` (its ``output_dir``; ``train_cell``: an attempt
    that was killed continues), or copy the equal run one of ``homes`` keeps
    (``equal_finished_run``). Returns the wall seconds of the training (the kept run's, from its
    record, when taken) and what the cell's record adds: ``reused_from`` or ``resumed``."""
    found = equal_finished_run(cfg, homes)
    if found is None:
        return train_cell(cfg, run_dir)
    say(f"{run_dir}: the same run is kept in {found.run_dir}: taking it")
    copy_run(found.run_dir, run_dir)
    wall = float(read_record(found.record)["wall_seconds"])  # type: ignore[index]
    return wall, {"reused_from": {"run_dir": str(found.run_dir), "record": str(found.record)}}


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A finished run's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text())


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """A finished run's history.jsonl, one dict per evaluation."""
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def glue_score(record: dict[str, Any], task: str) -> float:
    """A task's score in a record (its first split: dev, MNLI dev_mismatched)."""
    return float(next(iter(record["metrics"][task].values()))["score"])


def config_record(cfg: Any) -> dict[str, Any]:
    """A TrainConfig as records hold it (without the machine-specific task file paths)."""
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k != "task_files"}


def threads_override(threads: int | None) -> dict[str, int]:
    """The config override for ``--threads`` (none when not given)."""
    return {"threads": threads} if threads else {}


def update_summary(path: Path, sections: dict[str, Any]) -> None:
    """Set one runner's sections of the shared summary JSON, keeping the others (and the order)."""
    from mtdnn.run_dir import write_json

    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(sections)
    write_json(path, summary)


def fill_markers(doc: Path, begin: str, end: str, text: str) -> None:
    """Replace what stands between the ``begin`` and ``end`` markers of ``doc`` by ``text``; a doc
    without both markers is left as it is."""
    content = doc.read_text() if doc.is_file() else ""
    if begin in content and end in content:
        doc.write_text(content.split(begin)[0] + begin + "\n" + text + "\n" + end + content.split(end)[1])


def publish(summary_file: Path, doc: Path, key: str, summary: dict[str, Any], text: str, begin: str, end: str) -> int:
    """A runner's ``--summarize`` output: its ``summary`` under ``key`` of ``summary_file`` (only
    once it has records: the file holds measurements only), ``text`` between its markers of
    ``doc``, and on the screen."""
    if summary["cells"]:
        update_summary(summary_file, {key: summary})
    fill_markers(doc, begin, end, text)
    print(text)
    return 0


def provenance_line(summary: dict[str, Any]) -> str:
    """The line under a runner's tables: how many runs, on which machines, with which code."""
    return f"{len(summary['cells'])} runs; machine: {'; '.join(summary['machines'])}; code: {', '.join(summary['code'])}."


# ----------------------------------------------------------------------------- claiming
def lock_file(locks: Path, result: Path) -> Path:
    """The lock of the cell whose record is ``result``: same stem, in ``locks``."""
    return locks / (result.stem + ".lock")


def claim(lock: Path, stream: str) -> bool:
    """Create ``lock`` for this process (stream ``stream``); a lock of a dead process of this
    machine is taken over. False when a living process (or another machine) holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if alive(lock):
                return False
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "stream": stream}, f)
        return True
    return False


def alive(lock: Path) -> bool:
    """Whether the owner of ``lock`` may still run: True unless it is a process of this machine
    that no longer exists (a lock being written, or of another machine, counts as alive)."""
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return True  # being written: leave it
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class ClaimedGrid(Generic[C]):
    """A grid that streams share by lock files: what ``work`` needs of a runner."""

    cells: Callable[[], list[C]]  # every cell, in run order; asked again each round (cells may depend on results)
    done: Callable[[str], bool]   # the cell of this name has its record
    ready: Callable[[C], bool]    # the cell can start now (what it waits for is recorded)
    lock: Callable[[str], Path]   # the lock file of the cell of this name
    locks: Path                   # the folder of the lock files
    run: Callable[[C], None]      # run the cell and write its record


def work(grid: ClaimedGrid[C], stream: str, only: str, poll: float = 60.0) -> int:
    """Run cells until none is left: the first ready one no other stream holds; wait while the
    rest wait for cells other streams are running. 1 when the cells left can never start."""
    while True:
        todo = [c for c in grid.cells() if c.name.startswith(only) and not grid.done(c.name)]
        if not todo:
            return 0
        ready = [c for c in todo if grid.ready(c)]
        chosen = next((c for c in ready if claim(grid.lock(c.name), stream)), None)
        if chosen is None:
            if not any(alive(p) for p in grid.locks.glob("*.lock")):
                print("nothing runnable: the cells left wait for cells outside --only", flush=True)
                return 1
            time.sleep(poll)
            continue
        try:
            if not grid.done(chosen.name):  # another stream may have finished it since the listing
                grid.run(chosen)
        finally:
            grid.lock(chosen.name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class PlanRow:
    """One cell in a runner's --plan."""

    name: str
    state: str      # "done", "todo", or "pending" (what it runs waits for other cells' results)
    column: str     # the runner's own column: the cell's stream or phase
    seconds: float  # estimated seconds on one thread

    @property
    def left(self) -> float:
        return 0.0 if self.state == "done" else self.seconds


def seconds_left(rows: Sequence[PlanRow]) -> dict[str, float]:
    """Estimated seconds not done yet, per value of the column, in order of first appearance
    (a column whose cells are all done has 0)."""
    out: dict[str, float] = {}
    for r in rows:
        out[r.column] = out.get(r.column, 0.0) + r.left
    return out


@dataclass(frozen=True)
class PlanTable:
    """How a runner prints its plan: a header (or none), one line per row, closing lines."""

    header: str | None
    line: Callable[[PlanRow], str]
    footer: Callable[[list[PlanRow]], list[str]]

    def lines(self, rows: list[PlanRow]) -> list[str]:
        return [*([self.header] if self.header is not None else []), *map(self.line, rows), *self.footer(rows)]


# ----------------------------------------------------------------------------- the command line
def offline() -> None:
    """No model hub: the runners use the embedded encoder and local data only."""
    for k in OFFLINE:
        os.environ.setdefault(k, "1")


def log_warnings() -> None:
    """Warnings and errors of every logger, with time and logger name."""
    import logging
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def silence_transformers() -> None:
    """Errors only from transformers (its warnings about unused weights are expected here)."""
    import transformers
    transformers.logging.set_verbosity_error()


@dataclass(frozen=True)
class Streams:
    """The runner's ``--stream`` option: a name for the lock files, or a filter (choices)."""

    help: str
    default: str
    choices: tuple[str, ...] | None = None


# what a recorded cell must reproduce when trained again (those of its keys it has): numbers that
# depend on nothing but the training (not times, memory, the machine)
REPRODUCED = ("metrics", "train_loss", "history", "robustness", "affinity", "trainable", "stored", "stored_bytes")


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}/{k}" if path else str(k))
    elif isinstance(value, list):
        for k, v in enumerate(value):
            yield from _leaves(v, f"{path}[{k}]")
    else:
        yield path, value


def compare(recorded: dict[str, Any], new: dict[str, Any]) -> bool:
    """Print what a cell trained again reproduces of its record (``REPRODUCED``): every differing
    value side by side, and a closing line; True when every value is the same to the last bit."""
    old = dict(_leaves({k: recorded[k] for k in REPRODUCED if k in recorded}))
    now = dict(_leaves({k: new.get(k) for k in REPRODUCED if k in recorded}))
    differ = [k for k in old if now.get(k) != old[k]]
    for k in differ:
        print(f"  {k}: recorded {old[k]!r}, now {now.get(k)!r}")
    here = new.get("machine", machine())
    if recorded.get("machine") != here:
        print(f"  recorded on {recorded.get('machine')}, checked on {here}: another processor rounds floats otherwise")
    print(f"{recorded.get('cell', '')}: {len(old) - len(differ)} of {len(old)} recorded values reproduced exactly"
          + ("" if differ else " (all)"), flush=True)
    return not differ


@dataclass(frozen=True)
class Runner:
    """One experiment's side of the command line every runner has:
    ``--plan | --run [--stream S] [--only P] | --cell CELL [--check] | --summarize`` (and ``--threads``)."""

    doc: str                                      # the runner's module docstring: --help shows it
    names: Callable[[], list[str]]                # every cell's name, in run order (--cell takes these)
    plan: Callable[[], int]
    run: Callable[..., int]                       # --run: stream, only, threads, **flags
    cell: Callable[..., int]                      # --cell: name, threads, **flags: the cell (and what it needs) unless recorded
    check: Callable[[str, int | None], tuple[dict[str, Any] | None, dict[str, Any]]]  # --check: (record, new record)
    summarize: Callable[[], int]
    summarize_help: str
    streams: Streams
    worker: Callable[[str, int | None], int] | None = None  # --worker CELL (hidden): one cell in a child process
    flags: dict[str, str] = field(default_factory=dict)      # the runner's own on/off options for --cell/--run: help


def runner_of(module: ModuleType) -> Runner:
    """The Runner of a runner module: its ``cells`` (each with a ``name``), ``plan``, ``run``,
    ``one_cell`` and ``check`` callables, or a ``GRID`` (experiments.seed_grid.Grid) that has them;
    its ``summarize``, ``STREAMS`` and ``SUMMARIZE_HELP``, and where it has them its ``worker`` and
    ``FLAGS``; ``--help`` shows its docstring."""
    cells = getattr(module, "GRID", module)

    def names() -> list[str]:
        return [c.name for c in cells.cells()]

    return Runner(module.__doc__ or "", names, cells.plan, cells.run, cells.one_cell, cells.check,
                  module.summarize, module.SUMMARIZE_HELP, module.STREAMS, getattr(module, "worker", None),
                  getattr(module, "FLAGS", {}))


def cli(module_name: str, argv: list[str] | None = None) -> int:
    """``python -m experiments.NAME ...``: the command line of the runner module ``module_name``."""
    import importlib

    return main(runner_of(importlib.import_module(module_name)), argv)


def parser(runner: Runner) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=runner.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--plan", action="store_true", help="list the cells, done/todo, with estimated times")
    what.add_argument("--run", action="store_true", help="run the cells not done yet (resumable)")
    what.add_argument("--cell", metavar="CELL", help="run this cell (and what it needs) unless it is recorded")
    what.add_argument("--summarize", action="store_true", help=runner.summarize_help)
    if runner.worker is not None:
        what.add_argument("--worker", metavar="CELL", help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true",
                   help="with --cell: train the recorded cell again (into runs/check/) and compare; exit 1 if "
                        "a recorded value is not reproduced exactly")
    p.add_argument("--only", default="", help="with --run: only cells whose name starts with this")
    p.add_argument("--stream", choices=runner.streams.choices, default=runner.streams.default, help=runner.streams.help)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (results do not depend on it)")
    for flag, help_text in runner.flags.items():
        p.add_argument(f"--{flag}", action="store_true", help=help_text)
    return p


def main(runner: Runner, argv: list[str] | None = None) -> int:
    """Parse the command line and do what it asks: plan, summarise, run, one cell, check one cell
    (or be a worker)."""
    p = parser(runner)
    args = p.parse_args(argv)
    if args.check and not args.cell:
        p.error("--check goes with --cell")
    if args.cell is not None and args.cell not in runner.names():
        p.error(f"unknown cell {args.cell} (see --plan)")
    offline()
    if args.plan:
        return runner.plan()
    if args.summarize:
        return runner.summarize()
    log_warnings()
    silence_transformers()
    if runner.worker is not None and args.worker:
        return runner.worker(args.worker, args.threads)
    if args.check:
        recorded, new = runner.check(args.cell, args.threads)
        if recorded is None:
            print(f"{args.cell} has no record to compare with")
            return 1
        return 0 if compare(recorded, new) else 1
    flags = {flag: getattr(args, flag) for flag in runner.flags}
    if args.cell is not None:
        return runner.cell(args.cell, args.threads, **flags)
    return runner.run(args.stream, args.only, args.threads, **flags)


# ----------------------------------------------------------------------------- a record's provenance
def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[1]  # the repository (experiments.settings.ROOT)
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def commit() -> str:
    """``git rev-parse HEAD``, with ``+dirty`` where the tree has changes (experiments/results, where
    records are written while the grid runs, not counted); ``unknown`` outside a git checkout."""
    try:
        head = _git("rev-parse", "HEAD")
        changes = _git("status", "--porcelain", "--", ".", ":(exclude)experiments/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if changes else "")


def code_version(paths: tuple[str, ...] = ("src/mtdnn", "experiments/tasks.yaml")) -> str:
    """The training code a run depends on: the git tree hashes of src/mtdnn and the task file
    (``paths``), with ``+dirty`` where they have uncommitted changes (runs with equal ``code`` ran
    the same code)."""
    try:
        trees = [_git("rev-parse", f"HEAD:{p}")[:12] for p in paths]
        changes = _git("status", "--porcelain", "--", *paths)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return "-".join(trees) + ("+dirty" if changes else "")


def dev_by_epoch(history: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """task -> epoch -> split -> metrics, every evaluated epoch (unrounded)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for h in history:
        for task, splits in (h.get("dev") or {}).items():
            out.setdefault(task, {})[str(h["epoch"])] = splits
    return out
