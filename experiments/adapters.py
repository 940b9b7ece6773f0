"""The adapter experiments of docs/adapters.md: per-task LoRA adapters against full
fine-tuning, on the plain encoder and on the multi-task encoder of docs/results.md, measuring the dev
score, the trainable parameters, the stored megabytes per task, the training time and the peak memory.

Four rows, each on RTE, MRPC and STS-B (seeds 1-3), SST-2 and CoLA (seed 1), on the GLUE setting of
experiments.settings (its BASE config, subsets and 2 epochs), and on SciTail 1% (training subsets
1-3, the domain-adaptation setting):

    full-plain  full fine-tuning of the plain encoder       (= experiments.run's glue/single and da/scitail/encoder cells)
    lora-plain  LoRA on the plain encoder
    lora-mt     LoRA on the multi-task encoder (run's glue/mt/s1: --init-from it --adapter lora)
    full-mt     full fine-tuning of the multi-task encoder (= run's glue/finetune and da/scitail/mtdnn cells)

plus a learning-rate check of lora-plain (1e-4 and 1e-3 besides the grid's 5e-4) on RTE, MRPC and
STS-B, seed 1, run last: it shows how much the fixed LoRA learning rate matters, and picks nothing.
LoRA: rank 8, alpha 16, dropout 0.1 on query and value (mtdnn's defaults), lr 5e-4 fixed in advance
(the LoRA paper's range for RoBERTa-base, Hu et al. 2021: 4e-4 to 5e-4); everything else as the
full fine-tuning cell of the same task.

Every cell trains in a fresh child process (``--worker``), so that its peak resident memory is its
own; its record (metrics, parameters, sizes, times, memory, machine, config) is written to
experiments/results/adapters/<cell>.json as soon as it finishes, and a cell whose JSON exists is
skipped: the runner is resumable (a cell killed mid-run continues from its last saved epoch,
cells.train_cell). The multi-task encoder is experiments.run's glue/mt/s1 model in
runs/experiments/ (trained first by the mt stream if its weights are missing: about 18 minutes).

    python -m experiments.adapters --plan                   # the cells in order, done/todo, estimated time
    python -m experiments.adapters --run [--only adapters/lora-mt/]
    python -m experiments.adapters --cell adapters/lora-plain/cola/s1 [--check]   # one cell (again, compared)
    # the grid on a 2-core CPU: two streams side by side, one core and one thread each
    taskset -c 0 python -m experiments.adapters --run --stream base --threads 1 &
    taskset -c 1 python -m experiments.adapters --run --stream mt --threads 1
    python -m experiments.adapters --summarize              # tables in docs/results.md, summary.json "adapters"
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import settings
from experiments.cells import (PlanRow, PlanTable, cli, config_record, fill_markers, load_average, machine, mean_sd,
                               package_versions, read_history, read_metrics, say, seconds_left, threads_override,
                               timestamp, train_cell, update_summary)
from experiments.run import da_cell, ensure_model, glue_cell
from experiments.settings import MT_CELL, MT_DIR

RECORDS = settings.RECORDS["adapters"]
RUNS = settings.RUN_DIRS["adapters"]
CHECK = settings.CHECK_DIRS / "adapters"
BASE_RECORDS = settings.RECORDS["run"]   # experiments.run's records (the full fine-tuning twins)
SUMMARY = settings.SUMMARY
DOC = settings.DOC
BEGIN, END = "<!-- adapters:begin -->", "<!-- adapters:end -->"

TASKS = ["rte", "mrpc", "stsb", "sst2", "cola"]
SMALL = ["rte", "mrpc", "stsb"]  # 3 seeds
SCITAIL = "scitail1"  # SciTail, 1% of its training pairs (236), subsets 1-3
LORA_LR = 5e-4
LORA: dict[str, Any] = {"adapter": "lora", "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.1,
                        "lora_targets": ["query", "value"], "lr": LORA_LR}
LR_CHECK = [1e-4, 1e-3]
ROWS = {  # row -> (method, encoder, label)
    "full-plain": ("full", "plain", "full fine-tuning, plain encoder"),
    "lora-plain": ("lora", "plain", "LoRA, plain encoder"),
    "lora-mt": ("lora", "mt", "LoRA, MT-DNN encoder"),
    "full-mt": ("full", "mt", "full fine-tuning, MT-DNN encoder (the MT-DNN row)"),
}
# time estimates for --plan: a LoRA cell takes this share of its full fine-tuning twin (a guess
# until measured: the frozen weights need no weight gradients and no optimiser update); a fresh
# process spends STARTUP_SECONDS importing torch and loading the encoder
LORA_TIME_SHARE = 0.75
STARTUP_SECONDS = 15.0
STREAMS = settings.MT_STREAMS
SUMMARIZE_HELP = "tables in docs/results.md, summary.json 'adapters'"


@dataclass
class Cell:
    name: str
    config: dict[str, Any]
    stream: str                     # "mt": needs the multi-task encoder; "base": does not
    reference: str                  # experiments.run's cell with the same full fine-tuning config
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the grid
def _cell(row: str, task: str, seed: int, lr: float | None = None) -> Cell:
    method, encoder, _ = ROWS[row]
    if task == SCITAIL:
        base = da_cell("scitail", "mtdnn" if encoder == "mt" else "encoder", "1", seed)
    else:
        base = glue_cell("finetune" if encoder == "mt" else "single", task, seed)
    config = {**base.config, **(LORA if method == "lora" else {})}
    name_row = row
    if lr is not None:
        config["lr"], name_row = lr, f"{row}-lr{lr:g}"
    return Cell(f"adapters/{name_row}/{task}/s{seed}", config, "mt" if encoder == "mt" else "base", base.name,
                meta={"row": name_row, "method": method, "encoder": encoder, "task": task, "seed": seed,
                      "lr": config["lr"]})


def cells() -> list[Cell]:
    """Every cell, in run order: seed 1 of every task (each row's twins side by side), SciTail 1%,
    seeds 2 and 3 of the small tasks, then the learning-rate check."""
    out = [_cell(row, task, 1) for task in TASKS for row in ROWS]
    out += [_cell(row, SCITAIL, s) for s in (1, 2, 3) for row in ROWS]
    out += [_cell(row, task, s) for s in (2, 3) for task in SMALL for row in ROWS]
    out += [_cell("lora-plain", task, 1, lr) for lr in LR_CHECK for task in SMALL]
    return out


def estimate(cell: Cell) -> float:
    """Seconds on one thread: the recorded wall time of experiments.run's twin cell (else
    settings.estimate_seconds), times LORA_TIME_SHARE for LoRA, plus the child process's start."""
    ref = BASE_RECORDS.load(cell.reference)
    seconds = ref["wall_seconds"] if ref is not None else settings.estimate_seconds(cell.config)
    return seconds * (LORA_TIME_SHARE if cell.meta["method"] == "lora" else 1.0) + STARTUP_SECONDS


