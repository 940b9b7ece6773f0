"""Extractive question answering in the multi-task setting of docs/results.md: the built-in
``squad11`` (SQuAD v1.1 dev split by articles: the first 40 articles train, the last 8 evaluate)
alone and beside other tasks; three seeds each.

Cells (each one ``mtdnn.train`` run, recorded in experiments/results/qa/<cell>.json), in run order:

- ``squad/alone/s{k}``: squad11 alone;
- ``squad/ner/s{k}``: squad11 with CoNLL-2003 NER as an auxiliary task (``conll03_ner_aux`` of
  experiments/aux_tasks.yaml: trained, never evaluated) on the tagging runner's 3,000 sentences;
- ``squad/glue/s{k}``: squad11 with the seven GLUE tasks of experiments.settings (their training
  subsets, SAN pair heads);
- ``squad/alone4/s{k}``: squad11 alone for 4 epochs, the control with about as many encoder updates
  as beside NER (324 against 350; 2 epochs alone make 162, beside GLUE 988): whether the gain beside
  NER is what NER teaches or more training of the encoder.

Budget (``--plan`` prints the estimate of every cell): the embedded MiniLM (all-MiniLM-L6-v2,
uncased), batch 32, AdamW lr 1e-4, 10% warm-up, **2 epochs** (the control 4), evaluated after the last only and the
**last epoch reported** (``selection: last``): squad11 has no split besides the 8 held-out articles
(1,589 questions), nothing is chosen on them, so an evaluation after the first epoch would only
cost time. **max_seq_len 384** (windows of 384 tokens, stride 96: 1.03 windows
per question) and **a fixed subset of 2,500 of the 8,981 training questions** (QA_TRAIN, subset
seed 0), chosen so that the first three rows fit about 6 hours of one core (the control adds 2.6). Sized from short runs on the
2-core AMD EPYC VM (200 training and 200 held-out questions, 1 epoch, nice -n 10 taskset -c 1
beside two experiment streams, load 5 to 7, so process CPU time rather than wall time): about
0.28 s per trained question and epoch and at most 0.09 s per evaluated question, the same per
question at 256 and 384 tokens (batches are padded to their longest row, and few contexts exceed
256 tokens); all 8,981 questions for 2 epochs would take about 1.5 hours per cell for squad11
alone. The GLUE tasks run at max_seq_len 384 too in ``squad/glue`` (their rows are rarely longer
than 128 tokens, so this changes little).

Records add the per-question answers, exact match and F1 at the kept epoch (experiments.examples),
so that ``--summarize`` gives paired bootstrap intervals over the held-out questions between rows
with the same seeds (experiments.stats.counts_bootstrap).

    python -m experiments.qa --plan
    python -m experiments.qa --cell squad/alone/s1
    taskset -c 0 python -m experiments.qa --run --stream A --threads 1
    python -m experiments.qa --summarize   # summary.json "qa", the table of docs/results.md
"""

from __future__ import annotations

from typing import Any

from experiments import settings
from experiments.cells import Records, Streams, cli, mean_sd, provenance_line, publish
from experiments.examples import question_values, span_entry
from experiments.seed_grid import AUX_FILE, SEEDS, Cell, Grid
from experiments.settings import GLUE_EPOCHS, GLUE_SUBSETS, GLUE_TASKS
from experiments.stats import counts_bootstrap, difference_text, mean_of, seeds_text
from experiments.tagging import NER_TRAIN
from experiments.tagging import SECONDS as TAG_SECONDS

RECORDS = Records(settings.RESULTS / "qa")
RUNS = settings.ROOT / "runs" / "qa"
CHECK = settings.CHECK_DIRS / "qa"
BEGIN, END = "<!-- qa:begin -->", "<!-- qa:end -->"
STREAMS = Streams("with --run: this process's name in the lock files", "A")
SUMMARIZE_HELP = "summary.json 'qa', the table of docs/results.md"

EPOCHS = GLUE_EPOCHS
MAX_LEN = 384
QA_TRAIN = 2500                  # training questions (of 8,981)
BUDGET_HOURS = 8.0
QUESTIONS = {"train": 8981, "dev": 1589}
QUESTION_SECONDS = (0.28, 0.09)  # per trained question and epoch, per evaluated question (module docstring)
ROW_TASKS = {"squad/alone": ["squad11"], "squad/ner": ["squad11", "conll03_ner_aux"],
             "squad/glue": ["squad11", *GLUE_TASKS], "squad/alone4": ["squad11"]}
