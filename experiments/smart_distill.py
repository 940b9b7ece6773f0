"""The SMART and distillation experiments of docs/smart-and-distillation.md, one cell at a time,
resumably.

Every cell is one `mtdnn.train` run (or an evaluation of earlier cells); its result (metrics,
robustness, wall time, machine, config) is written to experiments/results/smart_distill/<cell>.json
as soon as it finishes, and a cell whose JSON exists is skipped; a cell killed mid-run continues
from its last saved epoch (cells.train_cell). Weights go to
runs/experiments/smart_distill/<cell>/ and are dropped after the cell, except those of the cells
others start from (the teachers, the smaller student). A fresh clone has the records but not the
weights: a cell that needs a teacher trains it again, its record going to results/smart_distill/
retrained/ (the first one stays), with the dev metrics of the retrained teachers' ensemble; since
results differ across processors by about a seed's spread, the distillation tables are per
machine (``--again`` runs a recorded cell once more on this one). A teacher and a plain single-task
arm train exactly a run other runners make (experiments.run's glue/mt and glue/single,
experiments.interference's proportional method, experiments.adapters' full-plain row): where one of
them keeps that run, made on this machine, the cell copies it instead of training (``take`` in
--plan; the record says ``reused_from``).

    python -m experiments.smart_distill --plan                 # every cell, estimated time, done/todo/take
    python -m experiments.smart_distill --cell smart/single/rte/plain/s1
    python -m experiments.smart_distill --cell smart/single/cola/plain/s3 --check   # train it again, compare
    python -m experiments.smart_distill --run [--only kd/]
    python -m experiments.smart_distill --cell kd/small/plain/s1 --again   # once more on this machine (retrained/)
    python -m experiments.smart_distill --summarize    # tables in docs/results.md, summary.json "smart", "distillation"
    # the whole grid on a 2-core CPU, nothing else running: two streams, one core each
    taskset -c 0 python -m experiments.smart_distill --run --stream single --threads 1 &
    taskset -c 1 python -m experiments.smart_distill --run --stream mt --threads 1

Protocol (that of experiments.settings, so the plain cells match experiments.run's glue/ cells):
the embedded all-MiniLM-L6-v2, max_seq_len 128, batch 32, AdamW lr 1e-4 with 10% warm-up, 2
epochs, the LAST epoch kept, training subsets of 2,000 examples for the large tasks
(settings.GLUE_SUBSETS).

- SMART vs plain single-task on RTE, MRPC, STS-B, CoLA, seeds 1-3 (stream single); SMART in the
  multi-task model (stream mt) against teacher s1, the same run without SMART. SMART: --adv with
  the defaults (inf ball, epsilon 1e-3, step 1e-3, K = 1, noise variance 1e-6, alpha 1).
- Distillation (stream mt): three multi-task teachers (seeds 1-3); a student with the same encoder
  taught by the ensemble and one taught by teacher s1 alone (seeds 1-3 each; kd_alpha 0.5, T 1); the dev
  metrics of the ensemble itself (averaged outputs); a 3-layer student (MiniLM's layers 0, 2, 4,
  cut in code: model/shrink.py) taught by the ensemble, against the same 3-layer model trained
  without teachers; and the inference speed of the 3-layer student against a teacher.
- Robustness: every cell that trains RTE or MRPC also scores their dev sets with the texts perturbed
  (mtdnn/noise.py: adjacent-word swaps 10% and typos 5% of words, and a harder 20% / 10%; seed 0).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import settings
from experiments.cells import (PlanRow, PlanTable, Reusable, Streams, cli, config_record, equal_finished_run,
                               fill_markers, glue_score, load_average, machine, mean_sd, package_versions, read_history,
                               read_metrics, rounded_mean, say, seconds_left, threads_override, timestamp, train_cell,
                               train_or_take, update_summary)
from experiments.settings import GLUE_TASKS, MT_SECONDS, SINGLE_SECONDS, glue_config

RECORDS = settings.RECORDS["smart_distill"]
RETRAINED = settings.RETRAINED["smart_distill"]
SUMMARY = settings.SUMMARY
DOC = settings.DOC
MARKERS = ("<!-- smart-distill:begin -->", "<!-- smart-distill:end -->")
RUNS = settings.RUN_DIRS["smart_distill"]
CHECK = settings.CHECK_DIRS / "smart_distill"
SMALL_ENCODER = RUNS / "encoders" / "minilm-l3"
SMALL_LAYERS = [0, 2, 4]
SINGLE_TASKS = ["rte", "mrpc", "stsb", "cola"]
ROBUST_TASKS = ("rte", "mrpc")
NOISE_LEVELS = {"light": (0.1, 0.05), "heavy": (0.2, 0.1)}  # (swap_rate, typo_rate)
# the --plan estimates: the plain cells' wall seconds (settings.SINGLE_SECONDS, MT_SECONDS) and the
# measured cost of a SMART step (bench/results/smart_cost.json)
SMART_FACTOR = 2.6  # MiniLM, K = 1: 2.58x per step (bench/results/smart_cost.json)
SMALL_FACTOR = 0.55
STREAMS = Streams("with --run: the single-task cells or the multi-task ones (teachers, students, SMART MT)", "all",
                  ("all", "single", "mt"))
SUMMARIZE_HELP = "write the tables to docs/results.md and summary.json keys smart, distillation"
FLAGS = {"again": "with --cell/--run: run cells recorded on another machine again on this one; the first records "
                  "stay, the new ones go to results/smart_distill/retrained/ (the distillation tables are per machine)"}


@dataclass
class Cell:
    name: str
    stream: str
    config: dict[str, Any] = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)
    kind: str = "train"          # train | ensemble | speed
    keep: bool = False           # keep the weights (other cells start from them)
    estimate: float = 0.0        # seconds, for --plan
    meta: dict[str, Any] = field(default_factory=dict)


def _single(task: str, seed: int, smart: bool) -> Cell:
    cfg = glue_config([task], seed, **({"adv": True} if smart else {}))
    arm = "smart" if smart else "plain"
    return Cell(f"smart/single/{task}/{arm}/s{seed}", "single", cfg,
                estimate=SINGLE_SECONDS[task] * (SMART_FACTOR if smart else 1.0),
                meta={"kind": "single", "task": task, "arm": arm, "seed": seed})


def _mt_config(seed: int, **extra: Any) -> dict[str, Any]:
    return glue_config(GLUE_TASKS, seed, **extra)


def _teacher_dirs(seeds: list[int]) -> list[str]:
    return [str(RUNS / f"kd/teacher/s{s}") for s in seeds]


def cells() -> list[Cell]:
    """Every cell, in run order within each stream (the most informative first)."""
    out = [_single(task, seed, smart) for seed in (1, 2, 3) for task in SINGLE_TASKS for smart in (False, True)]
    mt = MT_SECONDS
    teachers = [Cell(f"kd/teacher/s{s}", "mt", _mt_config(s), keep=True, estimate=mt,
                     meta={"kind": "teacher", "seed": s}) for s in (1, 2, 3)]
    ens = [t.name for t in teachers]
    out += teachers
    out.append(Cell("kd/ensemble", "mt", needs=ens, kind="ensemble", estimate=300, meta={"kind": "ensemble"}))
    out.append(Cell("kd/student/ensemble/s1", "mt", _mt_config(1, teachers=_teacher_dirs([1, 2, 3])), needs=ens,
                    estimate=mt * 1.2, meta={"kind": "student", "teachers": 3, "encoder": "minilm-l6", "seed": 1}))
    out += [Cell(f"kd/student/ensemble/s{s}", "mt", _mt_config(s, teachers=_teacher_dirs([1, 2, 3])), needs=ens,
                 estimate=mt * 1.2, meta={"kind": "student", "teachers": 3, "encoder": "minilm-l6", "seed": s})
            for s in (2, 3)]
    out.append(Cell("smart/mt/s1", "mt", _mt_config(1, adv=True), estimate=mt * SMART_FACTOR,
                    meta={"kind": "smart_mt", "seed": 1}))
    out += [Cell(f"kd/student/one/s{s}", "mt", _mt_config(s, teachers=_teacher_dirs([1])), needs=ens[:1],
                 estimate=mt * 1.1, meta={"kind": "student", "teachers": 1, "encoder": "minilm-l6", "seed": s})
            for s in (1, 2, 3)]
    small = {"encoder": str(SMALL_ENCODER)}
    out.append(Cell("kd/small/plain/s1", "mt", _mt_config(1, **small), estimate=mt * SMALL_FACTOR,
                    meta={"kind": "small_plain", "encoder": "minilm-l3"}))
    out.append(Cell("kd/small/student/s1", "mt", _mt_config(1, teachers=_teacher_dirs([1, 2, 3]), **small),
                    needs=ens, keep=True, estimate=mt * SMALL_FACTOR * 1.2,
                    meta={"kind": "student", "teachers": 3, "encoder": "minilm-l3"}))
    out.append(Cell("kd/speed", "mt", needs=["kd/teacher/s1", "kd/small/student/s1"], kind="speed", estimate=120,
                    meta={"kind": "speed"}))
    return out


# ----------------------------------------------------------------------------- evaluation functions
def task_outputs(run_dir: Path, tasks: list[str] | None = None,
                 noise: tuple[float, float] | None = None) -> dict[str, tuple[Any, Any, Any]]:
    """task -> (the run's predictions on the task's first dev split, that split, the task), the texts perturbed
    (``noise``: swap and typo rates, seed 0) or as they are."""
    import mtdnn
    from mtdnn.data.readers import read_split
    from mtdnn.data.tokenized import tokenize_split
    from mtdnn.evaluation import predict
    from mtdnn.noise import perturb_split
    from mtdnn.model.weights import load_model_weights

    run = mtdnn.load_run(run_dir, device="cpu")
    out = {}
    for name in tasks or list(run.tasks):
        task = run.tasks[name]
        split_name = task.selection_split
        if split_name is None or task.head_from is not None:
            continue
        raw = read_split(task, split_name, run.config.get("data_dir") or grid_data_dir(), allow_hub=False)
        if noise is not None:
            raw = perturb_split(raw, 0, *noise)
        split = tokenize_split(task, raw, run.tokenizer, run.max_len, cache_dir=None)
        load_model_weights(run.model, run.dir.weights_for(name))
        preds = predict(run.model, task, split, batch_size=128, device=run.device, pad_id=run.tokenizer.pad_token_id or 0)
        out[name] = (preds, split, task)
    return out


def grid_data_dir() -> Path:
    from mtdnn.data.readers import data_dir_default
    return data_dir_default()


def robustness(run_dir: Path, tasks: list[str]) -> dict[str, dict[str, float]]:
    """Dev accuracy of ``tasks`` (those of RTE/MRPC the run has) clean and under each noise level."""
    from mtdnn.evaluation import score

    wanted = [t for t in ROBUST_TASKS if t in tasks]
    if not wanted:
        return {}
    out: dict[str, dict[str, float]] = {t: {} for t in wanted}
    for level, rates in {"clean": None, **NOISE_LEVELS}.items():
        for name, (preds, split, task) in task_outputs(run_dir, wanted, rates).items():
            out[name][level] = score(task, split, preds)["accuracy"]
    return out


def ensemble_metrics(teacher_dirs: list[Path]) -> dict[str, dict[str, dict[str, float]]]:
    """Dev metrics of the teachers' averaged outputs (probabilities; scores for regression)."""
    import numpy as np

    from mtdnn.evaluation import score
    from mtdnn.records import Predictions

    per_teacher = [task_outputs(d) for d in teacher_dirs]
    metrics = {}
    for name, (_, split, task) in per_teacher[0].items():
        mean = np.mean([t[name][0].outputs for t in per_teacher], axis=0)
        metrics[name] = {task.selection_split: score(task, split, Predictions(mean, task.kind.decide(task, mean, split)))}
    return metrics


