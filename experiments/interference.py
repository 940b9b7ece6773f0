"""Run the interference experiments (docs/interference.md): sampling, loss weighting and PCGrad against
Algorithm 1, the single-task control with as many passes as the fine-tuned MT-DNN row, and the
validation of ``mtdnn affinity``, on the GLUE setting of experiments.settings (its BASE config,
GLUE_TASKS, subsets and 2 epochs).

Every cell is one run; its result is written to experiments/results/interference/<cell>.json as
soon as it finishes, and a cell whose JSON exists is skipped: the runner is resumable (a cell
killed mid-run continues from its last saved epoch, cells.train_cell). Several
processes can work on the grid side by side (``--stream``): each claims the next cell with a lock
file (results/interference/.locks/), so no cell runs twice; a lock left by a killed process of this
machine is taken over. The proportional method is experiments.run's multi-task model, also
experiments.smart_distill's teacher: where another runner keeps that run, made on this machine, the cell copies it instead of
training (its record says ``reused_from``), and its own weights are kept for the others.

    python -m experiments.interference --plan               # the cells in order, done/todo, estimated time
    python -m experiments.interference --run [--only methods/]   # work through the cells
    python -m experiments.interference --cell pairs/cola+wnli/s1 [--check]   # one cell (again, compared)
    # two streams side by side, one core and one thread each (nothing else heavy on the machine)
    taskset -c 0 python -m experiments.interference --run --stream 1 --threads 1 &
    taskset -c 1 python -m experiments.interference --run --stream 2 --threads 1
    python -m experiments.interference --summarize         # tables, summary.json "interference", heatmap

The order suits a tight budget: one seed of every method first (phase
1), the affinity matrix and the target+auxiliary pairs (2), the single-task control (3), then seeds
2 and 3 of proportional and of the two best methods of phase 1 (4, listed once phase 1 is done;
once their seed-2 cells are recorded the choice stays with them, so rerunning phase 1 does not move
it), and each target trained with its recommended auxiliaries (5, listed once the affinity is
measured).

The records of the method cells (``methods/``) also keep each task's dev predictions at the epoch
it keeps (experiments.glue_seeds' format: ``selected``, ``evaluations``, ``predictions``, labels in
experiments/results/labels.json; experiments.examples), the commit and the code hash, so that ``--summarize`` gives each
method − proportional with the paired bootstrap interval over the dev examples (same seeds). A
method record without predictions (made before they were kept) counts as not done: ``--plan``
lists it as ``rerun`` and ``--run`` trains it again.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import settings
from experiments.cells import (ClaimedGrid, PlanRow, PlanTable, Streams, claim, cli, code_version, commit,
                               config_record, dev_by_epoch, fill_markers,
                               glue_score, load_average, lock_file, machine, package_versions, read_history,
                               read_metrics, rounded_mean, say, threads_override, timestamp, train_cell, train_or_take,
                               update_summary, work as work_grid)
from experiments.examples import compare_rows, epoch_predictions, load_labels
from experiments.stats import difference_text
from experiments.settings import GLUE_EPOCHS, GLUE_TASKS, SMALL_TASKS, glue_config

RECORDS = settings.RECORDS["interference"]
LOCKS = RECORDS.folder / ".locks"
RUNS = settings.RUN_DIRS["interference"]
CHECK = settings.CHECK_DIRS / "interference"
BASE_RECORDS = settings.RECORDS["run"]   # experiments.run's records (the 2-epoch single-task cells)
SUMMARY = settings.SUMMARY
DOC = settings.DOC
HEATMAP = settings.ROOT / "docs" / "interference_affinity.png"
BEGIN, END = "<!-- interference:begin -->", "<!-- interference:end -->"

METHODS: dict[str, dict[str, Any]] = {
    "proportional": {},
    "temperature2": {"sampling": "temperature", "sampling_temperature": 2.0},
    "temperature5": {"sampling": "temperature", "sampling_temperature": 5.0},
    "annealed": {"sampling": "annealed"},
    "uniform": {"sampling": "uniform"},          # the control of PCGrad's one-batch-per-task mixture
    "uncertainty": {"mtl_method": "uncertainty"},
    "pcgrad": {"mtl_method": "pcgrad"},
}
TARGETS = ["rte", "mrpc", "stsb", "sst2", "cola"]
AFFINITY = {"budget": 200, "every": 10, "lookahead_lr": 1e-3}
RECOMMEND_K = 2
CONTROL_EPOCHS = 2 * GLUE_EPOCHS  # the MT-DNN row: 2 multi-task epochs, then 2 of fine-tuning
BEST_K = 2
ARM = "last"  # the epoch every cell keeps (the GLUE setting's selection), as glue_seeds' records name it
SECONDS_PER_FORWARD = 0.1  # a batch of 32 through MiniLM on one thread, for the affinity estimate
STREAMS = Streams("with --run: this process's name in the lock files", "1")
SUMMARIZE_HELP = "tables, summary.json 'interference', heatmap"


@dataclass
class Cell:
    name: str
    config: dict[str, Any]
    phase: int
    kind: str = "train"                     # or "affinity"
    needs: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the grid
def static_cells() -> list[Cell]:
    cells = [Cell(f"methods/{m}/s1", glue_config(GLUE_TASKS, 1, **extra), 1, meta={"method": m, "seed": 1})
             for m, extra in METHODS.items()]
    cells.append(Cell("affinity/s1", glue_config(GLUE_TASKS, 1), 2, kind="affinity", meta=dict(AFFINITY)))
    cells += [Cell(f"pairs/{t}+{a}/s1", glue_config([t, a], 1), 2, meta={"target": t, "aux": a})
              for t in TARGETS for a in GLUE_TASKS if a != t]
    cells += [Cell(f"control/single{CONTROL_EPOCHS}/{t}/s{seed}", glue_config([t], seed, epochs=CONTROL_EPOCHS), 3,
                   meta={"task": t, "seed": seed})
              for seed in (1, 2, 3) for t in GLUE_TASKS if seed == 1 or t in SMALL_TASKS]
    return cells


def average_without_wnli(record: dict[str, Any]) -> float:
    return statistics.mean(glue_score(record, t) for t in GLUE_TASKS if t != "wnli")


def best_methods() -> list[str] | None:
    """The BEST_K best methods of phase 1 (not proportional) by the average without WNLI, once all ran;
    once phase 4 has begun, the methods whose seed-2 cells are recorded (the choice made then)."""
    chosen = [m for m in METHODS if m != "proportional" and RECORDS.load(f"methods/{m}/s2") is not None]
    if len(chosen) == BEST_K:
        return chosen
    records = {m: RECORDS.load(f"methods/{m}/s1") for m in METHODS}
    if any(r is None for r in records.values()):
        return None
    ranked = sorted((m for m in METHODS if m != "proportional"), key=lambda m: -average_without_wnli(records[m]))
    return ranked[:BEST_K]


def recommended(target: str) -> list[str] | None:
    """The auxiliary tasks the affinity cell recommends for ``target`` (positive affinity, best first)."""
    rec = RECORDS.load("affinity/s1")
    if rec is None:
        return None
    z = rec["affinity"]["affinity"]
    ranked = sorted((a for a in rec["affinity"]["tasks"] if a != target), key=lambda a: -(z[a][target] or 0.0))
    return [a for a in ranked if (z[a][target] or 0.0) > 0][:RECOMMEND_K]


def dynamic_cells() -> list[Cell]:
    """Phases 4 and 5: known once phase 1 / the affinity cell have results (placeholders before)."""
    best = best_methods()
    methods = ["proportional", *(best or [f"best{k + 1}" for k in range(BEST_K)])]
    cells = [Cell(f"methods/{m}/s{seed}", glue_config(GLUE_TASKS, seed, **METHODS.get(m, {})), 4,
                  needs=[f"methods/{x}/s1" for x in METHODS], meta={"method": m, "seed": seed,
                                                                    "pending": best is None and m != "proportional"})
             for seed in (2, 3) for m in methods]
    for t in TARGETS:
        aux = recommended(t)
        cells.append(Cell(f"recommend/{t}/s1", glue_config([t, *(aux or [])], 1), 5, needs=["affinity/s1"],
                          meta={"target": t, "aux": aux, "pending": aux is None}))
    return cells


def cells() -> list[Cell]:
    return static_cells() + dynamic_cells()


# ----------------------------------------------------------------------------- time estimates
def single_seconds() -> dict[str, float]:
    """Each task's 2-epoch single-task wall time (mean of the recorded seeds, else the fallback)."""
    out: dict[str, float] = dict(settings.SINGLE_SECONDS)
    for t in GLUE_TASKS:
        walls = [r["wall_seconds"] for r in BASE_RECORDS.all(f"glue/single/{t}/s").values()]
        if walls:
            out[t] = statistics.mean(walls)
    return out