def _plan_footer(rows: list[PlanRow]) -> list[str]:
    """Hours left per stream (a stream with nothing left is not listed: every estimate is > 0)."""
    streams = {s: t for s, t in seconds_left(rows).items() if t > 0}
    mt_missing = not (Path(MT_DIR) / "metrics.json").is_file()
    if mt_missing:
        streams["mt"] = streams.get("mt", 0.0) + settings.MT_SECONDS
    return ["\nleft to run, per stream (one thread each): " + ", ".join(
        f"{s} {t / 3600:.1f} h" for s, t in sorted(streams.items())) + f"; {sum(streams.values()) / 3600:.1f} h "
        f"in all{' (mt includes training the multi-task model, whose weights are missing)' if mt_missing else ''}",
        f"estimates: experiments.run's recorded wall times of the same full fine-tuning cells; LoRA cells "
        f"{LORA_TIME_SHARE:g} of those (a guess until measured), plus {STARTUP_SECONDS:g} s start-up each"]


def plan() -> int:
    rows = [PlanRow(c.name, "todo" if RECORDS.load(c.name) is None else "done", c.stream, estimate(c)) for c in cells()]
    table = PlanTable(f"{'state':<6} {'stream':<6} {'estimate':>9}  cell",
                      lambda r: f"{r.state:<6} {r.column:<6} {r.seconds / 60:>7.1f} m  {r.name}", _plan_footer)
    print("\n".join(table.lines(rows)))
    return 0


