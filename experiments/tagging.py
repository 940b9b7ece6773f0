"""Token tagging in the multi-task setting of docs/results.md: CoNLL-2003 NER alone and beside
other tasks, WNUT-17 alone and with CoNLL-2003 NER as an auxiliary task; three seeds each.

Cells (each one ``mtdnn.train`` run, recorded in experiments/results/tagging/<cell>.json), in run
order, the cheap and most informative first:

- ``ner/alone/s{k}``: CoNLL-2003 NER (``conll03_ner``) alone;
- ``wnut/alone/s{k}``: WNUT-17 (``wnut17``) alone, all 3,394 training sentences;
- ``wnut/ner/s{k}``: WNUT-17 with CoNLL-2003 NER as an auxiliary task (``conll03_ner_aux``);
- ``ner/pos_chunk/s{k}``: CoNLL-2003 NER with CoNLL-2003 part of speech and chunking
  (``conll03_pos_aux``, ``conll03_chunk_aux``) on the same sentences;
- ``ner/glue/s{k}``: CoNLL-2003 NER with the seven GLUE tasks of experiments.settings (their
  training subsets, SAN pair heads), as in the GLUE grid.

The auxiliary tasks (experiments/aux_tasks.yaml) are the built-in CoNLL-2003 tasks with their
training split only: they train, they are never evaluated. Seeds k = 1-3 change the head
initialisation, dropout and data order; the training subsets are the same in every cell (subset
seed 0).

Budget (``--plan`` prints the estimate of every cell): the embedded MiniLM (all-MiniLM-L6-v2,
uncased), max_seq_len 128, batch 32, AdamW lr 1e-4, 10% warm-up, **2 epochs** (the GLUE setting's),
evaluated after each; **CoNLL-2003 tasks train on a fixed subset of 3,000 of the 14,041 training
sentences** (NER_TRAIN), WNUT-17 on all its sentences, the GLUE tasks on their subsets. Each
reported task keeps the epoch with its best dev F1 (``selection: best``); its **test** F1 at that
epoch is reported beside the dev F1. Sized on a 2-core AMD EPYC VM, one thread per stream, from a
short measured run (nice -n 10 taskset -c 1, beside two experiment streams, load 3.4): 0.031 s per
CoNLL training sentence and epoch, 0.0077 s per evaluated sentence (WNUT-17: 0.032 and 0.0085);
the GLUE tasks from the GLUE time table (settings.glue_seconds). The whole grid is about 2.9 hours
of one core (BUDGET_HOURS 3).

Records add each evaluated epoch's scores and the reported task's predicted entities per sentence
at its kept epoch on dev and test (experiments.examples; gold entities once, in
experiments/results/entities.json), so that ``--summarize`` gives paired bootstrap intervals over
test sentences between rows with the same seeds (experiments.stats.counts_bootstrap).

    python -m experiments.tagging --plan
    python -m experiments.tagging --cell ner/alone/s1
    taskset -c 1 python -m experiments.tagging --run --stream B --threads 1
    python -m experiments.tagging --summarize   # summary.json "tagging", the table of docs/results.md
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments import settings
from experiments.cells import Records, Streams, cli, mean_sd, provenance_line, publish
from experiments.examples import load_gold, sentence_counts, tagging_entry
from experiments.seed_grid import AUX_FILE, SEEDS, Cell, Grid
from experiments.settings import GLUE_EPOCHS, GLUE_SUBSETS, GLUE_TASKS
from experiments.stats import counts_bootstrap, difference_text, f1_of_counts, seeds_text

RECORDS = Records(settings.RESULTS / "tagging")
RUNS = settings.ROOT / "runs" / "tagging"
CHECK = settings.CHECK_DIRS / "tagging"
BEGIN, END = "<!-- tagging:begin -->", "<!-- tagging:end -->"
STREAMS = Streams("with --run: this process's name in the lock files", "A")
SUMMARIZE_HELP = "summary.json 'tagging', the table of docs/results.md"

EPOCHS = GLUE_EPOCHS
NER_TRAIN = 3000                 # training sentences of each CoNLL-2003 task (of 14,041)
BUDGET_HOURS = 3.0
# rows of the data (sentences): train, and each evaluation split
ROWS = {"conll03": {"train": 14041, "dev": 3250, "test": 3453}, "wnut17": {"train": 3394, "dev": 1009, "test": 1287}}
# seconds on one thread per training sentence and epoch, and per evaluated sentence (module docstring)
SECONDS = {"conll03": (0.031, 0.0077), "wnut17": (0.032, 0.0085)}
AUX = {"conll03_ner_aux", "conll03_pos_aux", "conll03_chunk_aux"}
# row -> (what it trains beside the reported task, the reported task, the row it is compared with)
ROW_LABELS = {"ner/alone": "CoNLL-2003 NER alone", "ner/pos_chunk": "NER + POS + chunking",
              "ner/glue": "NER + the GLUE tasks", "wnut/alone": "WNUT-17 alone",
              "wnut/ner": "WNUT-17 + CoNLL-2003 NER (auxiliary)"}
AGAINST = {"ner/pos_chunk": "ner/alone", "ner/glue": "ner/alone", "wnut/ner": "wnut/alone"}
PUBLISHED = [{"task": "conll03_ner", "split": "test", "f1": 92.4, "system": "BERT-base (110M parameters), fine-tuned on all 14,041 sentences",
              "source": "Devlin et al. 2019 (BERT), CoNLL-2003 NER test F1"},
             {"task": "wnut17", "split": "test", "f1": 56.5,
              "system": "BERTweet (BERT-base size, pretrained on 850M English tweets), fine-tuned on the "
                        "WNUT-17 training set",
              "source": "Nguyen, Vu and Nguyen 2020 (BERTweet, EMNLP system demonstrations), WNUT-17 entity F1"}]


# ----------------------------------------------------------------------------- the grid
def tagging_config(tasks: list[str], seed: int) -> dict[str, Any]:
    """A cell's config: the GLUE setting (experiments.settings.BASE), 2 epochs evaluated after
    each, each task keeping its best dev epoch; the CoNLL tasks on NER_TRAIN sentences, the GLUE
    tasks on their subsets."""
    caps = {t: NER_TRAIN for t in tasks if t.startswith("conll03")}
    caps.update({t: n for t, n in GLUE_SUBSETS.items() if t in tasks})
    return {**settings.BASE, "task_files": [settings.TASK_FILE, AUX_FILE], "tasks": tasks, "epochs": EPOCHS,
            "seed": seed, "eval_every": 1, "selection": "best", "max_train_examples_per_task": caps}


ROW_TASKS = {"ner/alone": ["conll03_ner"], "wnut/alone": ["wnut17"], "wnut/ner": ["wnut17", "conll03_ner_aux"],
             "ner/pos_chunk": ["conll03_ner", "conll03_pos_aux", "conll03_chunk_aux"],
             "ner/glue": ["conll03_ner", *GLUE_TASKS]}


def cells() -> list[Cell]:
    """Every cell in run order (ROW_TASKS' order, three seeds each)."""
    return [Cell(f"{row}/s{k}", tagging_config(tasks, k), tasks[0], meta={"row": row, "seed": k})
            for row, tasks in ROW_TASKS.items() for k in SEEDS]


def seconds(cell: Cell) -> float:
    """Seconds on one thread: the tagging tasks' trained and evaluated sentences (each evaluation
    split after every epoch, and once more for the kept epoch's predictions), the GLUE tasks from
    the GLUE time table (settings.glue_seconds, evaluated after every epoch)."""
    cfg = cell.config
    total = 0.0
    for task in cfg["tasks"]:
        data = "wnut17" if task == "wnut17" else "conll03" if task.startswith("conll03") else None
        if data is None:
            continue
        train, evaluate = SECONDS[data]
        rows = min(cfg["max_train_examples_per_task"].get(task, ROWS[data]["train"]), ROWS[data]["train"])
        total += train * rows * cfg["epochs"]
        if task not in AUX:
            total += evaluate * (ROWS[data]["dev"] + ROWS[data]["test"]) * (cfg["epochs"] + 1)
    glue = [t for t in cfg["tasks"] if t in GLUE_TASKS]
    if glue:
        total += settings.glue_seconds({**cfg, "tasks": glue})
    return total


GRID = Grid("tagging", cells, RECORDS, RUNS, CHECK, tagging_entry, seconds, BUDGET_HOURS)


# ----------------------------------------------------------------------------- summary
def _counts(record: dict[str, Any], split: str, gold: dict[str, list[str]]) -> np.ndarray | None:
    entry = record.get("predictions", {}).get(record["report"], {}).get(split)
    if entry is None or entry["gold"] not in gold:
        return None
    return sentence_counts(gold[entry["gold"]], entry["entities"])


def _f1(record: dict[str, Any], split: str) -> float | None:
    m = record["metrics"].get(record["report"], {}).get(split)
    return None if m is None else float(m["f1"])


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]], gold: dict[str, list[str]],
            resamples: int = 1000) -> dict[str, Any] | None:
    """Row A − row B in test entity F1 over the seeds both have, with the paired bootstrap interval
    over test sentences; None without the predictions of both rows on the same test sentences."""
    seeds = sorted({r["meta"]["seed"] for r in a} & {r["meta"]["seed"] for r in b})
    ra = [r for r in a if r["meta"]["seed"] in seeds]
    rb = [r for r in b if r["meta"]["seed"] in seeds]
    keys = {r["predictions"].get(r["report"], {}).get("test", {}).get("gold") for r in ra + rb}
    if not seeds or len(keys) != 1:
        return None
    ca, cb = [_counts(r, "test", gold) for r in ra], [_counts(r, "test", gold) for r in rb]
    if any(c is None for c in ca + cb):
        return None
    interval = counts_bootstrap(ca, cb, f1_of_counts, resamples=resamples)  # type: ignore[arg-type]
    return {**interval.as_record(), "seeds": seeds}