def estimate(cell: Cell, seconds: dict[str, float]) -> float:
    """Seconds a cell takes on one thread: the tasks' single-task times (they add up in a multi-task
    run: the recorded 7-task run took the sum of its tasks' single runs) scaled by the epochs."""
    tasks = cell.config["tasks"]
    if cell.kind == "affinity":
        k = len(tasks)
        measurements = AFFINITY["budget"] // AFFINITY["every"]
        train = AFFINITY["budget"] * 5 * SECONDS_PER_FORWARD  # a step: ~5 forwards' worth with backward
        return train + measurements * (3 * k + k * (k + 1)) * SECONDS_PER_FORWARD
    return sum(seconds[t] for t in tasks) * cell.config["epochs"] / GLUE_EPOCHS


def _plan_footer(rows: list[PlanRow]) -> list[str]:
    total_todo = sum(r.left for r in rows)  # in cell order, as the estimates were added up
    return [f"\nleft to run: {total_todo / 3600:.1f} h on one thread; with two streams about "
            f"{total_todo / 7200:.1f} h (estimates from the 2-epoch single-task wall times)"]


def keeps_predictions(name: str) -> bool:
    """The cells whose records keep dev predictions (module docstring)."""
    return name.startswith("methods/")


def recorded(name: str) -> bool:
    """The cell's record is there, with its predictions where it keeps them."""
    record = RECORDS.load(name)
    return record is not None and (not keeps_predictions(name) or "predictions" in record)


