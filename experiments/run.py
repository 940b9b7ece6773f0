"""The experiments of docs/results.md (multi-task learning on GLUE, domain adaptation, the SAN
ablation), one cell at a time, resumably, and their tables.

Every cell is one `mtdnn.train` run on the setting of experiments.settings; its result (metrics,
config, wall time, machine, package versions) is written to experiments/results/runs/<cell>.json as
soon as it finishes, and a cell whose JSON exists is skipped; a cell killed mid-run continues from
its last saved epoch (cells.train_cell). Model weights go to runs/experiments/<cell>/ (not
committed; only the multi-task model keeps its weights, because the fine-tuning and
domain-adaptation cells start from it).

    python -m experiments.run --plan                            # every cell, in run order, done/todo
    python -m experiments.run --cell da/scitail/mtdnn/1/s1      # one cell (trains what it needs first)
    python -m experiments.run --cell da/scitail/mtdnn/1/s1 --check   # train a recorded cell again, compare
    python -m experiments.run --run [--only glue/]              # everything (or a name prefix), in order
    # the whole grid on a 2-core CPU: two streams side by side, one core each
    taskset -c 0 python -m experiments.run --run --stream mt --threads 1 &
    taskset -c 1 python -m experiments.run --run --stream base --threads 1
    python -m experiments.run --summarize    # summary.json, the tables of docs/results.md, the figure
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments import settings
from experiments.cells import (PlanRow, TrainCell, PlanTable, cli, config_record, fill_markers, load_average, machine,
                               package_versions, read_history, read_metrics, say, seconds_left, spread,
                               threads_override, timestamp, train_cell, update_summary)
from experiments.settings import BASE, DA_COUNTS, GLUE_EPOCHS, GLUE_SUBSETS, GLUE_TASKS, MT_CELL, MT_DIR, SMALL_TASKS

STREAMS = settings.MT_STREAMS
SUMMARIZE_HELP = "summary.json, the tables of docs/results.md, docs/domain_adaptation.png"
RECORDS = settings.RECORDS["run"]
RETRAINED = settings.RETRAINED["run"]
RUNS = settings.RUN_DIRS["run"]
CHECK = settings.CHECK_DIRS / "run"
FIGURE = settings.ROOT / "docs" / "domain_adaptation.png"
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


@dataclass
class Cell(TrainCell):
    @property
    def stream(self) -> str:
        """``mt``: the multi-task model and the cells that start from it; ``base``: the others."""
        return "mt" if self.name == MT_CELL or MT_CELL in self.needs else "base"


# ----------------------------------------------------------------------------- the grid
def cells() -> list[Cell]:
    """Every cell, most important first. Cells that need the multi-task model (stream ``mt``) and
    cells that do not (stream ``base``) can run side by side, one process each."""
    # (a) the multi-task model: all GLUE tasks + MNLI (trained on dev_matched)
    out = [Cell(MT_CELL, settings.glue_config(GLUE_TASKS, 1), meta={"kind": "mtdnn_no_finetune"})]
    out += [glue_cell(kind, task, 1) for kind in ["single", "finetune"] for task in GLUE_TASKS]
    # (b) domain adaptation, small sizes first (cheap, and the paper's headline)
    out += [da_cell("scitail", enc, size, subset) for size in ["0.1", "1"] for subset in [1, 2, 3]
            for enc in ["encoder", "mtdnn"]]
    out += [da_cell("scitail", enc, "10", 1) for enc in ["encoder", "mtdnn"]]
    # (c) SAN ablation: linear twins (the SAN side is the matching single-task / SciTail 10% cell)
    out += [_linear_cell(task, 1) for task in ["rte", "mrpc", "mnli_aux"]]
    out.append(Cell("san/scitail_linear/10/s1",
                    {**BASE, "tasks": ["scitail_linear"], "epochs": settings.da_epochs(DA_COUNTS["scitail"]["10"]),
                     "seed": 1, "subset_seed": 1, "max_train_examples": DA_COUNTS["scitail"]["10"]},
                    meta={"kind": "linear", "task": "scitail"}))
    out += [da_cell("snli", enc, "0.1", subset) for subset in [1, 2, 3] for enc in ["encoder", "mtdnn"]]
    # (a) seeds 2 and 3 for the small tasks
    out += [glue_cell(kind, task, seed) for seed in [2, 3] for kind in ["single", "finetune"] for task in SMALL_TASKS]
    out += [da_cell("snli", enc, "1", 1) for enc in ["encoder", "mtdnn"]]
    out += [da_cell("scitail", enc, "100", 1) for enc in ["encoder", "mtdnn"]]
    out += [da_cell("snli", enc, "1", subset) for subset in [2, 3] for enc in ["encoder", "mtdnn"]]
    out += [_linear_cell(task, seed) for seed in [2, 3] for task in ["rte", "mrpc"]]
    return out


def _linear_cell(task: str, seed: int) -> Cell:
    name = f"{task}_linear"
    return Cell(f"san/{name}/s{seed}", {**BASE, "tasks": [name], "epochs": GLUE_EPOCHS, "seed": seed,
                                         "eval_every": GLUE_EPOCHS,
                                         "max_train_examples_per_task": {name: GLUE_SUBSETS.get(task, 10**9)}},
                meta={"kind": "linear", "task": task, "seed": seed})


def glue_cell(kind: str, task: str, seed: int) -> Cell:
    """A single-task cell: from the plain encoder (``single``) or the multi-task model (``finetune``)."""
    mt = kind == "finetune"
    cfg = settings.glue_config([task], seed, **({"init_from": MT_DIR} if mt else {}))
    return Cell(f"glue/{kind}/{task}/s{seed}", cfg, [MT_CELL] if mt else [],
                meta={"kind": kind, "task": task, "seed": seed})


def da_cell(data: str, enc: str, size: str, subset: int) -> Cell:
    """A domain-adaptation cell: from the plain encoder (``encoder``) or the multi-task model (``mtdnn``)."""
    mt = enc == "mtdnn"
    cfg = settings.da_config(data, size, subset, **({"init_from": MT_DIR} if mt else {}))
    return Cell(f"da/{data}/{enc}/{size}/s{subset}", cfg, [MT_CELL] if mt else [],
                meta={"kind": "domain_adaptation", "data": data, "encoder": enc, "size": size,
                      "subset": subset, "train_examples": DA_COUNTS[data][size]})


def _by_name() -> dict[str, Cell]:
    return {c.name: c for c in cells()}


def estimate(cell: Cell) -> float:
    """Seconds on one thread: the recorded wall time, else the tasks' 2-epoch single-task times
    (settings.SINGLE_SECONDS; a domain-adaptation task by its training examples) scaled by the epochs."""
    record = RECORDS.load(cell.name)
    if record is not None:
        return float(record["wall_seconds"])
    return settings.estimate_seconds(cell.config)


# ----------------------------------------------------------------------------- running
def _train(cell: Cell, run_dir: Path, threads: int | None) -> dict[str, Any]:
    """Train one cell into run_dir and return its result record."""
    import mtdnn

    cfg = mtdnn.make_config({**cell.config, "output_dir": str(run_dir), **threads_override(threads)})
    say(f"{cell.name} ...")
    wall, extra = train_cell(cfg, run_dir)  # an attempt that was killed continues from its last saved state
    metrics = read_metrics(run_dir)
    say(f"{cell.name}: {json.dumps(metrics)} ({wall:.0f} s)")
    return {"cell": cell.name, "meta": cell.meta, "metrics": metrics,
            "train_loss": [h["train_loss"] for h in read_history(run_dir)], "wall_seconds": round(wall, 1),
            "machine": machine(), "versions": package_versions(), "load_average": load_average(),
            "finished": timestamp(), "config": config_record(cfg),
            "command": f"python -m experiments.run --cell {cell.name}", **extra}


def ensure_model(name: str, threads: int | None = None) -> None:
    """Make sure the weights of a cell other cells start from are on disk (a fresh clone has the
    cell's JSON but not its weights): train it again if they are missing. A recorded result is never
    overwritten; the retrained model's record goes to retrained/ (its machine, its time)."""
    from mtdnn.run_dir import write_json

    if (RUNS / name / "metrics.json").is_file():
        return
    result = _train(_by_name()[name], RUNS / name, threads)
    if RECORDS.path(name).is_file():
        write_json(RETRAINED.path(name), result)
    else:
        write_json(RECORDS.path(name), result)


def one_cell(name: str, threads: int | None = None) -> int:
    """Run a cell unless its result is recorded (the model it starts from first)."""
    from mtdnn.run_dir import write_json

    cell = _by_name()[name]
    if RECORDS.path(name).is_file():
        return 0
    for dep in cell.needs:
        ensure_model(dep, threads)
    write_json(RECORDS.path(name), _train(cell, RUNS / name, threads))
    if name != MT_CELL:  # keep the multi-task model (others start from it); drop the rest
        shutil.rmtree(RUNS / name / "checkpoints", ignore_errors=True)
    return 0


def check(name: str, threads: int | None = None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Train a cell again into runs/check/run/ (the model it starts from first); its record and
    the new one (also written there; the record is left as it is)."""
    from mtdnn.run_dir import write_json

    cell = _by_name()[name]
    for dep in cell.needs:
        ensure_model(dep, threads)
    new = _train(cell, CHECK / name, threads)
    write_json(CHECK / RECORDS.path(name).name, new)
    return RECORDS.load(name), new


def run(stream: str, only: str, threads: int | None) -> int:
    """Every cell of ``stream`` whose name starts with ``only``, in order (recorded ones are skipped)."""
    for c in cells():
        if c.name.startswith(only) and stream in ("all", c.stream):
            one_cell(c.name, threads)
    return 0


def plan() -> int:
    rows = [PlanRow(c.name, "done" if RECORDS.path(c.name).is_file() else "todo", c.stream, estimate(c))
            for c in cells()]
    table = PlanTable(f"{'state':<6} {'stream':<6} {'minutes':>8}  cell",
                      lambda r: f"{r.state:<6} {r.column:<6} {r.seconds / 60:>8.1f}  {r.name}",
                      lambda rs: ["\nleft to run, per stream (one thread each): " + ", ".join(
                          f"{s} {t / 3600:.1f} h" for s, t in seconds_left(rs).items())
                          + " (done: the recorded time; todo: estimated)"])
    print("\n".join(table.lines(rows)))
    return 0


# ----------------------------------------------------------------------------- summary
Stats = tuple[float, float, int]  # mean, sd, n (cells.spread)
GLUE_LABEL = {"cola": "CoLA (MCC)", "sst2": "SST-2 (acc)", "mrpc": "MRPC (mean of F1, acc)", "stsb": "STS-B (mean of P, S)",
              "rte": "RTE (acc)", "wnli": "WNLI (acc)", "mnli_aux": "MNLI-mm (acc)"}
DA_SIZES = list(settings.DA_SIZES)


def _first_split(metrics: dict[str, Any], task: str, prefer: str | None = None) -> dict[str, float]:
    splits = metrics[task]
    return splits[prefer] if prefer and prefer in splits else next(iter(splits.values()))


def glue_rows(cells: dict[str, dict[str, Any]]) -> dict[str, dict[str, Stats]]:
    """row -> task -> (mean, sd, n) of the task's score (percent)."""
    rows: dict[str, dict[str, list[float]]] = {"single_task": {}, "mtdnn_no_finetune": {}, "mtdnn": {}}
    for name, c in cells.items():
        m = re.fullmatch(r"glue/(single|finetune)/([a-z0-9_]+)/s(\d+)", name)
        if m:
            row = "single_task" if m.group(1) == "single" else "mtdnn"
            rows[row].setdefault(m.group(2), []).append(_first_split(c["metrics"], m.group(2))["score"])
        elif name == "glue/mt/s1":
            for task in c["metrics"]:
                rows["mtdnn_no_finetune"].setdefault(task, []).append(_first_split(c["metrics"], task)["score"])
    return {r: {t: spread(v) for t, v in d.items()} for r, d in rows.items()}


def da_rows(cells: dict[str, dict[str, Any]], split: str = "test") -> dict[str, dict[str, dict[str, Stats]]]:
    """data -> encoder -> size -> (mean, sd, n) of accuracy on `split` (SNLI has no dev split here)."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name, c in cells.items():
        m = re.fullmatch(r"da/(scitail|snli)/(encoder|mtdnn)/([0-9.]+)/s(\d+)", name)
        if not m:
            continue
        task = "scitail" if m.group(1) == "scitail" else "snli_da"
        if split not in c["metrics"][task]:
            continue
        acc = c["metrics"][task][split]["accuracy"]
        out.setdefault(m.group(1), {}).setdefault(m.group(2), {}).setdefault(m.group(3), []).append(acc)
    return {d: {e: {s: spread(v) for s, v in sizes.items()} for e, sizes in encs.items()} for d, encs in out.items()}


def san_rows(cells: dict[str, dict[str, Any]]) -> dict[str, dict[str, Stats]]:
    """task -> head -> (mean, sd, n). SAN side: the single-task GLUE cells of the same seeds and the
    SciTail 10% encoder cell."""
    out: dict[str, dict[str, list[float]]] = {}
    for name, c in cells.items():
        m = re.fullmatch(r"san/([a-z_]+)_linear/(?:10/)?s(\d+)", name)
        if m:
            task = m.group(1)
            key = f"{task}_linear"
            split = "test" if task == "scitail" else None
            out.setdefault(task, {}).setdefault("linear", []).append(_first_split(c["metrics"], key, split)["score"])
        m = re.fullmatch(r"glue/single/(rte|mrpc|mnli_aux)/s(\d+)", name)
        if m and f"san/{m.group(1)}_linear/s{m.group(2)}" in cells:
            out.setdefault(m.group(1), {}).setdefault("san", []).append(_first_split(c["metrics"], m.group(1))["score"])
        if name == "da/scitail/encoder/10/s1":
            out.setdefault("scitail", {}).setdefault("san", []).append(c["metrics"]["scitail"]["test"]["score"])
    return {t: {h: spread(v) for h, v in d.items()} for t, d in out.items()}


def _fmt(x: Stats | None) -> str:
    if x is None:
        return "–"
    mean, sd, n = x
    return f"{mean:.1f} ± {sd:.1f} (n={n})" if n > 1 else f"{mean:.1f}"


def summary(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    g, d, s = glue_rows(cells), da_rows(cells), san_rows(cells)
    return {
        "glue": {row: {t: round(v[0], 2) for t, v in tasks.items()} for row, tasks in g.items()},
        "glue_sd": {row: {t: round(v[1], 2) for t, v in tasks.items() if v[2] > 1} for row, tasks in g.items()},
        "domain_adaptation": {data: {enc: {size: round(v[0], 2) for size, v in sizes.items()}
                                     for enc, sizes in encs.items()} for data, encs in d.items()},
        "domain_adaptation_sd": {data: {enc: {size: round(v[1], 2) for size, v in sizes.items() if v[2] > 1}
                                        for enc, sizes in encs.items()} for data, encs in d.items()},
        "domain_adaptation_dev": {data: {enc: {size: round(v[0], 2) for size, v in sizes.items()}
                                          for enc, sizes in encs.items()}
                                   for data, encs in da_rows(cells, "dev").items()},
        "san_ablation": {t: {h: round(v[0], 2) for h, v in heads.items()} for t, heads in s.items()},
        "san_ablation_sd": {t: {h: round(v[1], 2) for h, v in heads.items() if v[2] > 1} for t, heads in s.items()},
        "units": "percent; GLUE: each task's score (mean of its pair of metrics where it has two) on dev "
                 "(MNLI: dev_mismatched); domain_adaptation: test accuracy (domain_adaptation_dev: SciTail dev "
                 "accuracy); san_ablation: dev score (SciTail 10%: test accuracy); *_sd: standard deviation "
                 "over seeds or training subsets where there are several",
        "cells": sorted(cells),
    }


def _da_table(rows: dict[str, dict[str, dict[str, Stats]]], datasets: dict[str, str]) -> list[str]:
    """Markdown rows of a domain-adaptation table: one line per dataset (labelled) and encoder."""
    lines = ["| data | encoder | " + " | ".join(f"{x}%" for x in DA_SIZES) + " |", "|---|---|" + "---|" * len(DA_SIZES)]
    for data, data_label in datasets.items():
        for enc, label in [("encoder", "MiniLM (plain encoder)"), ("mtdnn", "MT-DNN encoder of (a)")]:
            row = rows.get(data, {}).get(enc, {})
            lines.append(f"| {data_label} | {label} | " + " | ".join(_fmt(row.get(x)) for x in DA_SIZES) + " |")
    return lines


def tables(cells: dict[str, dict[str, Any]]) -> str:
    g, d, s = glue_rows(cells), da_rows(cells), san_rows(cells)
    lines = ["### GLUE dev, single-task vs MT-DNN (score in percent; mean ± sd over seeds where n > 1)", "",
             "| model | " + " | ".join(GLUE_LABEL[t] for t in GLUE_TASKS) + " | average |",
             "|---|" + "---|" * (len(GLUE_TASKS) + 1)]
    names = {"single_task": "single-task fine-tuning", "mtdnn_no_finetune": "MT-DNN, no fine-tuning",
             "mtdnn": "MT-DNN (fine-tuned per task)"}
    for row, label in names.items():
        vals = [g[row].get(t) for t in GLUE_TASKS]
        have = [v[0] for v in vals if v]
        avg = f"{sum(have) / len(have):.1f}" if len(have) == len(GLUE_TASKS) else "–"
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in vals) + f" | {avg} |")
    gains = []
    for t in GLUE_TASKS:
        a, b = g["mtdnn"].get(t), g["single_task"].get(t)
        gains.append(f"{a[0] - b[0]:+.1f}" if a and b else "–")
    lines.append("| gain, MT-DNN − single-task | " + " | ".join(gains) + " | |")
    lines += ["", "### Domain adaptation (test accuracy in percent; mean ± sd over training subsets where n > 1)", ""]
    lines += _da_table(d, {"scitail": "scitail", "snli": "snli"})
    lines += ["", "SciTail dev accuracy of the same runs:", ""]
    lines += _da_table(da_rows(cells, "dev"), {"scitail": "scitail dev"})
    lines += ["", "### SAN vs linear head (single-task from the plain encoder; mean ± sd over seeds where n > 1)", "",
              "| task | SAN | linear |", "|---|---|---|"]
    for t in ["rte", "mrpc", "mnli_aux", "scitail"]:
        heads = s.get(t, {})
        label = {"mnli_aux": "MNLI-mm (acc)", "scitail": "SciTail 10% (test acc)"}.get(t, GLUE_LABEL.get(t, t))
        lines.append(f"| {label} | {_fmt(heads.get('san'))} | {_fmt(heads.get('linear'))} |")
    walls = [c["wall_seconds"] for c in cells.values()]
    machines = sorted({c["machine"] for c in cells.values()})
    threads = sorted({str(c["config"].get("threads") or "default") for c in cells.values()})
    lines += ["", f"{len(cells)} runs; {sum(walls) / 60:.0f} minutes of run time summed over runs "
              f"(torch threads per run: {', '.join(threads)}; the docs say how runs overlapped); machine: " + "; ".join(machines) + "."]
    return "\n".join(lines)


def figure(cells: dict[str, dict[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = da_rows(cells)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, data in zip(axes, ["scitail", "snli"]):
        for enc, label, marker in [("encoder", "MiniLM encoder", "o"), ("mtdnn", "MT-DNN encoder", "s")]:
            row = d.get(data, {}).get(enc, {})
            xs = [x for x in DA_SIZES if x in row]
            if not xs:
                continue
            ax.errorbar([float(x) for x in xs], [row[x][0] for x in xs], yerr=[row[x][1] for x in xs],
                        marker=marker, capsize=4, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("share of training data (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title({"scitail": "SciTail", "snli": "SNLI (subsets of SNLI dev)"}[data])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Domain adaptation: mean ± sd over random training subsets")
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=120)


def summarize() -> int:
    """summary.json's sections of this runner, the tables of docs/results.md, the figure."""
    records = RECORDS.all()
    if not records:
        print("no results yet in", RECORDS.folder)
        return 1
    update_summary(settings.SUMMARY, summary(records))
    text = tables(records)
    fill_markers(settings.DOC, BEGIN, END, text)
    figure(records)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(__name__))