def summary(records: dict[str, dict[str, Any]], gold: dict[str, list[str]], resamples: int = 1000) -> dict[str, Any]:
    """row -> {task, test and dev F1 mean/sd/n over seeds}, differences against the row alone
    (AGAINST) with the paired bootstrap over test sentences, the published figures."""
    by_row: dict[str, list[dict[str, Any]]] = {}
    for r in records.values():
        by_row.setdefault(r["meta"]["row"], []).append(r)
    rows = {row: {"task": rs[0]["report"],
                  "test": mean_sd([f for f in (_f1(r, "test") for r in rs) if f is not None]),
                  "dev": mean_sd([f for f in (_f1(r, "dev") for r in rs) if f is not None]),
                  "seeds": sorted(r["meta"]["seed"] for r in rs)}
            for row, rs in sorted(by_row.items(), key=lambda kv: list(ROW_LABELS).index(kv[0]))}
    diffs = {}
    for row, against in AGAINST.items():
        if row in by_row and against in by_row:
            c = compare(by_row[row], by_row[against], gold, resamples)
            if c is not None:
                diffs[row] = {**c, "against": against}
    return {"rows": rows, "differences": diffs, "published": PUBLISHED,
            "machines": sorted({r["machine"] for r in records.values()}),
            "code": sorted({r.get("code", "unknown") for r in records.values()}),
            "units": "entity F1 in percent (conlleval: exact span and type, micro over types); test at the epoch "
                     "each run keeps on dev; differences: row − the reported task alone, same seeds, with the "
                     "paired bootstrap 95% interval over test sentences and its verdict",
            "cells": sorted(records)}


def tables(s: dict[str, Any]) -> str:
    if not s["cells"]:
        return "Not run yet: no records in experiments/results/tagging/ (`python -m experiments.tagging --plan`)."
    lines = ["| row | reported | test F1 | dev F1 | − alone (test), 95% interval |", "|---|---|---|---|---|"]
    for row, r in s["rows"].items():
        d = s["differences"].get(row)
        lines.append(f"| {ROW_LABELS.get(row, row)} | {r['task']} | {seeds_text(r['test'])} | {seeds_text(r['dev'])} | "
                     f"{difference_text(d)} |")
    for p in s["published"]:
        lines.append(f"| published: {p['system']} | {p['task']} | {p['f1']:.1f} | – | – ({p['source']}) |")
    lines += ["", provenance_line(s)]
    return "\n".join(lines)


def summarize() -> int:
    s = summary(RECORDS.all(), load_gold())
    return publish(settings.SUMMARY, settings.DOC, "tagging", s, tables(s), BEGIN, END)


if __name__ == "__main__":
    raise SystemExit(cli(__name__))