def _state(cell: Cell) -> str:
    if recorded(cell.name):
        return "done"
    if RECORDS.load(cell.name) is not None:
        return "rerun"
    return "pending" if cell.meta.get("pending") else "todo"


def plan() -> int:
    seconds = single_seconds()
    rows = []
    for c in cells():
        old = RECORDS.load(c.name)
        rows.append(PlanRow(c.name, _state(c), str(c.phase),
                            float(old["wall_seconds"]) if old and not recorded(c.name) else estimate(c, seconds)))
    table = PlanTable(f"{'state':<8} {'phase':<6} {'estimate':>9}  cell",
                      lambda r: f"{r.state:<8} {r.column:<6} {r.seconds / 60:>7.1f} m  {r.name}", _plan_footer)
    print("\n".join(table.lines(rows)))
    return 0


# ----------------------------------------------------------------------------- running
def _lock(name: str) -> Path:
    return lock_file(LOCKS, RECORDS.path(name))


def _claim(cell: Cell, stream: str) -> bool:
    """Create the cell's lock file; a lock of a dead process of this machine is taken over."""
    return claim(_lock(cell.name), stream)


def _train_record(cell: Cell, threads: int | None, run_dir: Path, reuse: bool = True) -> dict[str, Any]:
    """Train the cell into ``run_dir``; a proportional cell (the multi-task model of experiments.run's
    setting) takes the same run from another runner instead where one was made on this machine
    (settings.mt_model_homes; not with ``reuse`` off), and keeps its weights for them
    (smart_distill's teachers)."""
    import mtdnn

    cfg = mtdnn.make_config({**cell.config, "output_dir": str(run_dir), **threads_override(threads)})
    proportional = cell.meta.get("method") == "proportional"
    if proportional and reuse:
        wall, extra = train_or_take(cfg, run_dir, [h for h in settings.mt_model_homes(cell.meta["seed"])
                                                   if h.run_dir != run_dir])
    else:
        wall, extra = train_cell(cfg, run_dir)
    keep = ("epoch", "train_loss", "mixture", "uncertainty_log_variance")
    history = read_history(run_dir)
    record = {"metrics": read_metrics(run_dir), "wall_seconds": round(wall, 1),
              "history": [{k: h[k] for k in keep if k in h} for h in history],
              "config": config_record(cfg), **extra}
    if keeps_predictions(cell.name):
        selected = {t: int(e) for t, e in json.loads((run_dir / "selection.json").read_text())["tasks"].items()}
        record.update(selected={ARM: selected}, evaluations=dev_by_epoch(history),
                      predictions=epoch_predictions(run_dir, {t: {e} for t, e in selected.items()}),
                      commit=commit(), code=code_version())
    if not proportional:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return record