def inference_speed(runs: dict[str, Path], repeats: int = 3) -> dict[str, Any]:
    """Seconds to predict the dev sets of RTE, MRPC and STS-B (best of ``repeats``) per run."""
    seconds = {}
    for label, run_dir in runs.items():
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            task_outputs(run_dir, ["rte", "mrpc", "stsb"])
            best = min(best, time.perf_counter() - t0)
        seconds[label] = round(best, 2)
    return seconds


# ----------------------------------------------------------------------------- running cells
def _homes(cell: Cell) -> list[Reusable]:
    """Where other runners may keep the cell's run: a teacher is the multi-task model of the shared
    setting, a plain arm its single-task model (both taken instead of trained where kept)."""
    if cell.meta.get("kind") == "teacher":
        homes = settings.mt_model_homes(cell.meta["seed"])
    elif cell.meta.get("arm") == "plain":
        homes = settings.single_task_homes(cell.meta["task"], cell.meta["seed"])
    else:
        homes = []
    return [h for h in homes if h.run_dir != RUNS / cell.name]


def _taken(cell: Cell) -> bool:
    """Whether the cell's run is kept by another runner on this machine (``--plan``: no time)."""
    import mtdnn

    homes = _homes(cell)
    return bool(homes) and equal_finished_run(mtdnn.make_config(cell.config), homes) is not None