# ----------------------------------------------------------------------------- one cell (child process)
def _rss_mb() -> float:
    """Peak resident memory of this process's own memory so far: Linux's VmHWM (KiB), the high-water
    mark of the memory the process has since its exec. Not ru_maxrss, which keeps the peak of the
    process it was forked from (the runner that started the cell: the mt stream's runner trains the
    multi-task model itself, and its 3 GB peak would be every cell's). Elsewhere: ru_maxrss."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sizes(method: str, run_dir: Path, task: str) -> dict[str, Any]:
    """Trainable and stored parameters of the task and its stored bytes: LoRA from parameters.json
    (adapter + head); full fine-tuning from the kept checkpoint (the whole encoder + the head, which
    all train and which a per-task copy stores)."""
    if method == "lora":
        report = json.loads((run_dir / "parameters.json").read_text())
        t = report["tasks"][task]
        return {"trainable": t["trainable"], "stored": t["stored"], "stored_bytes": t["stored_bytes"],
                "encoder_parameters": report["encoder"]["parameters"]}
    from safetensors.torch import load_file

    epoch = json.loads((run_dir / "selection.json").read_text())["tasks"][task]
    state = load_file(str(run_dir / "checkpoints" / f"epoch-{epoch}.safetensors"))
    mine = [v for k, v in state.items() if k.startswith(("encoder.", f"heads.{task}."))]
    encoder = sum(v.numel() for k, v in state.items() if k.startswith("encoder."))
    n = sum(v.numel() for v in mine)
    return {"trainable": n, "stored": n, "stored_bytes": sum(v.numel() * v.element_size() for v in mine),
            "encoder_parameters": encoder}


def _scores(metrics: dict[str, Any], task: str) -> dict[str, float]:
    """The cell's score: GLUE: the dev score (mean of a task's two metrics where it has two);
    SciTail: test accuracy (dev accuracy alongside)."""
    splits = metrics[task]
    if task == "scitail":
        return {"score": splits["test"]["accuracy"], "dev_score": splits["dev"]["accuracy"]}
    first = next(iter(splits.values()))["score"]
    return {"score": first, "dev_score": first}


def _record(cell: Cell, cfg: Any, run_dir: Path, wall: float, rss_start: float) -> dict[str, Any]:
    import torch

    task = cfg.tasks[0]
    metrics, history = read_metrics(run_dir), read_history(run_dir)
    ref = BASE_RECORDS.load(cell.reference)
    reference = _scores(ref["metrics"], task)["score"] if ref is not None else None
    return {"cell": cell.name, "meta": cell.meta, "metrics": metrics, **_scores(metrics, task),
            **_sizes(cell.meta["method"], run_dir, task),
            "reference_cell": cell.reference, "reference_score": reference,
            "wall_seconds": round(wall, 1), "train_seconds": round(sum(h["train_seconds"] for h in history), 2),
            "peak_rss_mb": round(_rss_mb(), 1), "rss_before_training_mb": round(rss_start, 1),
            "peak_cuda_mb": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                             if torch.cuda.is_available() else None),
            "train_loss": [h["train_loss"] for h in history], "machine": machine(), "versions": package_versions(), "load_average": load_average(), "finished": timestamp(),
            "config": config_record(cfg),
            "command": f"python -m experiments.adapters --cell {cell.name}"}


def _train(cell: Cell, threads: int | None, run_dir: Path) -> dict[str, Any]:
    """Train one cell into ``run_dir`` in this process and return its record."""
    import mtdnn

    rss_start = _rss_mb()
    cfg = mtdnn.make_config({**cell.config, "output_dir": str(run_dir), **threads_override(threads)})
    wall, extra = train_cell(cfg, run_dir)  # an attempt that was killed continues from its last saved state
    return {**_record(cell, cfg, run_dir, wall, rss_start), **extra}


def worker(name: str, threads: int | None) -> int:
    """Train one cell in this (fresh) process and write its record; then drop the run's large files
    (checkpoints, the encoder's weights), keeping adapters, heads and the run's small files (all of
    a GLUE full-plain cell: other runners take it, settings.single_task_homes)."""
    from mtdnn.run_dir import write_json

    cell = {c.name: c for c in cells()}[name]
    run_dir = RUNS / cell.name
    record = _train(cell, threads, run_dir)
    write_json(RECORDS.path(cell.name), record)
    if not (cell.meta["row"] == "full-plain" and cell.reference.startswith("glue/single/")):
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        (run_dir / "encoder" / "model.safetensors").unlink(missing_ok=True)
    # else: the single-task model of experiments.run's setting, which smart_distill's plain arm takes
    # (settings.single_task_homes)
    say(f"{cell.name}: score {record['score']:.2f}, {record['trainable']:,} trainable, "
        f"{record['stored_bytes'] / 1e6:.2f} MB stored, {record['wall_seconds']:.0f} s, peak {record['peak_rss_mb']:.0f} MB")
    return 0


# ----------------------------------------------------------------------------- the grid (parent)
def _run_cells(todo: list[Cell], threads: int | None) -> int:
    """Run ``todo``, each in a child process (after the multi-task model, if one needs it and its
    weights are missing); a failed cell is reported and left for the next run."""
    if any(c.stream == "mt" for c in todo):
        ensure_model(MT_CELL, threads)
    failed = []
    for c in todo:
        say(f"{c.name} ...")
        cmd = [sys.executable, "-m", "experiments.adapters", "--worker", c.name]
        if threads:
            cmd += ["--threads", str(threads)]
        if subprocess.run(cmd, cwd=settings.ROOT).returncode != 0:
            failed.append(c.name)
            print(f"  {c.name} FAILED (left to the next run)", flush=True)
    if failed:
        print(f"{len(failed)} cells failed: {', '.join(failed)}")
    return 1 if failed else 0


def run(stream: str, only: str, threads: int | None) -> int:
    """Run the cells of ``stream`` not done yet."""
    return _run_cells([c for c in cells() if c.name.startswith(only) and stream in ("all", c.stream)
                       and RECORDS.load(c.name) is None], threads)


def one_cell(name: str, threads: int | None) -> int:
    """``--cell``: run the cell unless it is recorded."""
    return _run_cells([c for c in cells() if c.name == name and RECORDS.load(name) is None], threads)


def check(name: str, threads: int | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``--check``: the cell's record and the cell trained again (in this process) into
    runs/check/adapters/ (its memory figures are not the cell's own: not compared)."""
    from mtdnn.run_dir import write_json

    cell = {c.name: c for c in cells()}[name]
    if cell.stream == "mt":
        ensure_model(MT_CELL, threads)
    new = _train(cell, threads, CHECK / name)
    write_json(CHECK / RECORDS.path(name).name, new)
    return RECORDS.load(name), new


# ----------------------------------------------------------------------------- summary
def score_rows(recs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """row -> task -> mean, sd, n of the score over seeds (SciTail: over training subsets)."""
    out: dict[str, dict[str, Any]] = {}
    for row in ROWS:
        for task in [*TASKS, SCITAIL]:
            values = [r["score"] for r in recs.values() if r["meta"]["row"] == row and r["meta"]["task"] == task]
            if values:
                out.setdefault(row, {})[task] = mean_sd(values)
    return out


def _peak_measured(record: dict[str, Any]) -> bool:
    """Whether the record's peak memory is its training's: a peak equal to the value before training
    was the runner's (ru_maxrss inherited through the fork, the records of the mt stream before
    _rss_mb read VmHWM), not a measure of the cell."""
    return record["peak_rss_mb"] > record["rss_before_training_mb"]


def _seed_mean(recs: dict[str, dict[str, Any]], row: str, task: str, key: str) -> float:
    """The mean of ``key`` over the seeds of ``row``'s cells of ``task``."""
    return statistics.mean(r[key] for r in recs.values() if r["meta"]["row"] == row and r["meta"]["task"] == task)


def cost_rows(recs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """row -> the cost of its GLUE cells: trainable parameters and stored MB per task (mean, min,
    max over the tasks, seed 1), training and wall seconds (per task the mean over its seeds, summed
    over the tasks), peak resident memory (max over the seed-1 cells whose peak was measured, None
    if none was)."""
    out: dict[str, dict[str, Any]] = {}
    for row in ROWS:
        rs = [r for r in recs.values()
              if r["meta"]["row"] == row and r["meta"]["seed"] == 1 and r["meta"]["task"] in TASKS]
        if not rs:
            continue
        trainable, mb = [r["trainable"] for r in rs], [r["stored_bytes"] / 1e6 for r in rs]
        out[row] = {"cells": len(rs), "trainable_mean": round(statistics.mean(trainable)),
                    "trainable_min": min(trainable), "trainable_max": max(trainable),
                    "stored_mb_mean": round(statistics.mean(mb), 3),
                    "stored_mb_min": round(min(mb), 3), "stored_mb_max": round(max(mb), 3),
                    # per task the mean over its seeds (the small tasks have 3), summed over the tasks
                    "train_seconds": round(sum(_seed_mean(recs, row, r["meta"]["task"], "train_seconds") for r in rs), 1),
                    "wall_seconds": round(sum(_seed_mean(recs, row, r["meta"]["task"], "wall_seconds") for r in rs), 1),
                    "peak_rss_mb": max((r["peak_rss_mb"] for r in rs if _peak_measured(r)), default=None),
                    "peak_cuda_mb": max((r["peak_cuda_mb"] or 0.0) for r in rs) or None,
                    "encoder_parameters": rs[0]["encoder_parameters"]}
    return out


def lr_rows(recs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """task -> learning rate -> score of lora-plain, seed 1."""
    out: dict[str, dict[str, float]] = {}
    for r in recs.values():
        m = r["meta"]
        if m["method"] == "lora" and m["encoder"] == "plain" and m["seed"] == 1 and m["task"] in SMALL:
            out.setdefault(m["task"], {})[f"{m['lr']:g}"] = round(r["score"], 2)
    return out


def reproduced(recs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The full fine-tuning cells against experiments.run's records of the same config: the scores should agree."""
    pairs = [(r["cell"], r["score"] - r["reference_score"]) for r in recs.values()
             if r["meta"]["method"] == "full" and r["reference_score"] is not None]
    return {"compared": len(pairs), "max_abs_difference": round(max((abs(d) for _, d in pairs), default=0.0), 3),
            "differ": [c for c, d in pairs if abs(d) > 0.01]}


def _fmt(x: dict[str, float] | None) -> str:
    if not x:
        return "–"
    return f"{x['mean']:.1f} ± {x['sd']:.1f}" if x["n"] > 1 else f"{x['mean']:.1f}"


def _fmt_mb(mb: float | None) -> str:
    return "not measured" if mb is None else f"{mb:.0f}"


def tables(recs: dict[str, dict[str, Any]]) -> str:
    scores, costs, lrs = score_rows(recs), cost_rows(recs), lr_rows(recs)
    labels = {"rte": "RTE", "mrpc": "MRPC", "stsb": "STS-B", "sst2": "SST-2", "cola": "CoLA"}
    lines = ["| | " + " | ".join(labels[t] for t in TASKS) + " | average | SciTail 1% (test) |",
             "|---|" + "---|" * (len(TASKS) + 2)]
    for row, (_, _, label) in ROWS.items():
        vals = scores.get(row, {})
        have = [vals[t]["mean"] for t in TASKS if vals.get(t)]
        avg = f"{statistics.mean(have):.1f}" if len(have) == len(TASKS) else "–"
        cols = " | ".join(_fmt(vals.get(t)) for t in TASKS)
        lines.append(f"| {label} | {cols} | {avg} | {_fmt(vals.get(SCITAIL))} |")
    lines += ["", "| | trainable parameters per task | stored MB per task | training time, 5 tasks summed (s; mean of seeds) | "
              "peak resident memory (MB) |", "|---|---|---|---|---|"]
    for row, (_, _, label) in ROWS.items():
        c = costs.get(row)
        if c is None:
            lines.append(f"| {label} | – | – | – | – |")
            continue
        lines.append(f"| {label} | {c['trainable_mean']:,} ({c['trainable_min']:,}–{c['trainable_max']:,}) | "
                     f"{c['stored_mb_mean']:.2f} ({c['stored_mb_min']:.2f}–{c['stored_mb_max']:.2f}) | "
                     f"{c['train_seconds']:.0f} | {_fmt_mb(c['peak_rss_mb'])} |")
    lines += ["", "LoRA's learning rate (plain encoder, seed 1; the grid uses 5e-4):", "",
              "| task | " + " | ".join(f"lr {lr:g}" for lr in sorted([*LR_CHECK, LORA_LR])) + " |",
              "|---|" + "---|" * (len(LR_CHECK) + 1)]
    for task in SMALL:
        row = lrs.get(task, {})
        lines.append(f"| {labels[task]} | " + " | ".join(
            f"{row[f'{lr:g}']:.1f}" if f"{lr:g}" in row else "–" for lr in sorted([*LR_CHECK, LORA_LR])) + " |")
    rep = reproduced(recs)
    machines = sorted({r["machine"] for r in recs.values()})
    lines += ["", f"{len(recs)} runs, {sum(r['wall_seconds'] for r in recs.values()) / 60:.0f} minutes summed; "
              f"full fine-tuning cells against run.py's records of the same config: {rep['compared']} compared, "
              f"largest difference {rep['max_abs_difference']:.2f} points; machine: " + "; ".join(machines) + "."]
    return "\n".join(lines)


def summarize() -> int:
    recs = RECORDS.all()
    if not recs:
        print("no results yet in", RECORDS.folder)
        return 1
    update_summary(SUMMARY, {"adapters": {
        "scores": score_rows(recs), "cost": cost_rows(recs), "lr_check": lr_rows(recs),
        "reproduced": reproduced(recs),
        "units": "score: percent, GLUE dev score (mean of a task's two metrics where it has two), SciTail 1%: "
                 "test accuracy; mean and sd over seeds (training subsets for SciTail); cost: the seed-1 GLUE "
                 "cells of a row: parameters and MB per task (mean, min, max over the 5 tasks), training "
                 "seconds summed (evaluation excluded), peak resident memory of the training process (max)",
        "cells": sorted(recs)}})
    text = tables(recs)
    fill_markers(DOC, BEGIN, END, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(__name__))