def _affinity_record(cell: Cell, threads: int | None, run_dir: Path, heatmap: Path) -> dict[str, Any]:
    import mtdnn
    from mtdnn.affinity import run_affinity, write_heatmap

    cfg = mtdnn.make_config({**cell.config, "output_dir": str(run_dir), "predict_test": False,
                             **threads_override(threads)})
    t0 = time.perf_counter()
    result = run_affinity(cfg, steps=AFFINITY["budget"], every=AFFINITY["every"],
                          lookahead_lr=AFFINITY["lookahead_lr"])
    wall = time.perf_counter() - t0
    write_heatmap(result, heatmap)
    return {"affinity": result.to_json(), "wall_seconds": round(wall, 1), "config": config_record(cfg)}


def _record(cell: Cell, threads: int | None, check: bool = False) -> dict[str, Any]:
    """Run the cell (into runs/check/interference/ with ``check``: trained, never taken) and return
    its record."""
    say(f"{cell.name} ...")
    run_dir = (CHECK if check else RUNS) / cell.name
    if cell.kind == "affinity":
        heatmap = (CHECK if check else RECORDS.folder) / "affinity.png"
        heatmap.parent.mkdir(parents=True, exist_ok=True)
        record = _affinity_record(cell, threads, run_dir, heatmap)
    else:
        record = _train_record(cell, threads, run_dir, reuse=not check)
    record.update(cell=cell.name, meta=cell.meta, machine=machine(), versions=package_versions(),
                  load_average=load_average(), finished=timestamp(),
                  command=f"python -m experiments.interference --cell {cell.name}")
    say(f"{cell.name}: done ({record['wall_seconds']:.0f} s)")
    return record


def run_cell(cell: Cell, threads: int | None) -> None:
    from mtdnn.run_dir import write_json

    write_json(RECORDS.path(cell.name), _record(cell, threads))


def _ready(cell: Cell) -> bool:
    """The cell can start: it is no placeholder and the cells it waits for are recorded."""
    return not cell.meta.get("pending") and all(RECORDS.load(n) is not None for n in cell.needs)


def run(stream: str, only: str, threads: int | None, poll: float = 60.0) -> int:
    """``--run``: run cells until none is left: the first runnable one no other stream holds; wait while the
    rest wait for cells other streams are running."""
    grid = ClaimedGrid(cells=cells, done=recorded, ready=_ready,
                       lock=_lock, locks=LOCKS, run=lambda c: run_cell(c, threads))
    return work_grid(grid, stream, only, poll)


def one_cell(name: str, threads: int | None) -> int:
    """``--cell``: run the cell unless it is recorded, holding its lock (stream ``cell``); 1 when it
    cannot start (it waits for other cells, or another stream runs it)."""
    cell = {c.name: c for c in cells()}[name]
    if recorded(name):
        return 0
    if not _ready(cell):
        print(f"{name} waits for {', '.join(cell.needs)}")
        return 1
    if not _claim(cell, "cell"):
        print(f"{name} is being run by another stream ({_lock(name)})")
        return 1
    try:
        run_cell(cell, threads)
    finally:
        _lock(name).unlink(missing_ok=True)
    return 0