def _train(cell: Cell, threads: int | None, check: bool = False) -> dict[str, Any]:
    """Train the cell (with ``check``: into runs/check/smart_distill/, never taken from another runner)."""
    import mtdnn

    run_dir = (CHECK if check else RUNS) / cell.name
    if cell.config.get("encoder") == str(SMALL_ENCODER) and not (SMALL_ENCODER / "config.json").is_file():
        from mtdnn.model.shrink import shrink_encoder
        shrink_encoder("default", SMALL_LAYERS, SMALL_ENCODER)
    cfg = mtdnn.make_config({**cell.config, "output_dir": str(run_dir), **threads_override(threads)})
    wall, extra = train_cell(cfg, run_dir) if check else train_or_take(cfg, run_dir, _homes(cell))
    return {"metrics": read_metrics(run_dir), "wall_seconds": round(wall, 1),
            "robustness": robustness(run_dir, cfg.tasks), "train_loss": [h["train_loss"] for h in read_history(run_dir)],
            "config": config_record(cfg), **extra}


def _has_weights(name: str) -> bool:
    return (RUNS / name / "metrics.json").is_file() and any((RUNS / name / "checkpoints").glob("epoch-*.safetensors"))


def _ensure_weights(name: str, by_name: dict[str, Cell], threads: int | None) -> None:
    """The weights of a cell others start from are on disk (a fresh clone has its JSON, not its
    weights): train it again if they are missing; a recorded result is never overwritten."""
    if _has_weights(name):
        return
    if not RECORDS.path(name).is_file():
        run_cell(by_name[name], by_name, threads)
        return
    from mtdnn.run_dir import write_json

    say(f"{name}: weights missing, training it again (its record stays; the new one goes to retrained/)")
    write_json(RETRAINED.path(name), _record(by_name[name], threads))


