"""Build experiments/results/summary.json, the tables of docs/results.md and the domain-adaptation
figure from the per-cell JSON files of experiments/run.py. Cells not run yet show as '–'.

    python experiments/summarize.py
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = RESULTS / "runs"
OTHER_RUNNERS_KEYS = ("interference", "adapters", "smart", "distillation")
DOC = HERE.parent / "docs" / "results.md"
FIGURE = HERE.parent / "docs" / "domain_adaptation.png"

GLUE_ORDER = ["cola", "sst2", "mrpc", "stsb", "rte", "wnli", "mnli_aux"]
GLUE_LABEL = {"cola": "CoLA (MCC)", "sst2": "SST-2 (acc)", "mrpc": "MRPC (mean of F1, acc)", "stsb": "STS-B (mean of P, S)",
              "rte": "RTE (acc)", "wnli": "WNLI (acc)", "mnli_aux": "MNLI-mm (acc)"}
DA_SIZES = ["0.1", "1", "10", "100"]
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def load_cells() -> dict[str, dict[str, Any]]:
    return {json.loads(p.read_text())["cell"]: json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))}


def _first_split(metrics: dict[str, Any], task: str, prefer: str | None = None) -> dict[str, float]:
    splits = metrics[task]
    return splits[prefer] if prefer and prefer in splits else next(iter(splits.values()))


def _mean_sd(values: list[float]) -> tuple[float, float, int]:
    if not values:
        return float("nan"), float("nan"), 0
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.mean(values), sd, len(values)


def glue_rows(cells: dict[str, dict[str, Any]]) -> dict[str, dict[str, tuple[float, float, int]]]:
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
    return {r: {t: _mean_sd(v) for t, v in d.items()} for r, d in rows.items()}


def da_rows(cells: dict[str, dict[str, Any]], split: str = "test") -> dict[str, dict[str, dict[str, tuple[float, float, int]]]]:
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
    return {d: {e: {s: _mean_sd(v) for s, v in sizes.items()} for e, sizes in encs.items()} for d, encs in out.items()}


def san_rows(cells: dict[str, dict[str, Any]]) -> dict[str, dict[str, tuple[float, float, int]]]:
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
    return {t: {h: _mean_sd(v) for h, v in d.items()} for t, d in out.items()}


def _fmt(x: tuple[float, float, int] | None) -> str:
    if x is None or x[2] == 0:
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


def _da_table(rows: dict[str, dict[str, dict[str, tuple[float, float, int]]]], datasets: dict[str, str]) -> list[str]:
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
             "| model | " + " | ".join(GLUE_LABEL[t] for t in GLUE_ORDER) + " | average |",
             "|---|" + "---|" * (len(GLUE_ORDER) + 1)]
    names = {"single_task": "single-task fine-tuning", "mtdnn_no_finetune": "MT-DNN, no fine-tuning",
             "mtdnn": "MT-DNN (fine-tuned per task)"}
    for row, label in names.items():
        vals = [g[row].get(t) for t in GLUE_ORDER]
        have = [v[0] for v in vals if v and v[2]]
        avg = f"{sum(have) / len(have):.1f}" if len(have) == len(GLUE_ORDER) else "–"
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in vals) + f" | {avg} |")
    gains = []
    for t in GLUE_ORDER:
        a, b = g["mtdnn"].get(t), g["single_task"].get(t)
        gains.append(f"{a[0] - b[0]:+.1f}" if a and b and a[2] and b[2] else "–")
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


def main() -> int:
    cells = load_cells()
    if not cells:
        print("no results yet in", RUNS)
        return 1
    from mtdnn.run_dir import write_json

    old = json.loads((RESULTS / "summary.json").read_text()) if (RESULTS / "summary.json").is_file() else {}
    # keys other runners own (interference.py writes "interference", adapters.py "adapters",
    # smart_distill.py "smart" and "distillation") are kept
    write_json(RESULTS / "summary.json", {k: v for k, v in old.items() if k in OTHER_RUNNERS_KEYS}
               | summary(cells))
    text = tables(cells)
    if DOC.is_file():
        doc = DOC.read_text()
        if BEGIN in doc and END in doc:
            doc = doc.split(BEGIN)[0] + BEGIN + "\n" + text + "\n" + END + doc.split(END)[1]
            DOC.write_text(doc)
    figure(cells)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