def check(name: str, threads: int | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``--check``: the cell's record and the cell trained again into runs/check/interference/."""
    from mtdnn.run_dir import write_json

    new = _record({c.name: c for c in cells()}[name], threads, check=True)
    write_json(CHECK / RECORDS.path(name).name, new)
    return RECORDS.load(name), new


# ----------------------------------------------------------------------------- summary
def method_rows() -> dict[str, dict[str, Any]]:
    """row -> per-task mean score, averages, n, wall minutes: every method, the single-task rows."""
    rows: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in RECORDS.all("methods/").values():
        groups.setdefault(r["meta"]["method"], []).append(r)
    singles = list(BASE_RECORDS.all("glue/single/").values())
    groups["single_task_2_epochs"] = singles
    groups[f"single_task_{CONTROL_EPOCHS}_epochs"] = list(RECORDS.all(f"control/single{CONTROL_EPOCHS}/").values())
    for name, recs in groups.items():
        scores = {t: [glue_score(r, t) for r in recs if t in r["metrics"]] for t in GLUE_TASKS}
        row = {t: rounded_mean(v) for t, v in scores.items()}
        full = all(row[t] is not None for t in GLUE_TASKS)
        row |= {"n": max((len(v) for v in scores.values()), default=0),
                "average": rounded_mean([row[t] for t in GLUE_TASKS]) if full else None,
                "average_without_wnli": rounded_mean([row[t] for t in GLUE_TASKS if t != "wnli"]) if full else None,
                "wall_minutes": rounded_mean([r["wall_seconds"] / 60 for r in recs]) if name.startswith(tuple(METHODS)) else None}
        row["sd"] = {t: round(statistics.stdev(v), 2) if len(v) > 1 else None for t, v in scores.items()}
        per_run = [statistics.mean(glue_score(r, t) for t in GLUE_TASKS if t != "wnli") for r in recs
                   if all(t in r["metrics"] for t in GLUE_TASKS)]  # multi-task runs: one average per seed
        row["average_without_wnli_sd"] = round(statistics.stdev(per_run), 2) if len(per_run) > 1 else None
        rows[name] = row
    return rows


def method_differences(labels: dict[str, Any], resamples: int = 1000) -> dict[str, dict[str, Any]]:
    """method -> task -> that method − proportional on the seeds both have recorded with predictions,
    with the paired bootstrap 95% interval over the dev examples (examples.compare_rows); a task
    is left out where a run lacks predictions."""
    by_method: dict[str, dict[int, dict[str, Any]]] = {}
    for r in RECORDS.all("methods/").values():
        if "predictions" in r:
            by_method.setdefault(r["meta"]["method"], {})[int(r["meta"]["seed"])] = r
    reference = by_method.get("proportional", {})
    out: dict[str, dict[str, Any]] = {}
    for method, runs in by_method.items():
        seeds = sorted(set(runs) & set(reference))
        if method == "proportional" or not seeds:
            continue
        for t in GLUE_TASKS:
            c = compare_rows(t, [runs[k] for k in seeds], [reference[k] for k in seeds], ARM, labels, resamples)
            if c is not None:
                out.setdefault(method, {})[t] = {**c, "seeds": seeds}
    return out


def affinity_validation() -> dict[str, Any]:
    """Per target: each auxiliary's affinity and the measured gain of target+auxiliary over target
    alone (its 2-epoch single-task score, mean over seeds); the Spearman correlation of the two."""
    from scipy.stats import spearmanr

    aff = RECORDS.load("affinity/s1")
    single = method_rows().get("single_task_2_epochs", {})
    out: dict[str, Any] = {}
    for t in TARGETS:
        pairs = []
        for a in GLUE_TASKS:
            rec = RECORDS.load(f"pairs/{t}+{a}/s1")
            if a == t or rec is None or aff is None or single.get(t) is None:
                continue
            pairs.append({"aux": a, "affinity": aff["affinity"]["affinity"][a][t],
                          "gain": round(glue_score(rec, t) - single[t], 2)})
        rho = spearmanr([p["affinity"] for p in pairs], [p["gain"] for p in pairs])[0] if len(pairs) > 2 else None
        out[t] = {"pairs": pairs, "spearman": None if rho is None or rho != rho else round(float(rho), 3)}
    return out


def recommend_rows() -> dict[str, Any]:
    """Per target: its score trained with the recommended auxiliaries, with all tasks (proportional,
    seed 1) and alone."""
    rows = method_rows()
    out = {}
    for t in TARGETS:
        rec, all_tasks = RECORDS.load(f"recommend/{t}/s1"), RECORDS.load("methods/proportional/s1")
        out[t] = {"aux": rec["meta"]["aux"] if rec else None, "with_recommended": glue_score(rec, t) if rec else None,
                  "all_tasks": glue_score(all_tasks, t) if all_tasks else None,
                  "alone": rows.get("single_task_2_epochs", {}).get(t)}
    return out


def _cell_text(v: Any, sd: float | None = None) -> str:
    if v is None:
        return "–"
    text = f"{v:.1f}" if isinstance(v, float) else str(v)
    return text if sd is None else f"{text} ± {sd:.1f}"


def tables(differences: dict[str, dict[str, Any]] | None = None) -> str:
    rows = method_rows()
    head = "| row | " + " | ".join(GLUE_TASKS) + " | average | avg. without WNLI | n | wall (min) |"
    lines = ["### Interference: sampling, weighting and PCGrad (GLUE dev, multi-task model without fine-tuning)",
             "", head, "|" + "---|" * (len(GLUE_TASKS) + 5)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell_text(r[t], r["sd"][t]) for t in GLUE_TASKS) + " | "
                     + " | ".join([_cell_text(r["average"]), _cell_text(r["average_without_wnli"], r["average_without_wnli_sd"]),
                                   _cell_text(r["n"]), _cell_text(r["wall_minutes"])]) + " |")
    lines += ["", "Mean ± sd over the seeds where a row has several (n: the most seeds of any task; a multi-task "
              "row's sd of the average is over its runs' own averages). The paired intervals of MT-DNN "
              "against the equal-passes control are the seeds grid's (GLUE section above)."]
    lines += ["", "### Each method − proportional sampling (the same seeds; paired bootstrap 95% interval over dev examples)"]
    if differences:
        lines += ["", "| method | seeds | " + " | ".join(GLUE_TASKS) + " |", "|---|---|" + "---|" * len(GLUE_TASKS)]
    for method, diffs in (differences or {}).items():
        seeds = ",".join(map(str, next(iter(diffs.values()))["seeds"]))
        lines.append(f"| {method} | {seeds} | " + " | ".join(difference_text(diffs.get(t)) for t in GLUE_TASKS) + " |")
    missing = [m for m in METHODS if m != "proportional" and m not in (differences or {})]
    if missing:
        lines += ["", "Not yet paired (their records, or proportional's of the same seeds, keep no per-example "
                  "predictions; `--plan` lists them as `rerun`): " + ", ".join(missing) + "."]
    lines += ["", "### Affinity against the measured gain of target + one auxiliary (Spearman per target)", "",
              "| target | auxiliary: affinity / gain | Spearman |", "|---|---|---|"]
    for t, v in affinity_validation().items():
        pairs = "; ".join(f"{p['aux']} {p['affinity']:+.1e} / {p['gain']:+.1f}" for p in v["pairs"]) or "–"
        lines.append(f"| {t} | {pairs} | {_cell_text(v['spearman'])} |")
    lines += ["", "### Each target with its recommended auxiliaries", "",
              "| target | auxiliaries | with them | all tasks | alone |", "|---|---|---|---|---|"]
    for t, v in recommend_rows().items():
        lines.append(f"| {t} | {','.join(v['aux'] or []) or '–'} | " + " | ".join(
            _cell_text(v[k]) for k in ("with_recommended", "all_tasks", "alone")) + " |")
    return "\n".join(lines)


def summarize() -> int:
    differences = method_differences(load_labels())
    update_summary(SUMMARY, {"interference": {"methods": method_rows(), "against_proportional": differences,
                                              "affinity_validation": affinity_validation(),
                                              "recommended": recommend_rows()}})
    text = tables(differences)
    fill_markers(DOC, BEGIN, END, text)
    if (RECORDS.folder / "affinity.png").is_file():
        shutil.copyfile(RECORDS.folder / "affinity.png", HEATMAP)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(__name__))
