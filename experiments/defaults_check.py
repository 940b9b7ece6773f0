"""Check the defaults of `mtdnn train` on the default encoder: defaults that work.

For each task, the command a new user would type,

    mtdnn train --tasks T --max-train-examples 1000 --epochs 2

once with the current defaults and once with the paper's optimiser (`--optimizer adamax --lr 5e-5`,
the old defaults), everything else equal: the cells ``T/defaults`` and ``T/paper_optimizer``. Dev
scores of the last epoch are written to experiments/results/defaults_check.json after each run (a
rerun skips the runs already there).

    python -m experiments.defaults_check --plan                  # the cells, done/todo
    python -m experiments.defaults_check --run [--only rte/] [--threads 1]
    python -m experiments.defaults_check --cell rte/defaults --check   # train it again, compare
    python -m experiments.defaults_check --summarize             # the table of docs/results.md's Defaults
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments import settings
from experiments.cells import (PlanRow, PlanTable, Streams, cli, machine, package_versions, say, seconds_left)

OUT = settings.RESULTS / "defaults_check.json"
RUNS = settings.ROOT / "runs" / "defaults_check"
CHECK = settings.CHECK_DIRS / "defaults_check"
TASKS = ["rte", "mrpc", "stsb"]
ARMS = {"defaults": {}, "paper_optimizer": {"optimizer": "adamax", "lr": 5e-5}}
# the recorded runs had SAN pair heads, the default pair head when they were made; the optimisers
# are what the table compares
RECORDED = {"pair_head": "san"}
STREAMS = Streams("(one stream: the cells run in order)", "1", ("1",))
SUMMARIZE_HELP = "print the table of docs/results.md's Defaults section"
LABELS = {"rte": "RTE (accuracy)", "mrpc": "MRPC (mean of F1 and accuracy)", "stsb": "STS-B (mean of Pearson and Spearman)"}


@dataclass(frozen=True)
class Cell:
    name: str  # task/arm


def cells() -> list[Cell]:
    return [Cell(f"{task}/{arm}") for task in TASKS for arm in ARMS]


def _results() -> dict[str, Any]:
    return json.loads(OUT.read_text()) if OUT.is_file() else {"runs": {}}


def _train(name: str, threads: int | None, runs: Path) -> dict[str, Any]:
    """Train cell ``name`` (``task/arm``) into ``runs`` and return its entry of the results."""
    import torch

    import mtdnn
    from mtdnn.runtime import cpu_model

    task, arm = name.split("/")
    threads = threads or 1
    cfg = mtdnn.make_config(overrides={"tasks": task, "max_train_examples": 1000, "epochs": 2, **RECORDED, **ARMS[arm],
                                       "output_dir": str(runs / f"{task}-{arm}"), "threads": threads,
                                       "predict_test": False, "progress": False})
    say(f"{name} ...")
    t0 = time.time()
    run = mtdnn.train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())[task]
    say(f"{name}: {metrics}")
    return {"task": task, "arm": arm, "optimizer": cfg.optimizer, "lr": cfg.lr, "dev": metrics,
            "wall_seconds": round(time.time() - t0, 1), "load_average": os.getloadavg(), "cpu": cpu_model(),
            "torch": torch.__version__, "threads": threads, "machine": machine(), "versions": package_versions()}


def _write(results: dict[str, Any]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(OUT)


def one_cell(name: str, threads: int | None) -> int:
    """``--cell``: train the cell unless its result is recorded; the results file is rewritten with it."""
    from mtdnn.config import TrainConfig

    results = _results()
    if name in results["runs"]:
        return 0
    defaults = TrainConfig(tasks=["rte"])
    results["defaults"] = {"optimizer": defaults.optimizer, "lr": defaults.lr, "batch_size": defaults.batch_size,
                           "warmup_ratio": defaults.warmup_ratio, "max_seq_len": defaults.max_seq_len}
    results["runs"][name] = _train(name, threads, RUNS)
    _write(results)
    return 0


def run(stream: str, only: str, threads: int | None) -> int:
    """``--run``: every cell whose name starts with ``only`` not recorded yet."""
    for cell in cells():
        if cell.name.startswith(only):
            one_cell(cell.name, threads)
    return 0


def check(name: str, threads: int | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``--check``: the cell's recorded result and the cell trained again into runs/check/defaults_check/,
    as records (the dev metrics under ``metrics``)."""
    recorded = _results()["runs"].get(name)
    new = _train(name, threads, CHECK)

    def record(entry: dict[str, Any]) -> dict[str, Any]:
        return {"cell": name, "metrics": entry["dev"], "machine": entry.get("machine", entry.get("cpu"))}

    return (None if recorded is None else record(recorded)), record(new)


def plan() -> int:
    runs = _results()["runs"]
    rows = [PlanRow(n, "done" if n in runs else "todo", "1", runs[n]["wall_seconds"] if n in runs else 120.0)
            for n in (c.name for c in cells())]
    table = PlanTable(f"{'state':<6} {'minutes':>8}  cell", lambda r: f"{r.state:<6} {r.seconds / 60:>8.1f}  {r.name}",
                      lambda rs: [f"\nleft to run: ~{seconds_left(rs)['1'] / 60:.0f} min on one thread "
                                  "(done: the recorded time)"])
    print("\n".join(table.lines(rows)))
    return 0


def summarize() -> int:
    """Print the dev score of the last epoch per task and arm, as docs/results.md shows it."""
    runs = _results()["runs"]
    lines = ["| task | AdamW lr 1e-4 (default) | Adamax lr 5e-5 (paper) |", "|---|---|---|"]
    for task in TASKS:
        cells = [runs.get(f"{task}/{arm}") for arm in ARMS]
        lines.append(f"| {LABELS[task]} | " + " | ".join(
            "–" if c is None else f"{next(iter(c['dev'].values()))['score']:.1f}" for c in cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(__name__))
