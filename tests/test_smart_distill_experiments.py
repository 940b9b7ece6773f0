"""The experiment grid of experiments.smart_distill: the cells of docs/smart-and-distillation.md,
SMART cells equal to their plain twins but for --adv, plain cells equal to experiments.run's, the plan
with estimates; and, on a tiny RTE run, a cell's record is written once and then reused, the
robustness scores and the ensemble of one run twice (= that run)."""

from __future__ import annotations

import json

import pytest

import experiments.run
import experiments.smart_distill
from experiments import settings
from experiments.cells import Records, cli


@pytest.fixture(scope="module")
def grid():
    return experiments.smart_distill


def _records_in(grid, monkeypatch, folder):
    """The runner's records (and those trained again) in ``folder``."""
    monkeypatch.setattr(grid, "RECORDS", Records(folder))
    monkeypatch.setattr(grid, "RETRAINED", Records(folder / "retrained"))


def test_every_required_cell_exists(grid):
    cells = {c.name: c for c in grid.cells()}
    assert len(cells) == len(grid.cells())
    for task in ["rte", "mrpc", "stsb", "cola"]:
        for seed in (1, 2, 3):
            plain, smart = cells[f"smart/single/{task}/plain/s{seed}"], cells[f"smart/single/{task}/smart/s{seed}"]
            assert smart.config == {**plain.config, "adv": True}
            assert plain.stream == smart.stream == "single"
    for name in ["smart/mt/s1", "kd/teacher/s1", "kd/teacher/s2", "kd/teacher/s3", "kd/ensemble",
                 "kd/student/ensemble/s1", "kd/student/one/s1", "kd/small/plain/s1", "kd/small/student/s1", "kd/speed"]:
        assert cells[name].stream == "mt", name
    assert cells["smart/mt/s1"].config == {**cells["kd/teacher/s1"].config, "adv": True}
    assert len(cells["kd/student/ensemble/s1"].config["teachers"]) == 3
    for seed in (1, 2, 3):  # students: seeds 1-3, of the three teachers and of teacher s1 alone
        ens, one = cells[f"kd/student/ensemble/s{seed}"].config, cells[f"kd/student/one/s{seed}"].config
        assert ens["seed"] == one["seed"] == seed and ens == {**cells[f"kd/teacher/s{seed}"].config, "teachers": ens["teachers"]}
        assert ens["teachers"] == [str(grid.RUNS / f"kd/teacher/s{t}") for t in (1, 2, 3)]
        assert one["teachers"] == [str(grid.RUNS / "kd/teacher/s1")]
    assert cells["kd/small/student/s1"].config["encoder"] == str(grid.SMALL_ENCODER) == \
        cells["kd/small/plain/s1"].config["encoder"]
    assert all(cells[n].keep for n in ["kd/teacher/s1", "kd/small/student/s1"])
    # every cell a cell needs exists and comes earlier in its stream
    order = [c.name for c in grid.cells()]
    assert all(dep in cells and order.index(dep) < order.index(c.name) for c in grid.cells() for dep in c.needs)


def test_plain_single_cells_are_run_py_cells(grid):
    base = {c.name: c for c in experiments.run.cells()}
    for task in ["rte", "mrpc", "stsb", "cola"]:
        mine = {c.name: c for c in grid.cells()}[f"smart/single/{task}/plain/s1"]
        assert mine.config == base[f"glue/single/{task}/s1"].config


