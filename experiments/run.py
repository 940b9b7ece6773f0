"""Run the experiments of docs/results.md, one cell at a time, resumably.

Every cell is one `mtdnn.train` run; its result (metrics, config, wall time, machine) is written
to experiments/results/runs/<cell>.json as soon as it finishes, and a cell whose JSON exists is
skipped; a cell killed mid-run continues from its last saved epoch (cells.train_cell). Model
weights go to runs/experiments/<cell>/ (not committed; only the multi-task model
keeps its weights, because the fine-tuning and domain-adaptation cells start from it).

    python experiments/run.py --list                         # every cell, in run order, done/todo
    python experiments/run.py --cell da/scitail/mtdnn/1/s1   # one cell (trains what it needs first)
    python experiments/run.py --cell da/scitail/mtdnn/1/s1 --check   # rerun a recorded cell, compare
    python experiments/run.py --all [--only glue/]           # everything (or a name prefix), in order
    # the whole grid on a 2-core CPU: two streams side by side, one core each
    taskset -c 0 python experiments/run.py --all --stream mt --threads 1 &
    taskset -c 1 python experiments/run.py --all --stream base --threads 1

Budget: the embedded all-MiniLM-L6-v2, max_seq_len 128, batch 32, AdamW lr 1e-4 with 10% warm-up
(Adamax at the paper's settings learned too slowly for this small encoder on a short budget, see
docs/results.md); evaluation after the last epoch only; every run keeps its LAST epoch
(no checkpoint choice looks at any evaluation split); large training sets are cut to fixed random
subsets (subset seed 0) listed in GLUE_SUBSETS; domain-adaptation epochs depend only on the
training-set size (da_epochs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from cells import (load_average, Reusable, Streams, add_filters, add_selection, chosen, config_record, train_cell, log_warnings,  # noqa: E402
                   machine, package_versions, offline, read_history, read_metrics, result_file, say, silence_transformers, timestamp)

RESULTS = HERE / "results" / "runs"
RUNS = ROOT / "runs" / "experiments"
CHECK = ROOT / "runs" / "check"
RETRAINED = RESULTS / "retrained"  # records of kept models trained again (a fresh clone has no weights)
TASK_FILE = str(HERE / "tasks.yaml")

BASE: dict[str, Any] = {
    "encoder": "default", "max_seq_len": 128, "batch_size": 32, "eval_batch_size": 128, "lr": 1e-4,
    "optimizer": "adamw", "warmup_ratio": 0.1, "selection": "last", "predict_test": False,
    "progress": False, "task_files": [TASK_FILE], "allow_hub": False,
    "pair_head": "san",  # the recorded cells' built-in pair tasks (RTE, MRPC, WNLI, SciTail) have SAN heads
}
GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "rte", "wnli", "mnli_aux"]
SMALL_TASKS = ["rte", "mrpc", "stsb", "wnli"]
GLUE_SUBSETS = {"cola": 2000, "sst2": 2000, "mrpc": 2000, "stsb": 2000, "mnli_aux": 2000}  # rte, wnli: all
GLUE_EPOCHS = 2
SCITAIL_TRAIN = 23596
DA_SIZES = {"0.1": 0.001, "1": 0.01, "10": 0.1, "100": 1.0}
# training examples per share: SciTail rounds its shares (24 / 236 / 2,360 / 23,596); SNLI uses the
# paper's sizes (549 / 5,493: the shares of SNLI 1.0's 549,367 training pairs, rounded down)
DA_COUNTS = {"scitail": {k: round(SCITAIL_TRAIN * v) for k, v in DA_SIZES.items()},
             "snli": {"0.1": 549, "1": 5493}}
MT_CELL = "glue/mt/s1"


def da_epochs(n_train: int) -> int:
    """Epochs for a domain-adaptation run, fixed by its training-set size alone (no evaluation split
    is looked at): tiny sets get more passes."""
    return 10 if n_train <= 100 else 5 if n_train <= 1000 else 2 if n_train <= 10000 else 1


@dataclass
class Cell:
    name: str
    config: dict[str, Any]
    needs: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _cells() -> list[Cell]:
    """Every cell, most important first. Cells that need the multi-task model (stream ``mt``) and
    cells that do not (stream ``base``) can run side by side, one process each."""
    mt_dir = str(RUNS / MT_CELL)
    # (a) the multi-task model: all GLUE tasks + MNLI (trained on dev_matched)
    cells = [Cell(MT_CELL, {**BASE, "tasks": GLUE_TASKS, "epochs": GLUE_EPOCHS, "seed": 1,
                            "eval_every": GLUE_EPOCHS, "max_train_examples_per_task": GLUE_SUBSETS},
                  meta={"kind": "mtdnn_no_finetune"})]
    cells += [_glue_cell(kind, task, 1, mt_dir) for kind in ["single", "finetune"] for task in GLUE_TASKS]
    # (b) domain adaptation, small sizes first (cheap, and the paper's headline)
    cells += [_da_cell("scitail", enc, size, subset, mt_dir)
              for size in ["0.1", "1"] for subset in [1, 2, 3] for enc in ["encoder", "mtdnn"]]
    cells += [_da_cell("scitail", enc, "10", 1, mt_dir) for enc in ["encoder", "mtdnn"]]
    # (c) SAN ablation: linear twins (the SAN side is the matching single-task / SciTail 10% cell)
    cells += [_linear_cell(task, 1) for task in ["rte", "mrpc", "mnli_aux"]]
    cells.append(Cell("san/scitail_linear/10/s1",
                      {**BASE, "tasks": ["scitail_linear"], "epochs": da_epochs(DA_COUNTS["scitail"]["10"]),
                       "seed": 1, "subset_seed": 1, "max_train_examples": DA_COUNTS["scitail"]["10"]},
                      meta={"kind": "linear", "task": "scitail"}))
    cells += [_da_cell("snli", enc, "0.1", subset, mt_dir) for subset in [1, 2, 3] for enc in ["encoder", "mtdnn"]]
    # (a) seeds 2 and 3 for the small tasks
    cells += [_glue_cell(kind, task, seed, mt_dir)
              for seed in [2, 3] for kind in ["single", "finetune"] for task in SMALL_TASKS]
    cells += [_da_cell("snli", enc, "1", 1, mt_dir) for enc in ["encoder", "mtdnn"]]
    cells += [_da_cell("scitail", enc, "100", 1, mt_dir) for enc in ["encoder", "mtdnn"]]
    cells += [_da_cell("snli", enc, "1", subset, mt_dir) for subset in [2, 3] for enc in ["encoder", "mtdnn"]]
    cells += [_linear_cell(task, seed) for seed in [2, 3] for task in ["rte", "mrpc"]]
    return cells


def _linear_cell(task: str, seed: int) -> Cell:
    name = f"{task}_linear"
    return Cell(f"san/{name}/s{seed}", {**BASE, "tasks": [name], "epochs": GLUE_EPOCHS, "seed": seed,
                                         "eval_every": GLUE_EPOCHS,
                                         "max_train_examples_per_task": {name: GLUE_SUBSETS.get(task, 10**9)}},
                meta={"kind": "linear", "task": task, "seed": seed})


def _glue_cell(kind: str, task: str, seed: int, mt_dir: str) -> Cell:
    cfg = {**BASE, "tasks": [task], "epochs": GLUE_EPOCHS, "seed": seed, "eval_every": GLUE_EPOCHS,
           "max_train_examples_per_task": {k: v for k, v in GLUE_SUBSETS.items() if k == task}}
    needs = []
    if kind == "finetune":
        cfg["init_from"] = mt_dir
        needs = [MT_CELL]
    return Cell(f"glue/{kind}/{task}/s{seed}", cfg, needs, meta={"kind": kind, "task": task, "seed": seed})


def _da_cell(data: str, enc: str, size: str, subset: int, mt_dir: str) -> Cell:
    task = "scitail" if data == "scitail" else "snli_da"
    n = DA_COUNTS[data][size]
    epochs = da_epochs(n)
    cfg = {**BASE, "tasks": [task], "epochs": epochs, "seed": subset, "subset_seed": subset, "eval_every": epochs}
    if not (data == "scitail" and size == "100"):
        cfg["max_train_examples"] = n
    needs = []
    if enc == "mtdnn":
        cfg["init_from"] = mt_dir
        needs = [MT_CELL]
    return Cell(f"da/{data}/{enc}/{size}/s{subset}", cfg, needs,
                meta={"kind": "domain_adaptation", "data": data, "encoder": enc, "size": size,
                      "subset": subset, "train_examples": n})


def result_path(name: str, folder: Path = RESULTS) -> Path:
    return result_file(folder, name)


def _train(cell: Cell, run_dir: Path) -> dict[str, Any]:
    """Train one cell into run_dir and return its result record."""
    import mtdnn

    cfg = mtdnn.make_config({**cell.config, "output_dir": str(run_dir)})
    say(f"{cell.name} ...")
    wall, extra = train_cell(cfg, run_dir)  # an attempt that was killed continues from its last saved state
    metrics = read_metrics(run_dir)
    say(f"{cell.name}: {json.dumps(metrics)} ({wall:.0f} s)")
    return {"cell": cell.name, "meta": cell.meta, "metrics": metrics,
            "train_loss": [h["train_loss"] for h in read_history(run_dir)], "wall_seconds": round(wall, 1),
            "machine": machine(), "versions": package_versions(), "load_average": load_average(), "finished": timestamp(), "config": config_record(cfg),
            "command": f"python experiments/run.py --cell {cell.name}", **extra}


def mt_model_homes(seed: int) -> list[Reusable]:
    """Where the multi-task model of this setting trained with ``seed`` may already be kept, each
    with the record of its run. Three runners train exactly this run (their configs are equal:
    tests/test_experiment_cells.py): this one (glue/mt, recorded, or retrained by _ensure_model),
    interference.py (methods/proportional) and smart_distill.py (kd/teacher); each takes one the
    others made on this machine (cells.equal_finished_run) instead of training it again."""
    mine = f"glue/mt/s{seed}"
    interference, distill = f"methods/proportional/s{seed}", f"kd/teacher/s{seed}"
    return [Reusable(RUNS / mine, result_path(mine)), Reusable(RUNS / mine, result_path(mine, RETRAINED)),
            Reusable(ROOT / "runs" / "interference" / interference, result_path(interference, HERE / "results" / "interference")),
            Reusable(RUNS / "smart_distill" / distill, result_path(distill, HERE / "results" / "smart_distill"))]


def single_task_homes(task: str, seed: int) -> list[Reusable]:
    """Where the single-task model of this setting (glue/single/<task>/s<seed>) may already be kept,
    with the record of its run: this runner's cell, adapters.py's full-plain twin and
    smart_distill.py's plain arm train exactly this run (tests/test_experiment_cells.py); each takes
    one the others made on this machine instead of training it again."""
    mine, adapters, distill = (f"glue/single/{task}/s{seed}", f"adapters/full-plain/{task}/s{seed}",
                               f"smart/single/{task}/plain/s{seed}")
    return [Reusable(RUNS / mine, result_path(mine)),
            Reusable(ROOT / "runs" / "adapters" / adapters, result_path(adapters, HERE / "results" / "adapters")),
            Reusable(RUNS / "smart_distill" / distill, result_path(distill, HERE / "results" / "smart_distill"))]


def _ensure_model(name: str, by_name: dict[str, Cell]) -> None:
    """Make sure the weights of a cell other cells start from are on disk (a fresh clone has the
    cell's JSON but not its weights): train it again if they are missing. A recorded result is never
    overwritten; the retrained model's metrics are printed next to it."""
    run_dir = RUNS / name
    if (run_dir / "metrics.json").is_file():
        return
    from mtdnn.run_dir import write_json

    result = _train(by_name[name], run_dir)
    out = result_path(name)
    if out.is_file():
        _compare(json.loads(out.read_text()), result)
        write_json(result_path(name, RETRAINED), result)  # the kept weights' own record (machine, time)
    else:
        write_json(out, result)


def _compare(recorded: dict[str, Any], new: dict[str, Any]) -> None:
    for task, splits in recorded["metrics"].items():
        for split, metrics in splits.items():
            for metric, value in metrics.items():
                now = new["metrics"].get(task, {}).get(split, {}).get(metric, float("nan"))
                print(f"  {task}/{split}/{metric}: recorded {value:.2f}, now {now:.2f} ({now - value:+.2f})")


def run_cell(cell: Cell, by_name: dict[str, Cell], check: bool = False) -> dict[str, Any]:
    """Run a cell unless its result is recorded. With check=True, run it again into runs/check/ and
    print the recorded and the new metrics side by side (the record is left as it is)."""
    out = result_path(cell.name)
    if out.is_file() and not check:
        return json.loads(out.read_text())
    for dep in cell.needs:
        _ensure_model(dep, by_name)
    from mtdnn.run_dir import write_json

    if check:
        result = _train(cell, CHECK / cell.name)
        write_json(result_path(cell.name, CHECK), result)
        if out.is_file():
            _compare(json.loads(out.read_text()), result)
        else:
            print(f"  {cell.name} has no recorded result to compare with")
        return result
    result = _train(cell, RUNS / cell.name)
    write_json(out, result)
    if cell.name != MT_CELL:  # keep the multi-task model (others start from it); drop the rest
        shutil.rmtree(RUNS / cell.name / "checkpoints", ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true")
    add_selection(p)
    p.add_argument("--check", action="store_true",
                   help="with --cell: run the cell again (into runs/check/) and print recorded vs new metrics")
    add_filters(p, "--all", Streams("with --all: only the cells that need the multi-task model (mt) or only the "
                                    "others (base)", "all", ("all", "mt", "base")),
                "torch CPU threads per run (results do not depend on it)")
    args = p.parse_args(argv)
    offline()
    cells = _cells()
    if args.threads:
        for c in cells:
            c.config["threads"] = args.threads
    by_name = {c.name: c for c in cells}
    if args.list:
        for c in cells:
            print(("done " if result_path(c.name).is_file() else "todo ") + c.name)
        return 0
    log_warnings()
    silence_transformers()
    def in_stream(c: Cell) -> bool:
        return args.stream == "all" or (args.stream == "mt") == (c.name == MT_CELL or MT_CELL in c.needs)

    for cell in chosen(p, args, cells, in_stream, "--list"):
        run_cell(cell, by_name, check=args.check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
