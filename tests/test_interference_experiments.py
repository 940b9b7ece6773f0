"""experiments.interference's grid, without training: the cells of docs/interference.md on the
shared GLUE setting, the phases that depend on earlier results, the lock files that let two
streams share the grid, and the summary built from hand-made records."""

from __future__ import annotations

import json
import os
import socket

import pytest

import experiments.interference
from experiments import settings
from experiments.cells import Records


@pytest.fixture()
def exp(tmp_path, monkeypatch):
    mod = experiments.interference
    for name, value in {"RECORDS": Records(tmp_path / "out"), "LOCKS": tmp_path / "out" / ".locks",
                        "RUNS": tmp_path / "runs", "BASE_RECORDS": Records(tmp_path / "base"),
                        "SUMMARY": tmp_path / "summary.json", "DOC": tmp_path / "results.md",
                        "HEATMAP": tmp_path / "heat.png"}.items():
        monkeypatch.setattr(mod, name, value)
    (tmp_path / "out").mkdir()
    (tmp_path / "base").mkdir()
    return mod


def _acc(x: float) -> dict:
    return {"accuracy": x, "score": x}


def _write(exp, name: str, scores: dict[str, float], meta: dict, wall: float = 600.0, **extra) -> None:
    record = {"cell": name, "meta": meta, "wall_seconds": wall,
              "metrics": {t: {("dev_mismatched" if t == "mnli_aux" else "dev"): _acc(v)} for t, v in scores.items()},
              **extra}
    exp.RECORDS.path(name).write_text(json.dumps(record))


def test_grid_has_the_cells_of_the_issue_on_the_shared_setting(exp):
    cells = {c.name: c for c in exp.cells()}
    assert len(cells) == len(exp.cells())
    for m in ["proportional", "temperature2", "temperature5", "annealed", "uncertainty", "pcgrad", "uniform"]:
        c = cells[f"methods/{m}/s1"]
        assert c.config["tasks"] == exp.GLUE_TASKS and c.config["epochs"] == 2 and c.phase == 1
        assert c.config["selection"] == "last" and c.config["max_train_examples_per_task"] == settings.GLUE_SUBSETS
    assert cells["methods/temperature5/s1"].config["sampling_temperature"] == 5.0
    assert cells["methods/pcgrad/s1"].config["mtl_method"] == "pcgrad"
    assert "sampling" not in cells["methods/proportional/s1"].config  # today's default
    pairs = [n for n in cells if n.startswith("pairs/")]
    assert len(pairs) == 5 * 6 and cells["pairs/rte+mnli_aux/s1"].config["tasks"] == ["rte", "mnli_aux"]
    # the control: as many passes as the fine-tuned MT-DNN row (2 + 2 epochs), 3 seeds for the small tasks
    assert cells["control/single4/rte/s3"].config["epochs"] == 4 and "control/single4/cola/s2" not in cells
    assert cells["affinity/s1"].kind == "affinity" and cells["affinity/s1"].config["tasks"] == exp.GLUE_TASKS
    # phases 4 and 5 wait for their inputs
    assert cells["methods/best1/s2"].meta["pending"] and cells["recommend/rte/s1"].meta["pending"]
    assert exp.estimate(cells["methods/proportional/s1"], settings.SINGLE_SECONDS) == sum(settings.SINGLE_SECONDS.values())


def test_later_phases_follow_the_recorded_results(exp):
    base = {t: 50.0 for t in exp.GLUE_TASKS}
    for k, m in enumerate(exp.METHODS):
        _write(exp, f"methods/{m}/s1", {**base, "sst2": 50.0 + k}, {"method": m, "seed": 1})
    # the two best by the average without WNLI: the last two methods of the table
    assert exp.best_methods() == list(exp.METHODS)[-1:-3:-1]
    tasks = exp.GLUE_TASKS
    z = {a: {b: 0.0 for b in tasks} for a in tasks}
    z["mnli_aux"]["rte"], z["mrpc"]["rte"], z["cola"]["rte"] = 0.02, 0.01, -0.03
    exp.RECORDS.path("affinity/s1").write_text(json.dumps({"affinity": {"tasks": tasks, "affinity": z}}))
    assert exp.recommended("rte") == ["mnli_aux", "mrpc"]
    cells = {c.name: c for c in exp.cells()}
    assert cells["recommend/rte/s1"].config["tasks"] == ["rte", "mnli_aux", "mrpc"]
    assert f"methods/{exp.best_methods()[0]}/s3" in cells and "methods/best1/s2" not in cells


