"""The grid machinery the tagging and QA runners share (experiments.tagging, experiments.qa): cells
of one reported task trained with several seeds, each recorded with its per-example predictions
at the epoch the reported task keeps on dev (experiments.examples), shared by streams through lock
files (cells.ClaimedGrid).

A record (``build_record``) holds: the cell and its meta, the run's metrics (each task's evaluation
splits at the epoch it keeps), the epoch each task keeps, every evaluated epoch's scores, the
reported task's per-example predictions at its kept epoch on each of its evaluation splits, the
training losses, wall seconds, the git commit, the code hash (src/mtdnn and the two task files),
the machine, package versions, load average, time and config. The run's weights are removed once
the record is written: no cell starts from another.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import settings
from experiments.cells import (ClaimedGrid, PlanRow, PlanTable, Records, code_version, commit, config_record,
                               dev_by_epoch, load_average, lock_file, machine, package_versions, read_history, read_metrics, say, seconds_left,
                               threads_override, timestamp, train_cell, work)
from experiments.examples import kept_predictions

AUX_FILE = str(settings.HERE / "aux_tasks.yaml")
CODE_PATHS = ("src/mtdnn", "experiments/tasks.yaml", "experiments/aux_tasks.yaml")
SEEDS = (1, 2, 3)


@dataclass
class Cell:
    name: str
    config: dict[str, Any]
    report: str                          # the task whose predictions the record keeps
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Grid:
    """One runner's grid: its cells, where it keeps records and runs, how a split's predictions
    are kept (``examples.tagging_entry``/``span_entry``), how long a cell takes and the hours the
    whole grid may take. It carries the runner's ``--plan``, ``--run``, ``--cell`` and ``--check``
    (``cells.runner_of`` takes them from a runner module's ``GRID``)."""

    module: str                                   # python -m experiments.<module>
    cells: Callable[[], list[Cell]]
    records: Records
    runs: Path
    check_dir: Path
    entry: Callable[..., dict[str, Any]]
    seconds: Callable[[Cell], float]
    budget_hours: float

    @property
    def locks(self) -> Path:
        return self.records.folder / ".locks"

    def by_name(self) -> dict[str, Cell]:
        return {c.name: c for c in self.cells()}

    # ---- running
    def train(self, cell: Cell, run_dir: Path, threads: int | None) -> dict[str, Any]:
        import mtdnn

        cfg = mtdnn.make_config({**cell.config, "output_dir": str(run_dir), **threads_override(threads)})
        say(f"{cell.name} ...")
        wall, extra = train_cell(cfg, run_dir)
        record = build_record(self, cell, run_dir, cfg, wall, extra)
        say(f"{cell.name}: {json.dumps(record['metrics'].get(cell.report))} ({wall:.0f} s)")
        return record

    def one_cell(self, name: str, threads: int | None = None) -> int:
        """Run a cell unless it is recorded; its weights are removed once the record is written."""
        from mtdnn.run_dir import write_json

        if self.records.path(name).is_file():
            return 0
        run_dir = self.runs / name
        write_json(self.records.path(name), self.train(self.by_name()[name], run_dir, threads))
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        return 0

    def check(self, name: str, threads: int | None = None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        from mtdnn.run_dir import write_json

        new = self.train(self.by_name()[name], self.check_dir / name, threads)
        write_json(self.check_dir / self.records.path(name).name, new)
        return self.records.load(name), new

    def run(self, stream: str, only: str, threads: int | None) -> int:
        """Work through the cells with the other streams (lock files beside the records)."""
        def run_one(cell: Cell) -> None:
            self.one_cell(cell.name, threads)

        grid = ClaimedGrid(self.cells, lambda n: self.records.path(n).is_file(), lambda c: True,
                           lambda n: lock_file(self.locks, self.records.path(n)), self.locks, run_one)
        return work(grid, stream, only)

    # ---- the plan
    def estimate(self, cell: Cell) -> float:
        record = self.records.load(cell.name)
        return float(record["wall_seconds"]) if record is not None else self.seconds(cell)

    def planned_seconds(self) -> float:
        """The whole grid's estimate from the cells' time model (recorded times not counted)."""
        return sum(self.seconds(c) for c in self.cells())

    def plan(self) -> int:
        print("\n".join(self.plan_lines()))
        return 0

    def plan_lines(self) -> list[str]:
        rows = [PlanRow(c.name, "done" if self.records.path(c.name).is_file() else "todo", c.name.split("/")[0],
                        self.estimate(c)) for c in self.cells()]
        table = PlanTable(f"{'state':<6} {'minutes':>8}  cell", lambda r: f"{r.state:<6} {r.seconds / 60:>8.1f}  {r.name}",
                          lambda rs: [])
        total = self.planned_seconds()
        left = seconds_left(rows)
        return table.lines(rows) + [
            "", f"estimate of the whole grid: {total / 3600:.1f} h on one core (budget {self.budget_hours:.0f} h), about "
                f"{total / 7200:.1f} h on two streams",
            "left to run: " + ", ".join(f"{k} {v / 3600:.1f} h" for k, v in left.items())
            + f"; {sum(left.values()) / 3600:.1f} h on one core (done: the recorded time)"]


def build_record(grid: Grid, cell: Cell, run_dir: Path, cfg: Any, wall: float, extra: dict[str, Any]) -> dict[str, Any]:
    """A finished cell's record (module docstring)."""
    history = read_history(run_dir)
    selected = json.loads((run_dir / "selection.json").read_text())["tasks"]
    return {"cell": cell.name, "meta": cell.meta, "report": cell.report, "metrics": read_metrics(run_dir),
            "selected": selected, "evaluations": dev_by_epoch(history),
            "predictions": kept_predictions(run_dir, {cell.report: int(selected[cell.report])}, grid.entry),
            "train_loss": [h["train_loss"] for h in history], "wall_seconds": round(wall, 1),
            "commit": commit(), "code": code_version(CODE_PATHS), "machine": machine(),
            "versions": package_versions(), "load_average": load_average(), "finished": timestamp(),
            "config": config_record(cfg), "command": f"python -m experiments.{grid.module} --cell {cell.name}", **extra}
