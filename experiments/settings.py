"""The settings the experiment runners share: the encoder and the training budget of the GLUE and
domain-adaptation setting of docs/results.md (``BASE``, the task lists, the training subsets, the
epochs), the configs built from them, and where each runner keeps its records and its runs, so that
a runner can find (and take) a run another runner made (``mt_model_homes``, ``single_task_homes``).

Budget: the embedded all-MiniLM-L6-v2, max_seq_len 128, batch 32, AdamW lr 1e-4 with 10% warm-up
(Adamax at the paper's settings learned too slowly for this small encoder on a short budget, see
docs/results.md); evaluation after the last epoch only; every run keeps its LAST epoch (no
checkpoint choice looks at any evaluation split); large training sets are cut to fixed random
subsets (subset seed 0) listed in GLUE_SUBSETS; domain-adaptation epochs depend only on the
training-set size (da_epochs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.cells import Records, Reusable, Streams

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SUMMARY = RESULTS / "summary.json"      # every runner's summary, one key (or two) each
DOC = ROOT / "docs" / "results.md"      # every runner's tables, between its markers
TASK_FILE = str(HERE / "tasks.yaml")

# where each runner keeps its records (committed) and its runs (weights; not committed)
RECORDS = {"run": Records(RESULTS / "runs"), "interference": Records(RESULTS / "interference"),
           "adapters": Records(RESULTS / "adapters"), "smart_distill": Records(RESULTS / "smart_distill")}
RETRAINED = {"run": Records(RESULTS / "runs" / "retrained"),  # kept models trained again (a fresh clone has no weights)
             "smart_distill": Records(RESULTS / "smart_distill" / "retrained")}
RUN_DIRS = {"run": ROOT / "runs" / "experiments", "interference": ROOT / "runs" / "interference",
            "adapters": ROOT / "runs" / "adapters", "smart_distill": ROOT / "runs" / "experiments" / "smart_distill"}
CHECK_DIRS = ROOT / "runs" / "check"    # --check: a recorded cell trained again, per runner

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
# --stream of the runners whose cells start from the multi-task model or not
MT_STREAMS = Streams("with --run: only the cells that need the multi-task model (mt), or only the others (base)", "all",
                     ("all", "mt", "base"))
MT_CELL = "glue/mt/s1"                  # experiments.run's multi-task model, which fine-tuning cells start from
MT_DIR = str(RUN_DIRS["run"] / MT_CELL)


def da_epochs(n_train: int) -> int:
    """Epochs for a domain-adaptation run, fixed by its training-set size alone (no evaluation split
    is looked at): tiny sets get more passes."""
    return 10 if n_train <= 100 else 5 if n_train <= 1000 else 2 if n_train <= 10000 else 1


def glue_config(tasks: list[str], seed: int, epochs: int = GLUE_EPOCHS, **extra: Any) -> dict[str, Any]:
    """A GLUE run of this setting: ``tasks`` (their training subsets), ``epochs``, evaluated after the
    last one; ``extra`` on top (a method, ``init_from``, teachers, ...)."""
    return {**BASE, "tasks": tasks, "epochs": epochs, "seed": seed, "eval_every": epochs,
            "max_train_examples_per_task": {k: v for k, v in GLUE_SUBSETS.items() if k in tasks}, **extra}


def da_config(data: str, size: str, subset: int, **extra: Any) -> dict[str, Any]:
    """A domain-adaptation run: ``size`` percent of SciTail's or SNLI's training pairs (training
    subset ``subset``, also the seed), the epochs its size gives; ``extra`` on top (``init_from``)."""
    n = DA_COUNTS[data][size]
    epochs = da_epochs(n)
    cfg = {**BASE, "tasks": ["scitail" if data == "scitail" else "snli_da"], "epochs": epochs, "seed": subset,
           "subset_seed": subset, "eval_every": epochs}
    if not (data == "scitail" and size == "100"):
        cfg["max_train_examples"] = n
    return {**cfg, **extra}


def mt_model_homes(seed: int) -> list[Reusable]:
    """Where the multi-task model of this setting trained with ``seed`` may already be kept, each
    with the record of its run. Three runners train exactly this run (their configs are equal:
    tests/test_experiment_cells.py): run (glue/mt, recorded, or retrained by run.ensure_model),
    interference (methods/proportional) and smart_distill (kd/teacher); each takes one the others
    made on this machine (cells.equal_finished_run) instead of training it again."""
    mine = f"glue/mt/s{seed}"
    interference, distill = f"methods/proportional/s{seed}", f"kd/teacher/s{seed}"
    return [Reusable(RUN_DIRS["run"] / mine, RECORDS["run"].path(mine)),
            Reusable(RUN_DIRS["run"] / mine, RETRAINED["run"].path(mine)),
            Reusable(RUN_DIRS["interference"] / interference, RECORDS["interference"].path(interference)),
            Reusable(RUN_DIRS["smart_distill"] / distill, RECORDS["smart_distill"].path(distill))]


def single_task_homes(task: str, seed: int) -> list[Reusable]:
    """Where the single-task model of this setting (run's glue/single/<task>/s<seed>) may already be
    kept, with the record of its run: run's cell, adapters' full-plain twin and smart_distill's plain
    arm train exactly this run (tests/test_experiment_cells.py); each takes one the others made on
    this machine instead of training it again."""
    homes = {"run": f"glue/single/{task}/s{seed}", "adapters": f"adapters/full-plain/{task}/s{seed}",
             "smart_distill": f"smart/single/{task}/plain/s{seed}"}
    return [Reusable(RUN_DIRS[runner] / name, RECORDS[runner].path(name)) for runner, name in homes.items()]


# ----------------------------------------------------------------------------- time estimates (--plan)
# wall seconds of a 2-epoch single-task run on one thread of the 2-core VM of docs/results.md
# (experiments/results/runs), of the 7-task multi-task model, and of a domain-adaptation run:
# (evaluation seconds, seconds per training example and epoch)
SINGLE_SECONDS = {"cola": 50, "sst2": 58, "mrpc": 205, "stsb": 120, "rte": 325, "wnli": 50, "mnli_aux": 275}
MT_SECONDS = 1080
DA_SECONDS = {"scitail": (30.0, 0.036), "snli_da": (110.0, 0.022)}


def estimate_seconds(config: dict[str, Any]) -> float:
    """Seconds a run of ``config`` takes on one thread: its GLUE tasks' single-task times (they add
    up in a multi-task run) scaled by the epochs; a domain-adaptation task by its training examples."""
    total = 0.0
    for task in config["tasks"]:
        base = task.removesuffix("_linear")
        if base in SINGLE_SECONDS:
            total += SINGLE_SECONDS[base] * config["epochs"] / GLUE_EPOCHS
        else:
            evaluation, per_example = DA_SECONDS["scitail" if base == "scitail" else "snli_da"]
            total += evaluation + per_example * config["epochs"] * config.get("max_train_examples", SCITAIL_TRAIN)
    return total


# ----------------------------------------------------------------------------- the seeds grid (glue_seeds)
# training rows of the tasks whose whole training file is here (the full-data point); MNLI has none
FULL_TRAIN = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "rte": 2490, "wnli": 635}
# rows of each task's evaluation splits (MNLI: dev_mismatched), for the cost of an evaluation
EVAL_ROWS = {"cola": 1043, "sst2": 872, "mrpc": 408, "stsb": 1500, "rte": 277, "wnli": 71, "mnli_aux": 9832}
FORWARD_SHARE = 1 / 3     # an evaluated example costs about a third of a trained one (forward only)
SMART_FACTOR = 2.6        # SMART's wall time over plain training (docs/results.md: 2.2-2.9x)
DISTILL_FACTOR = 1.2      # a student's over plain training (the teachers' soft targets once)


def recorded_rows(task: str) -> int:
    """The training rows of the recorded 2-epoch cell behind SINGLE_SECONDS (its subset, or all)."""
    return GLUE_SUBSETS.get(task, FULL_TRAIN.get(task, 0))


def seconds_per_example(task: str) -> float:
    """Seconds per trained example and epoch on one thread, from SINGLE_SECONDS: the recorded
    2-epoch run trained ``recorded_rows`` twice and evaluated its dev split once."""
    return SINGLE_SECONDS[task] / (GLUE_EPOCHS * recorded_rows(task) + FORWARD_SHARE * EVAL_ROWS[task])


def glue_seconds(config: dict[str, Any]) -> float:
    """Seconds on one thread of a GLUE run of ``config`` (any training rows, epochs, evaluations and
    held-out share): per task, seconds per example x (trained rows x epochs + a third of the
    evaluated rows: dev after every evaluated epoch, and the held-out rows with
    ``selection_split: holdout``); a method's factor on top (SMART, distillation)."""
    total = 0.0
    epochs = config["epochs"]
    evaluations = -(-epochs // config.get("eval_every", 1))  # the last epoch is always evaluated
    held = config.get("holdout_fraction", 0.1) if config.get("selection_split") == "holdout" else 0.0
    for task in config["tasks"]:
        base = task.removesuffix("_linear")
        limit = config.get("max_train_examples_per_task", {}).get(task, config.get("max_train_examples"))
        rows = min(limit, FULL_TRAIN.get(base, limit or 0)) if limit else FULL_TRAIN[base]
        evaluated = EVAL_ROWS[base] + held * rows
        total += seconds_per_example(base) * ((1 - held) * rows * epochs + FORWARD_SHARE * evaluated * evaluations)
    factor = SMART_FACTOR if config.get("adv") else DISTILL_FACTOR if config.get("teachers") else 1.0
    return total * factor