def test_streams_claim_cells_by_lock_files(exp):
    cell = exp.static_cells()[0]
    assert exp._claim(cell, "1") and not exp._claim(cell, "2")  # held by this (living) process
    lock = exp.LOCKS / (exp.RECORDS.path(cell.name).stem + ".lock")
    dead = 2 ** 22 + 12345  # a pid no process has
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
    lock.write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "stream": "1"}))
    assert exp._claim(cell, "2")  # a dead process's lock is taken over
    assert json.loads(lock.read_text())["stream"] == "2"


def test_summary_from_records(exp):
    singles = {"cola": 5.0, "sst2": 82.0, "mrpc": 78.0, "stsb": 81.0, "rte": 56.0, "wnli": 38.0, "mnli_aux": 53.0}
    for t, v in singles.items():
        exp.BASE_RECORDS.path(f"glue/single/{t}/s1").write_text(json.dumps(
            {"cell": f"glue/single/{t}/s1", "wall_seconds": 60.0, "metrics": {t: {"dev": _acc(v)}}}))
    _write(exp, "methods/pcgrad/s1", {t: v + 2 for t, v in singles.items()}, {"method": "pcgrad", "seed": 1}, wall=1200)
    _write(exp, "methods/pcgrad/s2", {t: v + 4 for t, v in singles.items()}, {"method": "pcgrad", "seed": 2}, wall=1800)
    rows = exp.method_rows()
    assert rows["pcgrad"]["rte"] == 59.0 and rows["pcgrad"]["n"] == 2 and rows["pcgrad"]["wall_minutes"] == 25.0
    assert rows["pcgrad"]["sd"]["rte"] == 1.41 and rows["pcgrad"]["average_without_wnli_sd"] == 1.41
    assert rows["single_task_2_epochs"]["sd"]["rte"] is None  # one seed: no sd
    assert rows["single_task_2_epochs"]["average_without_wnli"] == pytest.approx(
        round(sum(v for t, v in singles.items() if t != "wnli") / 6, 2))
    # the affinity ranks rte's auxiliaries as their measured gains do, except one swap
    tasks = exp.GLUE_TASKS
    z = {a: {b: 0.0 for b in tasks} for a in tasks}
    gains = {"cola": -1.0, "sst2": 0.5, "mrpc": 2.0, "stsb": 1.0, "wnli": -2.0, "mnli_aux": 8.0}
    for k, (a, g) in enumerate(sorted(gains.items(), key=lambda x: x[1])):
        z[a]["rte"] = [0.001, 0.002, 0.003, 0.005, 0.004, 0.009][k]  # ranks 1 2 3 5 4 6
        _write(exp, f"pairs/rte+{a}/s1", {"rte": 56.0 + g, a: 50.0}, {"target": "rte", "aux": a})
    exp.RECORDS.path("affinity/s1").write_text(json.dumps({"affinity": {"tasks": tasks, "affinity": z}}))
    val = exp.affinity_validation()
    assert val["rte"]["spearman"] == pytest.approx(1 - 6 * 2 / (6 * 35), abs=5e-4)  # one adjacent swap: 0.943
    assert {p["aux"]: p["gain"] for p in val["rte"]["pairs"]} == gains
    exp.DOC.write_text(f"before\n{exp.BEGIN}\nold\n{exp.END}\nafter\n")
    assert exp.summarize() == 0
    doc = exp.DOC.read_text()
    assert doc.startswith("before\n") and doc.endswith("after\n") and "old" not in doc
    assert "| pcgrad | 8.0 ± 1.4 | 85.0 ± 1.4 |" in doc  # seeds 1 and 2: +2 and +4 over single-task
    summary = json.loads(exp.SUMMARY.read_text())["interference"]
    assert summary["affinity_validation"]["rte"]["spearman"] == pytest.approx(0.943, abs=1e-3)


def _predicted(exp, method: str, seed: int, rte_preds: str, key: str) -> None:
    _write(exp, f"methods/{method}/s{seed}", {t: 50.0 for t in exp.GLUE_TASKS}, {"method": method, "seed": seed},
           selected={exp.ARM: {t: 2 for t in exp.GLUE_TASKS}},
           predictions={"rte": {"dev": {"labels": key, "epochs": {"2": rte_preds}}}})