ROW_EPOCHS = {"squad/alone4": 4}  # the other rows: EPOCHS
ROW_LABELS = {"squad/alone": "squad11 alone", "squad/ner": "squad11 + CoNLL-2003 NER (auxiliary)",
              "squad/glue": "squad11 + the GLUE tasks",
              "squad/alone4": "squad11 alone, 4 epochs (about as many encoder updates as beside NER)"}
AGAINST = {"squad/ner": "squad/alone", "squad/glue": "squad/alone"}
# rows against the control with about as many encoder updates (module docstring)
CONTROLS = {"squad/ner": "squad/alone4"}
METRICS = ("exact", "f1")
PUBLISHED = [{"task": "squad11", "exact": 80.8, "f1": 88.5,
              "system": "BERT-base (110M parameters), fine-tuned on the 87,599 training questions, official dev set",
              "source": "Devlin et al. 2019 (BERT), SQuAD v1.1 dev"}]


# ----------------------------------------------------------------------------- the grid
def qa_config(tasks: list[str], seed: int, epochs: int = EPOCHS) -> dict[str, Any]:
    """A cell's config: the GLUE setting (experiments.settings.BASE) at max_seq_len 384, 2 epochs
    (or ``epochs``) evaluated after the last, which is kept (nothing is chosen on the reported
    articles); squad11 on QA_TRAIN questions, NER on the tagging runner's sentences, the GLUE tasks
    on their subsets."""
    caps = {"squad11": QA_TRAIN, **{t: NER_TRAIN for t in tasks if t.startswith("conll03")}}
    caps.update({t: n for t, n in GLUE_SUBSETS.items() if t in tasks})
    return {**settings.BASE, "task_files": [settings.TASK_FILE, AUX_FILE], "tasks": tasks, "epochs": epochs,
            "seed": seed, "max_seq_len": MAX_LEN, "eval_every": epochs, "selection": "last",
            "max_train_examples_per_task": caps}


def cells() -> list[Cell]:
    return [Cell(f"{row}/s{k}", qa_config(tasks, k, ROW_EPOCHS.get(row, EPOCHS)), "squad11", meta={"row": row, "seed": k})
            for row, tasks in ROW_TASKS.items() for k in SEEDS]


def seconds(cell: Cell) -> float:
    """Seconds on one thread: squad11's trained and evaluated questions (evaluated after the last
    epoch and once more for the kept epoch's predictions), NER's trained sentences
    (experiments.tagging's rates), the GLUE tasks from the GLUE time table."""
    cfg = cell.config
    train, evaluate = QUESTION_SECONDS
    questions = min(cfg["max_train_examples_per_task"].get("squad11", QUESTIONS["train"]), QUESTIONS["train"])
    total = train * questions * cfg["epochs"] + evaluate * QUESTIONS["dev"] * (-(-cfg["epochs"] // cfg["eval_every"]) + 1)
    for task in cfg["tasks"]:
        if task.startswith("conll03"):
            total += TAG_SECONDS["conll03"][0] * cfg["max_train_examples_per_task"][task] * cfg["epochs"]
    glue = [t for t in cfg["tasks"] if t in GLUE_TASKS]
    if glue:
        total += settings.glue_seconds({**cfg, "tasks": glue})
    return total


GRID = Grid("qa", cells, RECORDS, RUNS, CHECK, span_entry, seconds, BUDGET_HOURS)


# ----------------------------------------------------------------------------- summary
def _entry(record: dict[str, Any]) -> dict[str, Any] | None:
    return record.get("predictions", {}).get("squad11", {}).get("dev")


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]], resamples: int = 1000) -> dict[str, Any] | None:
    """Row A − row B in exact match and F1 over the seeds both have, each with the paired
    bootstrap interval over the held-out questions; None without both rows' per-question scores
    of the same questions."""
    seeds = sorted({r["meta"]["seed"] for r in a} & {r["meta"]["seed"] for r in b})
    ra = [r for r in a if r["meta"]["seed"] in seeds]
    rb = [r for r in b if r["meta"]["seed"] in seeds]
    entries = [_entry(r) for r in ra + rb]
    if not seeds or any(e is None for e in entries) or len({e["questions"] for e in entries}) != 1:  # type: ignore[index]
        return None
    out: dict[str, Any] = {"seeds": seeds}
    for metric in METRICS:
        va = [question_values(_entry(r), metric) for r in ra]  # type: ignore[arg-type]
        vb = [question_values(_entry(r), metric) for r in rb]  # type: ignore[arg-type]
        out[metric] = counts_bootstrap(va, vb, mean_of, resamples=resamples).as_record()
    return out