def _retrained_ensemble(teachers: list[str], by_name: dict[str, Cell], threads: int | None) -> None:
    """A student learns from the teachers on disk: where the ensemble's teachers were trained again
    (records in retrained/, another machine's float rounding), record the dev metrics of the ensemble
    it actually learns from beside theirs (the kd/ensemble cell's record in retrained/), unless one
    newer than them is there."""
    from mtdnn.run_dir import write_json

    ensemble = by_name["kd/ensemble"]
    again = [RETRAINED.load(t) for t in ensemble.needs]
    if set(teachers) != set(ensemble.needs) or any(r is None for r in again):
        return
    out = RETRAINED.path(ensemble.name)
    done = RETRAINED.load(ensemble.name)
    if done is not None and done["finished"] >= max(r["finished"] for r in again):
        return
    say("kd/ensemble: the teachers were trained again here: scoring their ensemble (retrained/)")
    write_json(out, _record(ensemble, threads))


def _record(cell: Cell, threads: int | None, check: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    if cell.kind == "ensemble":
        record = {"metrics": ensemble_metrics([RUNS / d for d in cell.needs])}
    elif cell.kind == "speed":
        record = {"inference_seconds": inference_speed({"teacher_l6": RUNS / cell.needs[0],
                                                        "student_l3": RUNS / cell.needs[1]})}
    else:
        record = _train(cell, threads, check)
    record.setdefault("wall_seconds", round(time.perf_counter() - t0, 1))
    return {"cell": cell.name, "meta": cell.meta, **record, "machine": machine(), "versions": package_versions(),
            "load_average": load_average(), "finished": timestamp(),
            "command": f"python -m experiments.smart_distill --cell {cell.name}"}


def run_cell(cell: Cell, by_name: dict[str, Cell], threads: int | None, again: bool = False) -> dict[str, Any]:
    """Run a cell (after the cells it needs) unless its result is recorded; its JSON is written as
    soon as it finishes. ``again`` (``--again``): a cell recorded on another machine runs again on
    this one, its record going to retrained/ (the first one stays), unless one made here is there."""
    from mtdnn.run_dir import write_json

    out = RECORDS.path(cell.name)
    recorded = RECORDS.load(cell.name)
    if recorded is not None and again and recorded.get("machine") != machine():
        out = RETRAINED.path(cell.name)
        recorded = RETRAINED.load(cell.name)
        recorded = recorded if recorded is not None and recorded.get("machine") == machine() else None
    if recorded is not None:
        return recorded
    for dep in cell.needs:
        _ensure_weights(dep, by_name, threads)
    if cell.kind == "train" and cell.config.get("teachers"):
        _retrained_ensemble(cell.needs, by_name, threads)
    say(f"{cell.name} ...")
    record = _record(cell, threads)
    write_json(out, record)
    if cell.kind == "train" and not cell.keep:
        shutil.rmtree(RUNS / cell.name / "checkpoints", ignore_errors=True)
    say(f"{cell.name}: done ({record['wall_seconds']:.0f} s)")
    return record


def _threads(threads: int | None) -> None:
    """torch's threads in this process (the evaluation cells run here)."""
    if threads:
        import torch
        torch.set_num_threads(threads)


def run(stream: str, only: str, threads: int | None, again: bool = False) -> int:
    """``--run``: every cell of ``stream`` whose name starts with ``only``, in order (recorded ones skipped)."""
    _threads(threads)
    all_cells = cells()
    by_name = {c.name: c for c in all_cells}
    for cell in all_cells:
        if cell.name.startswith(only) and stream in ("all", cell.stream):
            run_cell(cell, by_name, threads, again=again)
    return 0


def one_cell(name: str, threads: int | None, again: bool = False) -> int:
    """``--cell``: the cell (after the cells it needs) unless it is recorded."""
    _threads(threads)
    by_name = {c.name: c for c in cells()}
    run_cell(by_name[name], by_name, threads, again=again)
    return 0


def check(name: str, threads: int | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``--check``: the cell's record and the cell trained again into runs/check/smart_distill/
    (an evaluation cell is evaluated again), after the cells it needs."""
    from mtdnn.run_dir import write_json

    _threads(threads)
    by_name = {c.name: c for c in cells()}
    for dep in by_name[name].needs:
        _ensure_weights(dep, by_name, threads)
    new = _record(by_name[name], threads, check=True)
    write_json(CHECK / RECORDS.path(name).name, new)
    return RECORDS.load(name), new


def plan() -> int:
    """One line per cell: done/todo/take, stream, estimated minutes; and each stream's total."""
    rows = [PlanRow(c.name, "done", c.stream, c.estimate) if RECORDS.path(c.name).is_file()
            else PlanRow(c.name, "take", c.stream, 0.0) if _taken(c)
            else PlanRow(c.name, "todo", c.stream, c.estimate) for c in cells()]
    table = PlanTable(None, lambda r: f"{r.state}  {r.column:<6} ~{r.seconds / 60:5.1f} min  {r.name}",
                      lambda rs: [f"stream {s}: ~{t / 3600:.1f} h left (estimates on the 2-core VM, one core per "
                                  f"stream)" for s, t in seconds_left(rs).items()])
    print("\n".join(table.lines(rows)))
    return 0


# ----------------------------------------------------------------------------- summary
# The papers' figures, quoted beside ours (BERT-base and its GLUE dev/test sets; ours: MiniLM-L6 on
# training subsets, 2 epochs): see docs/smart-and-distillation.md for the sources.
PAPER: dict[str, Any] = {
    "smart": {"text": "SMART-BERT (BERT-base, GLUE dev; Jiang et al. 2020, arXiv 1911.03437v5 as transcribed by "
                      "Papers with Code): STS-B 90.0/89.4 Pearson/Spearman, MNLI-m/mm 85.6/86.0. Its BERT-base "
                      "baseline row and its RTE, MRPC and CoLA figures could not be read offline: not quoted.",
              "stsb": [90.0, 89.4], "mnli": [85.6, 86.0]},
    "distillation": {"text": "MT-DNN-KD (BERT-large, GLUE test leaderboard of 1 April 2019; Liu et al. 2019, arXiv "
                             "1904.09482, abstract): GLUE score 83.7, 1.5 above MT-DNN, better on 7 of 9 tasks; its "
                             "teachers are ensembles of 3 multi-task models fine-tuned on MNLI, QQP, RTE and QNLI "
                             "(the other tasks have gold labels only). Per-task figures could not be read offline.",
                     "glue_score": 83.7, "gain_over_mtdnn": 1.5},
}


def _task_row(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A multi-task record's per-task scores, both averages and its wall minutes."""
    if record is None:
        return None
    row: dict[str, Any] = {t: round(glue_score(record, t), 2) for t in GLUE_TASKS if t in record["metrics"]}
    full = all(t in row for t in GLUE_TASKS)
    row["average"] = rounded_mean([row[t] for t in GLUE_TASKS]) if full else None
    row["average_without_wnli"] = rounded_mean([row[t] for t in GLUE_TASKS if t != "wnli"]) if full else None
    row["wall_minutes"] = round(record["wall_seconds"] / 60, 1) if "wall_seconds" in record else None
    return row


def smart_summary() -> dict[str, Any]:
    """SMART against plain training: single-task per task (mean, sd, n over seeds; the gain of the
    means; wall minutes and SMART's time ratio), the multi-task model with and without SMART (teacher
    s1 is the model without), and the dev accuracy of RTE and MRPC clean and perturbed per arm."""
    single: dict[str, Any] = {}
    robust: dict[str, dict[str, dict[str, float | None]]] = {}
    for task in SINGLE_TASKS:
        arms: dict[str, Any] = {}
        for arm in ("plain", "smart"):
            recs = [r for r in (RECORDS.load(f"smart/single/{task}/{arm}/s{s}") for s in (1, 2, 3)) if r is not None]
            arms[arm] = {"score": mean_sd([glue_score(r, task) for r in recs]),
                         "wall_minutes": rounded_mean([r["wall_seconds"] / 60 for r in recs])}
            if task in ROBUST_TASKS:
                robust.setdefault(f"single {arm}", {})[task] = {
                    level: rounded_mean([r["robustness"][task][level] for r in recs if task in r.get("robustness", {})])
                    for level in ("clean", *NOISE_LEVELS)}
        both = arms["plain"]["score"] and arms["smart"]["score"]
        walls = arms["plain"]["wall_minutes"], arms["smart"]["wall_minutes"]
        single[task] = {**arms, "gain": round(arms["smart"]["score"]["mean"] - arms["plain"]["score"]["mean"], 2)
                        if both else None,
                        "time_ratio": round(walls[1] / walls[0], 2) if None not in walls else None}
    mt = {"plain": _task_row(RECORDS.load("kd/teacher/s1")), "smart": _task_row(RECORDS.load("smart/mt/s1"))}
    for arm, name in (("plain", "kd/teacher/s1"), ("smart", "smart/mt/s1")):
        rec = RECORDS.load(name)
        if rec is not None:
            robust[f"multi-task {arm}"] = rec.get("robustness", {})
    return {"single": single, "multi_task": mt, "robustness": robust, "paper": PAPER.get("smart")}


def _kd_rows(load: Any) -> dict[str, Any]:
    """The distillation rows from records ``load(name)`` gives (None: not run): teacher s1, the
    teachers' mean, their ensemble, the students of the ensemble (seed 1 and the seeds' mean), the
    student of teacher s1, the 3-layer model alone and taught by the ensemble; each a _task_row."""
    def mean_row(recs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
        done = [_task_row(r) for r in recs if r is not None]
        if not done:
            return None
        keys = [k for k in done[0] if k != "wall_minutes"]
        return {k: rounded_mean([t[k] for t in done if t.get(k) is not None]) for k in keys} | {
            "n": len(done), "wall_minutes": rounded_mean([t["wall_minutes"] for t in done if t["wall_minutes"] is not None])}

    ensemble = load("kd/ensemble")
    students = [load(f"kd/student/ensemble/s{s}") for s in (1, 2, 3)]
    ones = [load(f"kd/student/one/s{s}") for s in (1, 2, 3)]
    return {"teacher_s1": _task_row(load("kd/teacher/s1")),
            "teachers_mean": mean_row([load(f"kd/teacher/s{s}") for s in (1, 2, 3)]),
            "ensemble": None if ensemble is None else {**_task_row(ensemble), "wall_minutes": None},
            "student_of_ensemble": _task_row(students[0]),
            "students_of_ensemble_mean": mean_row(students),
            "student_of_teacher_s1": _task_row(ones[0]),
            "students_of_teacher_s1_mean": mean_row(ones),
            "small_alone": _task_row(load("kd/small/plain/s1")),
            "small_student_of_ensemble": _task_row(load("kd/small/student/s1"))}


def distillation_summary() -> dict[str, Any]:
    """The distillation table (_kd_rows) once per machine that made records, because results differ
    across processors by about a seed's spread and a student must be read against the teachers
    that taught it: on each machine a cell's run made there (its record, or its record in
    retrained/ when it was trained again there), with the 3-layer student's inference speed-up over
    a 6-layer teacher where measured."""
    records: dict[str, dict[str, dict[str, Any]]] = {}  # machine -> cell -> record
    for name in (c.name for c in cells() if c.name.startswith("kd/")):
        for rec in (RECORDS.load(name), RETRAINED.load((name))):
            if rec is not None:
                records.setdefault(rec.get("machine", "?"), {})[name] = rec
    machines = {}
    for where, recs in records.items():
        speed = recs.get("kd/speed")
        seconds = speed["inference_seconds"] if speed else None
        machines[where] = {"rows": _kd_rows(recs.get), "inference_seconds": seconds,
                           "speedup": round(seconds["teacher_l6"] / seconds["student_l3"], 2) if seconds else None,
                           "finished": max(r.get("finished", "") for r in recs.values())}
    machines = dict(sorted(machines.items(), key=lambda kv: kv[1]["finished"]))  # in the order they were made
    return {"machines": machines, "paper": PAPER.get("distillation")}


def _num(v: Any, fmt: str = ".1f") -> str:
    return "–" if v is None else format(v, fmt)


def _ms(v: dict[str, float] | None) -> str:
    return "–" if v is None else f"{v['mean']:.1f} ± {v['sd']:.1f} ({v['n']})"


def tables(smart: dict[str, Any], kd: dict[str, Any]) -> str:
    cols = [*GLUE_TASKS, "average", "average_without_wnli", "wall_minutes"]
    head = "| row | " + " | ".join(GLUE_TASKS) + " | average | avg. without WNLI | wall (min) |"
    rule = "|" + "---|" * (len(cols) + 1)
    lines = ["### SMART against plain single-task training (GLUE dev; mean ± sd (seeds))", "",
             "| task | plain | SMART | gain | wall plain / SMART (min) | time ratio |", "|---|---|---|---|---|---|"]
    for task, r in smart["single"].items():
        lines.append(f"| {task} | {_ms(r['plain']['score'])} | {_ms(r['smart']['score'])} | {_num(r['gain'], '+.1f')} | "
                     f"{_num(r['plain']['wall_minutes'])} / {_num(r['smart']['wall_minutes'])} | {_num(r['time_ratio'], '.2f')} |")
    if smart.get("paper"):
        lines += ["", f"Paper: {smart['paper']['text']}"]
    lines += ["", "### SMART in the multi-task model (GLUE dev, seed 1)", "", head, rule]
    for arm, r in smart["multi_task"].items():
        lines.append(f"| {arm} | " + (" | ".join(_num(r.get(c)) for c in cols) if r else " | ".join("–" for _ in cols)) + " |")
    lines += ["", "### Robustness: dev accuracy with the texts perturbed (light: 10% word swaps, 5% typos; "
              "heavy: 20%, 10%)", "", "| model | RTE clean | light | heavy | MRPC clean | light | heavy |",
              "|---|---|---|---|---|---|---|"]
    for model, per_task in smart["robustness"].items():
        cells = [_num(per_task.get(t, {}).get(level)) for t in ROBUST_TASKS for level in ("clean", *NOISE_LEVELS)]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    for where, table in kd["machines"].items():
        lines += ["", f"### Multi-task knowledge distillation (GLUE dev; seed 1, or the seeds' mean (n); {where})",
                  "", head, rule]
        for name, r in table["rows"].items():
            label = f"{name} ({r['n']})" if r and "n" in r else name
            lines.append(f"| {label} | " + (" | ".join(_num(r.get(c)) for c in cols) if r else " | ".join("–" for _ in cols)) + " |")
        if table["inference_seconds"]:
            sec = table["inference_seconds"]
            lines += ["", f"Inference (RTE, MRPC and STS-B dev, best of 3): 6-layer teacher {sec['teacher_l6']:.1f} s, "
                          f"3-layer student {sec['student_l3']:.1f} s, {table['speedup']:.2f}x faster."]
    if kd.get("paper"):
        lines += ["", f"Paper: {kd['paper']['text']}"]
    return "\n".join(lines)


def summarize() -> int:
    smart, kd = smart_summary(), distillation_summary()
    update_summary(SUMMARY, {"smart": smart, "distillation": kd})
    text = tables(smart, kd)
    fill_markers(DOC, *MARKERS, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(__name__))
