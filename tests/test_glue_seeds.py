"""experiments.glue_seeds: the cells of the seeds grid and their configs, the plan's estimate
against its cap, the summary from hand-made records with predictions (means, sd, bootstrap
verdicts), and a record made by a real (tiny-encoder) cell: commit, code, both selection arms'
epochs and their per-example predictions, the labels stored once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import experiments.examples as ex
import experiments.glue_seeds as gs
from experiments import settings
from experiments.cells import code_version, commit
from experiments.settings import GLUE_TASKS


def _cells() -> dict[str, gs.Cell]:
    return {c.name: c for c in gs.cells()}


def test_every_glue_row_has_three_seeds_of_every_task_with_held_out_selection():
    cells = _cells()
    for k in (1, 2, 3):
        mt = cells[f"mt/s{k}"]
        assert mt.config["seed"] == k and mt.config["tasks"] == GLUE_TASKS and mt.config["epochs"] == 2 and mt.keep
        for t in GLUE_TASKS:  # CoLA, SST-2 and MNLI included
            ft = cells[f"finetune/{t}/m{k}"]
            assert ft.config["init_from"] == str(gs.RUNS / f"mt/s{k}") and ft.needs == [f"mt/s{k}"]
            assert ft.config["seed"] == k and ft.config["epochs"] == 2 and ft.config["tasks"] == [t]
            assert cells[f"single2/{t}/s{k}"].config["epochs"] == 2
            four = cells[f"single4/{t}/s{k}"].config
            assert four["epochs"] == 4 and four["seed"] == k and "init_from" not in four
    glue = [c for c in cells.values() if c.meta.get("row") != "da"]
    for c in glue:
        assert (c.config["selection"], c.config["selection_split"], c.config["eval_every"]) == ("best", "holdout", 1), c.name
        assert c.config["holdout_fraction"] == gs.HOLDOUT
    # the subsets of the grid: the equal-passes control trains on the same rows as the other rows
    assert cells["single4/cola/s2"].config["max_train_examples_per_task"] == {"cola": 2000}


def test_domain_adaptation_rests_on_the_three_multitask_seeds_with_three_subsets_at_every_size():
    cells = _cells()
    for size in ("0.1", "1", "10", "100"):
        for k in (1, 2, 3):
            mt = cells[f"da/scitail/mtdnn/{size}/s{k}"]
            plain = cells[f"da/scitail/encoder/{size}/s{k}"]
            assert mt.config["init_from"] == str(gs.RUNS / f"mt/s{k}") and "init_from" not in plain.config
            assert mt.config["subset_seed"] == plain.config["subset_seed"] == k
            assert {**mt.config, "init_from": None} == {**plain.config, "init_from": None}
    assert "max_train_examples" not in cells["da/scitail/encoder/100/s3"].config
    assert cells["da/scitail/encoder/10/s2"].config["max_train_examples"] == 2360
    assert {c.config["selection"] for c in cells.values() if c.meta.get("row") == "da"} == {"last"}


def test_the_full_data_point_trains_on_every_row_and_is_cut_to_the_cap():
    tasks, cut = gs.full_data_tasks()
    assert set(tasks) | set(cut) == set(settings.FULL_TRAIN) and not set(tasks) & set(cut)
    cells = _cells()
    for t in tasks:
        cfg = cells[f"full/single2/{t}/s1"].config
        assert cfg["max_train_examples_per_task"] == {} and cfg["tasks"] == [t]
        assert cells[f"full/single4/{t}/s1"].config["epochs"] == 4
        assert cells[f"full/finetune/{t}/s1"].config["init_from"] == str(gs.RUNS / "full/mt/s1")
    mt = cells["full/mt/s1"].config
    assert mt["max_train_examples_per_task"] == {"mnli_aux": 2000} and "mnli_aux" in mt["tasks"]
    assert cells["full/smart/mrpc/s1"].config["adv"] is True
    assert cells["full/kd/mrpc/s1"].config["teachers"] == [str(gs.RUNS / "full/mt/s1")]
    assert cells["full/linear/mrpc/s1"].config["tasks"] == ["mrpc_linear"]
    # RTE and WNLI have no cap: their full-data single-task cells are the grid's, run once
    equal = gs.equal_cells(gs.cells())
    assert equal["full/single2/rte/s1"] == "single2/rte/s1" and equal["full/single4/wnli/s1"] == "single4/wnli/s1"


def test_the_plan_estimates_the_whole_grid_under_its_cap_and_says_what_it_cut(capsys):
    total = gs.planned_seconds(gs.cells())
    assert 0 < total <= gs.CAP_HOURS * 3600
    tasks, cut = gs.full_data_tasks()
    # every cut was needed: the grid with the cheapest cut task back exceeds the cap
    if cut:
        assert gs.planned_seconds(gs.grid_cells() + gs.full_cells(tasks + [cut[-1]])) > gs.CAP_HOURS * 3600
    assert gs.plan() == 0
    out = capsys.readouterr().out
    assert f"{total / 3600:.1f} h on one core" in out
    assert ("full-data point cut to" in out) == bool(cut)
    assert all(name in out for name in gs.RECORDS.all() or [c.name for c in gs.cells()])


def test_full_data_estimate_scales_with_rows_and_epochs():
    two = settings.glue_seconds(gs.glue_cell_config(["sst2"], 1, full=True))
    four = settings.glue_seconds(gs.glue_cell_config(["sst2"], 1, 4, full=True))
    sub = settings.glue_seconds(gs.glue_cell_config(["sst2"], 1))
    assert 25 < two / sub < 40 and 1.9 < four / two < 2.1
    # the time table's own cell (2 epochs, the subset, evaluated once) gives the recorded time
    assert settings.glue_seconds(settings.glue_config(["rte"], 1)) == pytest.approx(settings.SINGLE_SECONDS["rte"])


# ----------------------------------------------------------------------------- the summary
def _record(name: str, row: str, task: str, seed: int, epochs: dict[str, dict[str, int]],
            preds: dict[int, np.ndarray], key: str, scores: dict[int, float], held: dict[int, float]) -> dict:
    return {"cell": name, "meta": {"row": row, "task": task, "seed": seed}, "selected": epochs,
            "evaluations": {task: {str(e): {"dev": {"accuracy": s, "score": s}, "holdout": {"score": held[e]}}
                                   for e, s in scores.items()}},
            "predictions": {task: {"dev": {"labels": key, "epochs": {str(e): ex.encode_predictions(p, False)
                                                                      for e, p in preds.items()}}}},
            "metrics": {}, "wall_seconds": 60.0, "machine": "m", "code": "c"}


def test_summary_from_records_with_predictions_gives_means_sd_and_verdicts():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    key = "rte/dev/abc"

    def with_accuracy(acc: float, seed: int) -> np.ndarray:
        p = labels.copy()
        wrong = np.random.default_rng(seed).choice(len(p), int(round((1 - acc) * len(p))), replace=False)
        p[wrong] = 1 - p[wrong]
        return p

    records = {}
    for k, (a2, a4, ft) in enumerate([(0.60, 0.62, 0.80), (0.61, 0.63, 0.82), (0.62, 0.61, 0.81)], start=1):
        for row, acc in (("single2", a2), ("single4", a4), ("finetune", ft), ("mt", a2 + 0.005)):
            p = with_accuracy(acc, 10 * k + len(row))
            score = float((p == labels).mean() * 100)
            # epoch 1 is what dev selection keeps (dev 1 point higher), epoch 2 what held-out selection keeps
            p1 = with_accuracy(acc + 0.01, 10 * k + len(row) + 5)
            records[f"{row}/rte/s{k}"] = _record(f"{row}/rte/s{k}", row, "rte", k, {"holdout": {"rte": 2}, "dev": {"rte": 1}},
                                                 {1: p1, 2: p}, key, {1: float((p1 == labels).mean() * 100), 2: score},
                                                 {1: 50.0, 2: 60.0})
    s = gs.summary(records, {key: labels}, resamples=300)
    rows = s["glue"]["holdout"]["rows"]
    assert rows["finetune"]["rte"] == {"mean": 81.0, "sd": 1.0, "n": 3}
    assert rows["single4"]["rte"] == {"mean": 62.0, "sd": 1.0, "n": 3}
    assert s["glue"]["dev"]["rows"]["single2"]["rte"] == {"mean": 62.0, "sd": 1.0, "n": 3}
    gain = s["glue"]["holdout"]["differences"]["finetune"]["rte"]
    assert gain["verdict"] == "gain" and gain["against"] == "single4" and gain["difference"] == pytest.approx(19.0)
    assert gain["low"] > 0
    near = s["glue"]["holdout"]["differences"]["mt"]["rte"]  # the multi-task model alone: 2 passes
    assert near["verdict"] == "within noise" and near["low"] < 0 < near["high"] and near["against"] == "single2"
    assert "single2" not in s["glue"]["holdout"]["differences"] and "single4" not in s["glue"]["holdout"]["differences"]
    assert s["glue"]["flattery"]["single4"]["rte"] == pytest.approx(1.0)
    text = gs.tables(s)
    assert "| MT-DNN (fine-tuned per task) | – | – | – | – | 81.0 ± 1.0 (n=3) |" in text
    assert "within noise" in text and "gain" in text and "Full data: not run yet." in text
    json.dumps(s)


def test_without_records_the_tables_say_not_run_yet():
    s = gs.summary({}, {})
    assert s["glue"]["holdout"]["rows"] == {} and "Not run yet" in gs.tables(s)


def test_a_row_without_predictions_gets_no_interval():
    rec = _record("single4/rte/s1", "single4", "rte", 1, {"holdout": {"rte": 1}, "dev": {"rte": 1}},
                  {1: np.zeros(4, int)}, "rte/dev/x", {1: 50.0}, {1: 50.0})
    other = {**rec, "cell": "finetune/rte/m1", "meta": {"row": "finetune", "task": "rte", "seed": 1}, "predictions": {}}
    s = gs.summary({"a": rec, "b": other}, {"rte/dev/x": np.zeros(4, int)})
    assert s["glue"]["holdout"]["differences"] == {}


def test_predictions_and_labels_are_compact():
    assert ex.encode_predictions(np.array([0, 2, 1]), False) == "021"
    assert ex.encode_predictions(np.array([0, 12]), False) == [0, 12]
    assert ex.encode_predictions(np.array([1.234567, 2.0]), True) == [1.2346, 2.0]
    assert ex.decode_predictions("021").tolist() == [0, 2, 1]
    a = ex.labels_key("rte", "dev", np.array([0, 1]), ["1", "2"])
    assert a.startswith("rte/dev/") and a != ex.labels_key("rte", "dev", np.array([1, 1]), ["1", "2"])


def test_the_commit_is_recorded_with_a_dirty_mark():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.ROOT, capture_output=True, text=True).stdout.strip()
    assert commit().removesuffix("+dirty") == head
    assert code_version() != "unknown"


# ----------------------------------------------------------------------------- a real cell
def test_a_tiny_cell_records_commit_both_arms_and_predictions(tmp_path, tiny_encoder, monkeypatch):
    from tests.toy_tasks import write_toy_data

    task_file, data_dir = write_toy_data(tmp_path / "toy", n_cls=40, n_reg=30)
    labels_file = tmp_path / "labels.json"
    monkeypatch.setattr(ex, "LABELS", labels_file)
    config = {**settings.BASE, **gs.SELECT, "encoder": tiny_encoder, "task_files": [str(task_file)],
              "data_dir": str(data_dir), "cache_dir": str(tmp_path / "cache"), "tasks": ["toycls", "toyreg"],
              "epochs": 3, "seed": 1, "max_seq_len": 32, "batch_size": 8, "threads": 1}
    cell = gs.Cell("mt/toy", config, meta={"row": "mt", "seed": 1})
    record = gs._train(cell, tmp_path / "run", threads=1)
    assert record["commit"].removesuffix("+dirty") == commit().removesuffix("+dirty") and record["code"]
    assert record["machine"] and record["versions"]
    assert set(record["selected"]) == {"holdout", "dev"}
    assert set(record["evaluations"]["toycls"]) == {"1", "2", "3"}
    assert "holdout" in record["evaluations"]["toycls"]["1"]
    stored = json.loads(labels_file.read_text())
    for task in ("toycls", "toyreg"):
        entry = record["predictions"][task]["dev"]
        assert entry["labels"] in stored and entry["labels"].startswith(f"{task}/dev/")
        for arm in ("holdout", "dev"):
            epoch = str(record["selected"][arm][task])
            assert epoch in entry["epochs"]  # the weights of the dev-chosen epoch were kept aside
            # the predictions give the score the run measured at that epoch
            assert entry["scores"][epoch] == pytest.approx(record["evaluations"][task][epoch]["dev"]["score"], abs=1e-6)
    assert isinstance(record["predictions"]["toycls"]["dev"]["epochs"][str(record["selected"]["dev"]["toycls"])], str)
    reg = record["predictions"]["toyreg"]["dev"]["epochs"][str(record["selected"]["dev"]["toyreg"])]
    assert all(round(v, 4) == v for v in reg) and len(reg) == 8
    # the dev arm never scores below the held-out arm on dev: it chose on dev
    for task in ("toycls", "toyreg"):
        assert gs._score_of(record, task, "dev") >= gs._score_of(record, task, "holdout")
    assert not (tmp_path / "run" / "epochs").exists()
    # a second record of the same split adds no labels
    before = labels_file.read_text()
    ex.store_labels(record["predictions"]["toycls"]["dev"]["labels"], np.zeros(8, int), False)
    assert labels_file.read_text() == before
    assert Path(tmp_path / "run" / "metrics.json").is_file()


def test_docs_give_the_plans_estimate_and_its_cut():
    text = (settings.ROOT / "docs" / "results.md").read_text()
    total = gs.planned_seconds(gs.cells())
    assert f"**{total / 3600:.1f} hours of one core, about {total / 7200:.1f} hours on two" in text
    tasks, cut = gs.full_data_tasks()
    assert all(t.upper().replace("COLA", "CoLA").replace("STSB", "STS-B") in text for t in cut + tasks if t != "sst2")
    assert "<!-- glue-seeds:begin -->" in text and "<!-- glue-seeds:end -->" in text


def test_the_goals_are_measured_with_what_each_falls_short_by():
    """goal_check reads the held-out arm: every task but WNLI at or above its equal-passes control,
    the average over those six at least +3, RTE at least 68, SciTail 0.1% and 1% at least +15 and +8."""
    from experiments.glue_seeds import goal_check

    def d(x: float) -> dict[str, object]:
        return {"difference": x, "low": x - 1, "high": x + 1, "verdict": "gain" if x > 1 else "within noise",
                "against": "single4"}

    diffs = {"cola": d(-1.9), "sst2": d(-1.3), "mrpc": d(2.5), "stsb": d(2.4), "rte": d(7.3), "mnli_aux": d(4.0),
             "wnli": d(-30.0)}
    glue = {"holdout": {"differences": {"finetune": diffs}, "rows": {"finetune": {"rte": {"mean": 64.4, "sd": 0.9, "n": 3}}}}}
    da = {"scitail": {"0.1": {"difference": d(16.0)}, "1": {"difference": d(5.5)}}}
    goals = {g["goal"].split(":")[0]: g for g in goal_check(glue, da)}
    assert "wnli" not in goals
    assert goals["cola"]["met"] is False and goals["cola"]["short_by"] == 1.9
    assert goals["mrpc"]["met"] is True and goals["mrpc"]["short_by"] == 0.0
    average = goals["average over the six"]
    assert average["measured"] == round((-1.9 - 1.3 + 2.5 + 2.4 + 7.3 + 4.0) / 6, 2) and average["short_by"] == round(3 - 2.1667, 2)
    assert goals["rte"]["measured"] == 64.4 and goals["rte"]["short_by"] == 3.6 and not goals["rte"]["difference"]
    assert goals["scitail 0.1%"]["met"] and goals["scitail 1%"]["short_by"] == 2.5


def test_a_twin_task_record_reads_under_its_task():
    from experiments.glue_seeds import as_task

    r = {"meta": {"row": "linear", "task": "mrpc"}, "selected": {"holdout": {"mrpc_linear": 2}, "dev": {"mrpc_linear": 1}},
         "evaluations": {"mrpc_linear": {"2": {"dev": {"score": 80.0}}}},
         "predictions": {"mrpc_linear": {"dev": {"labels": "mrpc_linear/dev/abc", "epochs": {"2": "01"}}}}}
    t = as_task(r, "mrpc")
    assert t["selected"] == {"holdout": {"mrpc": 2}, "dev": {"mrpc": 1}}
    assert list(t["evaluations"]) == ["mrpc"] and t["predictions"]["mrpc"]["dev"]["labels"] == "mrpc/dev/abc"
    assert as_task(t, "mrpc") is t and r["selected"]["holdout"] == {"mrpc_linear": 2}