def test_plan_lists_cells_with_estimates(grid, capsys):
    assert cli("experiments.smart_distill", ["--plan"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len([x for x in out if "min" in x]) == len(grid.cells())
    assert any(x.startswith("stream single:") for x in out) and any(x.startswith("stream mt:") for x in out)


def test_cell_record_written_once_then_reused(grid, tmp_path, tiny_encoder, data_dir, monkeypatch):
    _records_in(grid, monkeypatch, tmp_path / "results")
    monkeypatch.setattr(grid, "RUNS", tmp_path / "runs")
    config = {**settings.BASE, "encoder": tiny_encoder, "tasks": ["rte"], "epochs": 1, "max_train_examples": 32,
              "data_dir": str(data_dir), "max_seq_len": 64, "cache_dir": str(tmp_path / "cache"), "task_files": []}
    cell = grid.Cell("t/rte/plain/s1", "single", config, keep=True)
    record = grid.run_cell(cell, {cell.name: cell}, threads=1)
    saved = json.loads(grid.RECORDS.path(cell.name).read_text())
    assert saved["metrics"] == record["metrics"] and "rte" in saved["metrics"]
    robust = saved["robustness"]["rte"]
    assert set(robust) == {"clean", "light", "heavy"} and all(0 <= v <= 100 for v in robust.values())
    assert robust["clean"] == pytest.approx(saved["metrics"]["rte"]["dev"]["accuracy"])
    # recorded: not run again
    monkeypatch.setattr(grid, "_train", lambda *a, **k: pytest.fail("a recorded cell was trained again"))
    assert grid.run_cell(cell, {cell.name: cell}, threads=1) == saved
    # the ensemble of one run twice is that run
    ens = grid.ensemble_metrics([tmp_path / "runs" / cell.name] * 2)
    assert ens["rte"]["dev"]["accuracy"] == pytest.approx(saved["metrics"]["rte"]["dev"]["accuracy"])


def _glue_record(scores: dict[str, float], wall: float, **extra) -> dict:
    split = {"mnli_aux": "dev_mismatched"}
    return {"metrics": {t: {split.get(t, "dev"): {"score": v}} for t, v in scores.items()},
            "wall_seconds": wall, **extra}


def test_summary_tables_from_hand_made_records(grid, tmp_path, monkeypatch):
    from mtdnn.run_dir import write_json

    _records_in(grid, monkeypatch, tmp_path / "results")
    monkeypatch.setattr(grid, "SUMMARY", tmp_path / "summary.json")
    monkeypatch.setattr(grid, "DOC", tmp_path / "results.md")
    write_json(tmp_path / "summary.json", {"adapters": {"kept": True}})
    (tmp_path / "results.md").write_text("before\n<!-- smart-distill:begin -->\nNot run yet.\n<!-- smart-distill:end -->\nafter\n")

    def put(name, record):
        write_json(grid.RECORDS.path(name), record)

    for seed, (acc, wall, heavy) in enumerate([(50.0, 60, 40.0), (54.0, 120, 44.0), (58.0, 180, 48.0)], start=1):
        put(f"smart/single/rte/plain/s{seed}", _glue_record({"rte": acc}, wall, robustness={
            "rte": {"clean": acc, "light": acc - 2, "heavy": heavy}}))
    for seed, acc in [(1, 60.0), (2, 62.0)]:
        put(f"smart/single/rte/smart/s{seed}", _glue_record({"rte": acc}, 300))
    teacher = {t: 10.0 * (i + 1) for i, t in enumerate(settings.GLUE_TASKS)}  # cola 10, ..., mnli_aux 70
    put("kd/teacher/s1", _glue_record(teacher, 600))
    put("kd/speed", {"inference_seconds": {"teacher_l6": 4.0, "student_l3": 2.5}})

    assert cli("experiments.smart_distill", ["--summarize"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["adapters"] == {"kept": True}  # another runner's key stays
    rte = summary["smart"]["single"]["rte"]
    assert rte["plain"]["score"] == {"mean": 54.0, "sd": 4.0, "n": 3}
    assert rte["smart"]["score"] == {"mean": 61.0, "sd": 1.41, "n": 2}
    assert rte["gain"] == 7.0 and rte["plain"]["wall_minutes"] == 2.0 and rte["time_ratio"] == 2.5
    assert summary["smart"]["single"]["mrpc"]["plain"]["score"] is None
    assert summary["smart"]["robustness"]["single plain"]["rte"] == {"clean": 54.0, "light": 52.0, "heavy": 44.0}
    (table,) = summary["distillation"]["machines"].values()  # records without a machine: one table, "?"
    row = table["rows"]["teacher_s1"]
    # GLUE_TASKS: cola sst2 mrpc stsb rte wnli mnli_aux -> 10..70; without WNLI (60): (280 - 60) / 6
    assert row["average"] == 40.0 and row["average_without_wnli"] == round(220 / 6, 2) and row["wall_minutes"] == 10.0
    assert table["rows"]["teachers_mean"]["n"] == 1 and table["rows"]["students_of_ensemble_mean"] is None
    assert table["speedup"] == 1.6
    doc = (tmp_path / "results.md").read_text()
    assert doc.startswith("before\n<!-- smart-distill:begin -->\n### SMART against plain") and doc.endswith("after\n")
    assert "| rte | 54.0 ± 4.0 (3) | 61.0 ± 1.4 (2) | +7.0 | 2.0 / 5.0 | 2.50 |" in doc
    assert "3-layer student 2.5 s, 1.60x faster" in doc and "Not run yet" not in doc
    assert "Paper: SMART-BERT" in doc and "Paper: MT-DNN-KD" in doc


def test_missing_teacher_weights_are_trained_again_beside_its_record(grid, tmp_path, monkeypatch):
    """A fresh clone has a teacher's record but not its weights: a student that needs it trains it
    again; the first record stays, the new one (another machine's rounding) goes to retrained/, with
    the retrained teachers' ensemble; ``--again`` does the same for a student; the summary has one
    table per machine, each from the runs made there."""
    from mtdnn.run_dir import write_json

    _records_in(grid, monkeypatch, tmp_path / "results")
    monkeypatch.setattr(grid, "RUNS", tmp_path / "runs")
    amd, here = "AMD EPYC (AVX512), 2 cores", "Intel Xeon (AMX), 2 cores"
    monkeypatch.setattr(grid, "machine", lambda: here)
    first = _glue_record({t: 50.0 for t in settings.GLUE_TASKS}, 600, machine=amd, finished="2020-01-01 00:00:00")
    for name in ["kd/teacher/s1", "kd/teacher/s2", "kd/teacher/s3", "kd/student/ensemble/s1"]:
        write_json(grid.RECORDS.path(name), first)
    again = {s: _glue_record({t: 50.0 + s for t in settings.GLUE_TASKS}, 500, machine=here,
                             finished=f"2020-01-0{s + 1} 12:00:00") for s in (1, 2, 3)}
    trained = []
    record = grid._record  # the ensemble's own record: its (stubbed) metrics, this machine
    monkeypatch.setattr(grid, "_record", lambda cell, threads: record(cell, threads) if cell.kind == "ensemble"
                        else trained.append(cell.name) or again[cell.meta.get("seed", 3)])
    monkeypatch.setattr(grid, "ensemble_metrics", lambda dirs: _glue_record({t: 60.0 for t in settings.GLUE_TASKS}, 0)["metrics"])
    by_name = {c.name: c for c in grid.cells()}
    for s in (1, 2, 3):
        grid._ensure_weights(f"kd/teacher/s{s}", by_name, threads=1)
    assert trained == ["kd/teacher/s1", "kd/teacher/s2", "kd/teacher/s3"]
    assert json.loads(grid.RECORDS.path("kd/teacher/s1").read_text()) == first  # the record stays
    assert json.loads(grid.RETRAINED.path("kd/teacher/s2").read_text()) == again[2]
    grid._retrained_ensemble(by_name["kd/small/student/s1"].needs, by_name, 1)
    ens = json.loads(grid.RETRAINED.path("kd/ensemble").read_text())
    assert ens["metrics"]["rte"]["dev"]["score"] == 60.0 and ens["machine"] == here
    monkeypatch.setattr(grid, "ensemble_metrics", lambda dirs: pytest.fail("an up-to-date ensemble was scored again"))
    grid._retrained_ensemble(by_name["kd/small/student/s1"].needs, by_name, 1)
    # --again: the student recorded on the AMD machine runs here; a second --again takes that record
    monkeypatch.setattr(grid, "_has_weights", lambda name: True)
    student = by_name["kd/student/ensemble/s1"]
    assert grid.run_cell(student, by_name, 1) == first  # without --again: recorded, not run
    assert grid.run_cell(student, by_name, 1, again=True) == again[1] and trained[-1] == student.name
    assert grid.run_cell(student, by_name, 1, again=True) == again[1] and len(trained) == 4
    machines = grid.distillation_summary()["machines"]
    assert list(machines) == [amd, here]
    assert machines[amd]["rows"]["teacher_s1"]["average"] == 50.0 and machines[amd]["rows"]["ensemble"] is None
    rows = machines[here]["rows"]
    assert rows["teachers_mean"]["average"] == 52.0 and rows["teachers_mean"]["n"] == 3
    assert rows["ensemble"]["average"] == 60.0 and rows["ensemble"]["wall_minutes"] is None
    assert rows["student_of_ensemble"]["average"] == 51.0 and rows["students_of_ensemble_mean"]["n"] == 1
    text = grid.tables(grid.smart_summary(), grid.distillation_summary())
    assert f"seeds' mean (n); {here})" in text and "| teachers_mean (3) | 52.0 |" in text