def summary(records: dict[str, dict[str, Any]], resamples: int = 1000) -> dict[str, Any]:
    """row -> exact match and F1 mean/sd/n over seeds; differences against squad11 alone with the
    paired bootstrap over the held-out questions; the published figures."""
    by_row: dict[str, list[dict[str, Any]]] = {}
    for r in records.values():
        by_row.setdefault(r["meta"]["row"], []).append(r)
    rows = {row: {**{m: mean_sd([float(r["metrics"]["squad11"]["dev"][m]) for r in rs]) for m in METRICS},
                  "seeds": sorted(r["meta"]["seed"] for r in rs),
                  "wall_minutes": round(sum(float(r["wall_seconds"]) for r in rs) / len(rs) / 60, 1)}
            for row, rs in sorted(by_row.items(), key=lambda kv: list(ROW_LABELS).index(kv[0]))}
    def differences(pairs: dict[str, str]) -> dict[str, Any]:
        out = {}
        for row, against in pairs.items():
            if row in by_row and against in by_row:
                c = compare(by_row[row], by_row[against], resamples)
                if c is not None:
                    out[row] = {**c, "against": against}
        return out

    return {"rows": rows, "differences": differences(AGAINST), "controls": differences(CONTROLS), "published": PUBLISHED,
            "machines": sorted({r["machine"] for r in records.values()}),
            "code": sorted({r.get("code", "unknown") for r in records.values()}),
            "units": "percent: SQuAD v1.1 exact match and F1 on the 8 held-out articles (1,589 questions) after the "
                     "last epoch (nothing chosen on them); wall_minutes: a cell's mean wall time; differences: row − squad11 alone, same seeds, with the "
                     "paired bootstrap 95% interval over questions and its verdict; controls: row − squad11 alone with about as "
                     "many encoder updates (4 epochs), the same",
            "cells": sorted(records)}


def tables(s: dict[str, Any]) -> str:
    if not s["cells"]:
        return "Not run yet: no records in experiments/results/qa/ (`python -m experiments.qa --plan`)."
    lines = ["| row | EM | F1 | − alone: EM | − alone: F1 | wall (min) |", "|---|---|---|---|---|---|"]
    for row, r in s["rows"].items():
        d = s["differences"].get(row, {})
        lines.append(f"| {ROW_LABELS.get(row, row)} | {seeds_text(r['exact'])} | {seeds_text(r['f1'])} | "
                     f"{difference_text(d.get('exact'))} | {difference_text(d.get('f1'))} | {r['wall_minutes']:.1f} |")
    for p in s["published"]:
        lines.append(f"| published: {p['system']} | {p['exact']:.1f} | {p['f1']:.1f} | – | – | – ({p['source']}) |")
    lines += ["", "Wall: mean minutes of a cell on one thread (one core of the machine below)."]
    if s.get("controls"):
        lines += ["", "Against the control with about as many encoder updates (same seeds; paired bootstrap 95% interval "
                  "over questions):", "", "| row | against | EM | F1 |", "|---|---|---|---|"]
        for row, d in s["controls"].items():
            lines.append(f"| {ROW_LABELS[row]} | {ROW_LABELS[d['against']]} | {difference_text(d['exact'])} | "
                         f"{difference_text(d['f1'])} |")
    else:
        lines += ["", "Not yet run: squad11 alone for 4 epochs, the control with about as many encoder updates as "
                  "beside NER."]
    lines += ["", provenance_line(s)]
    return "\n".join(lines)


def summarize() -> int:
    s = summary(RECORDS.all())
    return publish(settings.SUMMARY, settings.DOC, "qa", s, tables(s), BEGIN, END)


if __name__ == "__main__":
    raise SystemExit(cli(__name__))