def test_method_records_without_predictions_are_run_again(exp):
    cells = {c.name: c for c in exp.cells()}
    _write(exp, "methods/pcgrad/s1", {"rte": 60.0}, {"method": "pcgrad", "seed": 1})
    _write(exp, "control/single4/rte/s1", {"rte": 60.0}, {"task": "rte", "seed": 1})
    assert not exp.recorded("methods/pcgrad/s1") and exp._state(cells["methods/pcgrad/s1"]) == "rerun"
    assert exp.recorded("control/single4/rte/s1")  # the control keeps no predictions
    assert exp._state(cells["methods/annealed/s1"]) == "todo"
    _predicted(exp, "pcgrad", 1, "0101", "rte/dev/x")
    assert exp.recorded("methods/pcgrad/s1") and exp._state(cells["methods/pcgrad/s1"]) == "done"


def test_the_choice_of_phase_four_stays_once_its_cells_are_recorded(exp):
    base = {t: 50.0 for t in exp.GLUE_TASKS}
    for k, m in enumerate(exp.METHODS):  # phase 1 ranks the last two methods best
        _write(exp, f"methods/{m}/s1", {**base, "sst2": 50.0 + k}, {"method": m, "seed": 1})
    assert exp.best_methods() == list(exp.METHODS)[-1:-3:-1]
    for m in ("annealed", "temperature2"):  # seeds 2 recorded for two others: a rerun phase 1 moved
        _write(exp, f"methods/{m}/s2", base, {"method": m, "seed": 2})
    assert exp.best_methods() == ["temperature2", "annealed"]  # in METHODS' order
    assert "methods/annealed/s3" in {c.name for c in exp.cells()}


def test_methods_against_proportional_with_paired_intervals(exp):
    import numpy as np

    key = "rte/dev/abc"
    labels = {key: np.array([0, 1, 0, 1, 0, 1, 0, 1])}
    _predicted(exp, "proportional", 1, "01010101", key)   # 100%
    _predicted(exp, "proportional", 2, "01010100", key)   # 87.5%
    _predicted(exp, "pcgrad", 1, "01010000", key)         # 75%: the same seed only
    _predicted(exp, "uniform", 1, "01010101", key)
    _predicted(exp, "uniform", 2, "01010101", key)        # 100, 100 against 100, 87.5
    _write(exp, "methods/annealed/s1", {"rte": 60.0}, {"method": "annealed", "seed": 1})  # no predictions
    d = exp.method_differences(labels, resamples=200)
    assert set(d) == {"pcgrad", "uniform"} and set(d["pcgrad"]) == {"rte"}  # only rte has predictions
    assert d["pcgrad"]["rte"]["seeds"] == [1] and d["pcgrad"]["rte"]["difference"] == -25.0
    assert d["uniform"]["rte"]["seeds"] == [1, 2] and d["uniform"]["rte"]["difference"] == 6.25
    assert d["uniform"]["rte"]["low"] <= 6.25 <= d["uniform"]["rte"]["high"]
    text = exp.tables(d)
    assert "| pcgrad | 1 | – | – | – | – | -25.0 [" in text and "Not yet paired" in text and "annealed" in text


def test_a_tiny_method_cell_records_its_kept_epochs_predictions(exp, tmp_path, tiny_encoder, monkeypatch):
    import experiments.examples as ex
    from tests.toy_tasks import write_toy_data

    task_file, data_dir = write_toy_data(tmp_path / "toy", n_cls=40, n_reg=30)
    monkeypatch.setattr(ex, "LABELS", tmp_path / "labels.json")
    config = {**settings.BASE, "encoder": tiny_encoder, "task_files": [str(task_file)], "data_dir": str(data_dir),
              "cache_dir": str(tmp_path / "cache"), "tasks": ["toycls", "toyreg"], "epochs": 2, "seed": 1,
              "max_seq_len": 32, "batch_size": 8, "threads": 1, "sampling": "uniform"}
    cell = exp.Cell("methods/uniform/s1", config, 1, meta={"method": "uniform", "seed": 1})
    record = exp._train_record(cell, 1, tmp_path / "run")
    assert record["selected"] == {"last": {"toycls": 2, "toyreg": 2}}  # the GLUE setting keeps the last epoch
    assert record["commit"] and record["code"]
    for task in ("toycls", "toyreg"):
        entry = record["predictions"][task]["dev"]
        assert entry["labels"].startswith(f"{task}/dev/")
        # the stored predictions give the score the run measured at its kept epoch
        assert entry["scores"]["2"] == pytest.approx(record["metrics"][task]["dev"]["score"], abs=1e-6)
    assert not (tmp_path / "run" / "checkpoints").exists()  # weights removed once recorded (not proportional)
    exp.RECORDS.path(cell.name).write_text(json.dumps({**record, "cell": cell.name, "meta": cell.meta}))
    assert exp.recorded(cell.name)
