"""experiments.tagging and experiments.qa: their cells and configs, the plans' estimates against
their budgets (one cell by hand), the per-example predictions (entity strings, per-sentence counts,
per-question scores) and the bootstrap over them, the summaries and tables from hand-made records,
and a record made by a real tiny-encoder cell of each kind (predictions at the kept epoch that
give the score the run measured there)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import experiments.qa as qa
import experiments.tagging as tg
from experiments import examples, settings
from experiments.seed_grid import Cell, Grid
from experiments.settings import GLUE_SUBSETS, GLUE_TASKS
from experiments.stats import counts_bootstrap, f1_of_counts, mean_of
from mtdnn.tasks.registry import TaskRegistry
from toy_tasks import FACTS, squad_json


# ----------------------------------------------------------------------------- the grids
def test_tagging_cells_run_the_cheap_rows_first_with_three_seeds_each():
    names = [c.name for c in tg.cells()]
    rows = ["ner/alone", "wnut/alone", "wnut/ner", "ner/pos_chunk", "ner/glue"]
    assert names == [f"{row}/s{k}" for row in rows for k in (1, 2, 3)]
    cells = {c.name: c for c in tg.cells()}
    ner = cells["ner/alone/s2"].config
    assert ner["tasks"] == ["conll03_ner"] and ner["seed"] == 2 and ner["epochs"] == 2
    assert (ner["selection"], ner["eval_every"], ner["pair_head"]) == ("best", 1, "san")
    assert ner["max_train_examples_per_task"] == {"conll03_ner": 3000}
    assert cells["wnut/alone/s1"].config["max_train_examples_per_task"] == {}  # all 3,394 sentences
    assert cells["wnut/ner/s3"].config["max_train_examples_per_task"] == {"conll03_ner_aux": 3000}
    assert cells["wnut/ner/s3"].report == "wnut17"
    glue = cells["ner/glue/s1"].config
    assert glue["tasks"] == ["conll03_ner", *GLUE_TASKS]
    assert glue["max_train_examples_per_task"] == {"conll03_ner": 3000, **GLUE_SUBSETS}
    assert set(cells["ner/pos_chunk/s1"].config["tasks"]) == {"conll03_ner", "conll03_pos_aux", "conll03_chunk_aux"}


def test_qa_cells_and_their_caps():
    cells = {c.name: c for c in qa.cells()}
    assert list(cells) == [f"{row}/s{k}" for row in ("squad/alone", "squad/ner", "squad/glue", "squad/alone4")
                           for k in (1, 2, 3)]
    cfg = cells["squad/glue/s3"].config
    assert cfg["max_seq_len"] == 384 and cfg["seed"] == 3 and cfg["selection"] == "last"
    assert cfg["max_train_examples_per_task"] == {"squad11": 2500, **GLUE_SUBSETS}
    assert cells["squad/ner/s1"].config["max_train_examples_per_task"] == {"squad11": 2500, "conll03_ner_aux": 3000}
    assert {c.report for c in cells.values()} == {"squad11"}
    # the control: squad11 alone, 4 epochs, evaluated after the last only; the rest as alone
    control, alone = cells["squad/alone4/s2"].config, cells["squad/alone/s2"].config
    assert control["epochs"] == control["eval_every"] == 4 and alone["epochs"] == alone["eval_every"] == 2
    assert {k: v for k, v in control.items() if k not in ("epochs", "eval_every")} == \
        {k: v for k, v in alone.items() if k not in ("epochs", "eval_every")}


def test_the_auxiliary_tasks_train_and_are_never_evaluated():
    registry = TaskRegistry([settings.TASK_FILE, str(settings.HERE / "aux_tasks.yaml")])
    aux = registry.resolve(["conll03_ner_aux", "conll03_pos_aux", "conll03_chunk_aux"], "san")
    builtin = {t.name: t for t in registry.resolve(["conll03_ner", "conll03_pos", "conll03_chunk"], "san")}
    for t in aux:
        assert list(t.splits) == ["train"] and t.selection_split is None
        twin = builtin[t.name.removesuffix("_aux")]
        assert t.labels == twin.labels and t.scheme == twin.scheme
        assert t.splits["train"].columns == twin.splits["train"].columns


def test_the_plans_fit_their_budgets_and_one_cell_by_hand(capsys):
    assert 0.8 * tg.BUDGET_HOURS * 3600 < tg.GRID.planned_seconds() <= tg.BUDGET_HOURS * 3600
    assert 0.8 * qa.BUDGET_HOURS * 3600 < qa.GRID.planned_seconds() <= qa.BUDGET_HOURS * 3600
    ner = next(c for c in tg.cells() if c.name == "ner/alone/s1")
    # 3,000 sentences x 2 epochs x 0.031 s, and dev + test (6,703 sentences) evaluated 3 times x 0.0077 s
    assert tg.seconds(ner) == pytest.approx(3000 * 2 * 0.031 + 6703 * 3 * 0.0077)
    squad = next(c for c in qa.cells() if c.name == "squad/alone/s1")
    # 2,500 questions x 2 epochs x 0.28 s; 1,589 held-out questions evaluated after the last epoch
    # and once more for the kept epoch's answers, x 0.09 s
    assert squad.config["eval_every"] == 2
    assert qa.seconds(squad) == pytest.approx(0.28 * 2500 * 2 + 0.09 * 1589 * 2)
    control = next(c for c in qa.cells() if c.name == "squad/alone4/s1")
    assert qa.seconds(control) == pytest.approx(0.28 * 2500 * 4 + 0.09 * 1589 * 2)
    # the GLUE tasks add the GLUE time table's run, evaluated after every epoch
    glue = next(c for c in tg.cells() if c.name == "ner/glue/s1")
    assert tg.seconds(glue) - tg.seconds(ner) == pytest.approx(
        settings.glue_seconds({**glue.config, "tasks": GLUE_TASKS}))
    assert tg.GRID.plan() == 0
    out = capsys.readouterr().out
    assert "ner/glue/s3" in out and f"{tg.GRID.planned_seconds() / 3600:.1f} h on one core (budget 3 h)" in out


def test_docs_give_the_plans_estimates_and_the_markers():
    text = (settings.ROOT / "docs" / "results.md").read_text()
    assert f"**about {tg.GRID.planned_seconds() / 3600:.1f} hours of one core** for the 15 cells" in text
    assert f"**about {qa.GRID.planned_seconds() / 3600:.1f} hours of one core** for the\n12 cells" in text
    assert "**3,000 of the 14,041 sentences**" in text and "**2,500 of the 8,981 training questions**" in text
    for begin, end in ((tg.BEGIN, tg.END), (qa.BEGIN, qa.END)):
        assert text.index(begin) < text.index(end)


# ----------------------------------------------------------------------------- per-example predictions
def test_entities_strings_and_counts_by_hand():
    tags = ["B-PER", "I-PER", "O", "B-creative-work", "I-creative-work", "I-creative-work", "B-LOC"]
    s = examples.entity_string(tags)
    assert s == "PER:0,2;creative-work:3,6;LOC:6,7"
    assert examples.parse_entities(s) == {("PER", 0, 2), ("creative-work", 3, 6), ("LOC", 6, 7)}
    assert examples.entity_string(["O", "O"]) == "" and examples.parse_entities("") == set()
    gold = ["PER:0,2;LOC:5,6", "", "ORG:1,3"]
    pred = ["PER:0,2;LOC:4,6", "MISC:0,1", "ORG:1,3"]
    counts = examples.sentence_counts(gold, pred)
    assert counts.tolist() == [[1, 2, 2], [0, 1, 0], [1, 1, 1]]
    # 2 correct of 4 predicted and 3 gold: P 50, R 66.7, F1 = 2 * 2 / 7
    assert f1_of_counts(counts) == pytest.approx(400 / 7)
    assert f1_of_counts(counts, np.array([2, 2])) == pytest.approx(100.0)
    assert mean_of(np.array([1.0, 0.0, 0.5, 0.5])) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="2 predicted sentences for 3"):
        examples.sentence_counts(gold, pred[:2])


def _ner_run(gold_counts: int, correct: int, sentences: int, rng_seed: int) -> np.ndarray:
    """Per-sentence counts with one gold entity each, ``correct`` of them predicted right and the
    others predicted wrong (one spurious entity each)."""
    rng = np.random.default_rng(rng_seed)
    right = np.zeros(sentences, bool)
    right[rng.choice(sentences, correct, replace=False)] = True
    return np.stack([right.astype(int), np.ones(sentences, int), np.ones(sentences, int)], axis=1)


def test_bootstrap_over_counts_calls_gains_and_noise():
    a = [_ner_run(1, 450, 500, k) for k in (1, 2)]     # F1 90
    b = [_ner_run(1, 350, 500, k + 10) for k in (1, 2)]  # F1 70
    gain = counts_bootstrap(a, b, f1_of_counts, resamples=200)
    assert gain.difference == pytest.approx(20.0) and gain.verdict == "gain" and gain.low > 0
    near = counts_bootstrap(a, [_ner_run(1, 449, 500, 7)], f1_of_counts, resamples=200)
    assert near.verdict == "within noise" and near.low < 0 < near.high
    with pytest.raises(ValueError, match="same examples"):
        counts_bootstrap(a, [_ner_run(1, 10, 20, 1)], f1_of_counts)


# ----------------------------------------------------------------------------- summaries
def _tag_record(row: str, seed: int, task: str, key: str, entities: list[str], f1: float) -> dict:
    return {"cell": f"{row}/s{seed}", "meta": {"row": row, "seed": seed}, "report": task,
            "metrics": {task: {"dev": {"f1": f1 + 1, "score": f1 + 1}, "test": {"f1": f1, "score": f1}}},
            "predictions": {task: {"test": {"gold": key, "entities": entities, "epoch": 1}}},
            "machine": "m", "code": "c", "wall_seconds": 10.0}


def test_tagging_summary_from_records_gives_means_and_intervals(tmp_path, monkeypatch):
    gold = ["PER:0,1"] * 300
    key = "conll03_ner/test/abc"
    right, wrong = "PER:0,1", "LOC:0,1"
    records = {}
    for k in (1, 2, 3):
        good = [right] * (270 + k) + [wrong] * (30 - k)
        poor = [right] * (200 + k) + [wrong] * (100 - k)
        records[f"ner/alone/s{k}"] = _tag_record("ner/alone", k, "conll03_ner", key, poor, 60.0 + k)
        records[f"ner/glue/s{k}"] = _tag_record("ner/glue", k, "conll03_ner", key, good, 80.0 + k)
    records["ner/pos_chunk/s1"] = _tag_record("ner/pos_chunk", 1, "conll03_ner", key, [right] * 201 + [wrong] * 99, 61.0)
    s = tg.summary(records, {key: gold}, resamples=200)
    assert s["rows"]["ner/alone"]["test"] == {"mean": 62.0, "sd": 1.0, "n": 3}
    assert s["rows"]["ner/glue"]["dev"] == {"mean": 83.0, "sd": 1.0, "n": 3}
    glue = s["differences"]["ner/glue"]
    # the interval is over the predictions: (272 - 202) correct of 300 entities, predicted and gold alike
    assert glue["difference"] == pytest.approx(100 * 70 / 300, abs=0.01) and glue["verdict"] == "gain"
    assert glue["against"] == "ner/alone" and glue["seeds"] == [1, 2, 3]
    same = s["differences"]["ner/pos_chunk"]  # seed 1 only, equal predictions
    assert same["seeds"] == [1] and same["difference"] == 0.0 and same["verdict"] == "within noise"
    text = tg.tables(s)
    assert "| NER + the GLUE tasks | conll03_ner | 82.0 ± 1.0 (n=3) | 83.0 ± 1.0 (n=3) | +23.3 [" in text
    assert "| published: BERT-base" in text and "92.4" in text and "Devlin et al. 2019" in text
    # --summarize: summary.json key "tagging" beside the others, the table between the markers
    summary_file, doc = tmp_path / "summary.json", tmp_path / "results.md"
    summary_file.write_text(json.dumps({"glue_seeds": {"x": 1}}))
    doc.write_text(f"intro\n{tg.BEGIN}\nold\n{tg.END}\nafter\n")
    monkeypatch.setattr(settings, "SUMMARY", summary_file)
    monkeypatch.setattr(settings, "DOC", doc)
    monkeypatch.setattr(tg, "RECORDS", SimpleNamespace(all=lambda: records))
    monkeypatch.setattr(tg, "load_gold", lambda: {key: gold})
    assert tg.summarize() == 0
    stored = json.loads(summary_file.read_text())
    assert list(stored) == ["glue_seeds", "tagging"] and stored["tagging"]["rows"]["ner/alone"]["test"]["mean"] == 62.0
    assert "old" not in doc.read_text() and "NER + the GLUE tasks" in doc.read_text() and doc.read_text().endswith("after\n")


def test_without_records_the_tables_say_not_run_yet():
    assert "Not run yet" in tg.tables(tg.summary({}, {})) and "Not run yet" in qa.tables(qa.summary({}))


def _qa_record(row: str, seed: int, exact: str, f1: list[float]) -> dict:
    return {"cell": f"{row}/s{seed}", "meta": {"row": row, "seed": seed}, "report": "squad11",
            "metrics": {"squad11": {"dev": {"exact": 100 * exact.count("1") / len(exact), "f1": 100 * float(np.mean(f1))}}},
            "predictions": {"squad11": {"dev": {"questions": "squad11/dev/q", "exact": exact, "f1": f1}}},
            "machine": "m", "code": "c", "wall_seconds": 10.0}


def test_qa_summary_from_records():
    n = 400
    records = {}
    for k in (1, 2):
        alone = "1" * (200 + k) + "0" * (200 - k)
        glue = "1" * (300 + k) + "0" * (100 - k)
        records[f"squad/alone/s{k}"] = _qa_record("squad/alone", k, alone, [float(c) for c in alone])
        records[f"squad/glue/s{k}"] = _qa_record("squad/glue", k, glue, [float(c) for c in glue])
    records["squad/ner/s1"] = _qa_record("squad/ner", 1, "1" * 201 + "0" * 199, [0.5] * n)
    s = qa.summary(records, resamples=200)
    alone = s["rows"]["squad/alone"]["exact"]  # 201 and 202 of 400 questions
    assert alone["mean"] == pytest.approx(50.375, abs=0.006) and alone["sd"] == 0.18 and alone["n"] == 2
    glue = s["differences"]["squad/glue"]
    assert glue["exact"]["difference"] == pytest.approx(25.0) and glue["exact"]["verdict"] == "gain"
    ner = s["differences"]["squad/ner"]
    assert ner["seeds"] == [1] and ner["exact"]["difference"] == 0.0 and ner["exact"]["verdict"] == "within noise"
    assert ner["f1"]["difference"] == pytest.approx(50.0 - 50.25)
    text = qa.tables(s)
    assert "| squad11 + the GLUE tasks | 75.4 ± 0.2 (n=2) |" in text and "80.8 | 88.5" in text
    assert s["rows"]["squad/glue"]["wall_minutes"] == pytest.approx(10.0 / 60, abs=0.05) and "| 0.2 |" in text
    assert s["controls"] == {} and "Not yet run: squad11 alone for 4 epochs" in text
    # with the control: NER − alone 4 epochs on the seed both have (201 and 301 of 400 correct)
    records["squad/alone4/s1"] = _qa_record("squad/alone4", 1, "1" * 301 + "0" * 99, [1.0] * 301 + [0.0] * 99)
    s = qa.summary(records, resamples=200)
    control = s["controls"]["squad/ner"]
    assert control["against"] == "squad/alone4" and control["seeds"] == [1]
    assert control["exact"]["difference"] == pytest.approx(-25.0) and control["exact"]["verdict"] == "loss"
    assert s["differences"]["squad/ner"]["against"] == "squad/alone"  # the first comparison is unchanged
    text = qa.tables(s)
    assert "| squad11 + CoNLL-2003 NER (auxiliary) | squad11 alone, 4 epochs" in text and "-25.0 [" in text


# ----------------------------------------------------------------------------- real tiny cells
def _slice(src: Path, dst: Path, sentences: int) -> None:
    blocks = [b for b in src.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    dst.write_text("\n\n".join(blocks[:sentences + 1]) + "\n", encoding="utf-8")


def _tiny_grid(tmp_path: Path, cell: Cell, entry) -> Grid:
    return Grid("tagging", lambda: [cell], tg.Records(tmp_path / "records"), tmp_path / "runs", tmp_path / "check",
                entry, lambda c: 1.0, budget_hours=1.0)


def test_a_tiny_tagging_cell_records_entities_at_the_kept_epoch(tmp_path, tiny_encoder, data_dir, monkeypatch):
    from mtdnn.tasks.registry import builtin_tasks

    for name, n in (("eng.train", 40), ("eng.testa", 12), ("eng.testb", 10)):
        _slice(Path(data_dir) / "conll2003" / name, tmp_path / name, n)
    ner = builtin_tasks()["conll03_ner"].model_dump(mode="json", exclude={"base_dir", "splits"})
    split = {"format": "conll", "columns": {"text_a": 0, "label": 3}}
    ner.update(name="ner_slice", splits={r: {**split, "path": str(tmp_path / f), "role": r}
                                         for r, f in (("train", "eng.train"), ("dev", "eng.testa"), ("test", "eng.testb"))})
    task_file = tmp_path / "tasks.yaml"
    task_file.write_text(json.dumps([ner]), encoding="utf-8")
    gold_file = tmp_path / "entities.json"
    monkeypatch.setattr(examples, "ENTITIES", gold_file)
    config = {**tg.tagging_config(["ner_slice"], 1), "task_files": [str(task_file)], "encoder": tiny_encoder,
              "data_dir": str(data_dir), "cache_dir": str(tmp_path / "cache"), "max_seq_len": 32,
              "batch_size": 8, "lr": 1e-3, "epochs": 3, "threads": 1}
    cell = Cell("ner/tiny/s1", config, "ner_slice", meta={"row": "ner/tiny", "seed": 1})
    grid = _tiny_grid(tmp_path, cell, examples.tagging_entry)
    assert grid.one_cell(cell.name, threads=1) == 0
    record = json.loads((tmp_path / "records" / "ner__tiny__s1.json").read_text())
    kept = record["selected"]["ner_slice"]
    assert set(record["evaluations"]["ner_slice"]) == {"1", "2", "3"}
    # the kept epoch is the best dev epoch (ties: the earlier)
    devs = {int(e): v["dev"]["f1"] for e, v in record["evaluations"]["ner_slice"].items()}
    assert kept == min(e for e, f in devs.items() if f == max(devs.values()))
    gold = json.loads(gold_file.read_text())
    for split_name, n in (("dev", 12), ("test", 10)):
        entry = record["predictions"]["ner_slice"][split_name]
        assert entry["epoch"] == kept and len(entry["entities"]) == n and len(gold[entry["gold"]]) == n
        counts = examples.sentence_counts(gold[entry["gold"]], entry["entities"])
        assert counts[:, 2].sum() > 0  # the slices have gold entities
        # the predictions give the F1 the run measured at the kept epoch on that split
        assert f1_of_counts(counts) == pytest.approx(record["metrics"]["ner_slice"][split_name]["f1"], abs=1e-6)
        assert entry["scores"]["f1"] == pytest.approx(record["metrics"]["ner_slice"][split_name]["f1"], abs=1e-6)
    assert record["code"] and record["commit"] and record["command"] == "python -m experiments.tagging --cell ner/tiny/s1"
    assert not (tmp_path / "runs" / "ner" / "tiny" / "s1" / "checkpoints").exists()
    assert grid.one_cell(cell.name, threads=1) == 0  # recorded: not trained again


def test_a_tiny_qa_cell_records_answers_and_their_scores(tmp_path, tiny_encoder, data_dir):
    (tmp_path / "train.json").write_text(json.dumps(squad_json(FACTS[:6], "Train")), encoding="utf-8")
    (tmp_path / "dev.json").write_text(json.dumps(squad_json(FACTS[:4], "Dev")), encoding="utf-8")
    task = {"name": "qa_tiny", "type": "span", "input": "question_context", "metrics": ["exact", "f1"], "stride": 16,
            "splits": {"train": {"path": str(tmp_path / "train.json"), "format": "squad", "role": "train"},
                       "dev": {"path": str(tmp_path / "dev.json"), "format": "squad", "role": "dev"}}}
    task_file = tmp_path / "tasks.yaml"
    task_file.write_text(json.dumps([task]), encoding="utf-8")
    config = {**qa.qa_config(["qa_tiny"], 2), "task_files": [str(task_file)], "encoder": tiny_encoder,
              "data_dir": str(data_dir), "cache_dir": str(tmp_path / "cache"), "max_seq_len": 48,
              "batch_size": 4, "lr": 1e-3, "threads": 1, "max_train_examples_per_task": {}}
    cell = Cell("squad/tiny/s2", config, "qa_tiny", meta={"row": "squad/tiny", "seed": 2})
    grid = _tiny_grid(tmp_path, cell, examples.span_entry)
    assert grid.one_cell(cell.name, threads=1) == 0
    record = json.loads((tmp_path / "records" / "squad__tiny__s2.json").read_text())
    entry = record["predictions"]["qa_tiny"]["dev"]
    assert len(entry["answers"]) == len(entry["f1"]) == len(entry["exact"]) == 4
    assert set(entry["exact"]) <= {"0", "1"} and entry["questions"].startswith("qa_tiny/dev/")
    for metric in ("exact", "f1"):  # the per-question values give the run's figures at the kept epoch
        assert mean_of(examples.question_values(entry, metric)) == pytest.approx(
            record["metrics"]["qa_tiny"]["dev"][metric], abs=0.02)
    for answer, fact in zip(entry["answers"], FACTS[:6]):  # answers are spans of their contexts
        assert answer in fact[2]


def test_every_cell_config_is_a_valid_run_config():
    import mtdnn

    for cell in tg.cells() + qa.cells():
        cfg = mtdnn.make_config({**cell.config, "output_dir": "unused"})
        tasks = TaskRegistry(cfg.task_files).resolve(cfg.tasks, cfg.pair_head)
        assert tasks[0].name == cell.report and tasks[0].selection_split == "dev"


def test_a_cell_with_an_auxiliary_task_records_the_reported_task_only(tmp_path, tiny_encoder, data_dir, monkeypatch):
    monkeypatch.setattr(examples, "ENTITIES", tmp_path / "entities.json")
    cell = next(c for c in tg.cells() if c.name == "wnut/ner/s1")
    config = {**cell.config, "encoder": tiny_encoder, "data_dir": str(data_dir), "cache_dir": str(tmp_path / "cache"),
              "max_seq_len": 32, "epochs": 1, "threads": 1, "max_eval_examples": 12,
              "max_train_examples_per_task": {"wnut17": 24, "conll03_ner_aux": 24}}
    small = Cell(cell.name, config, cell.report, cell.meta)
    grid = _tiny_grid(tmp_path, small, examples.tagging_entry)
    assert grid.one_cell(small.name, threads=1) == 0
    record = json.loads((tmp_path / "records" / "wnut__ner__s1.json").read_text())
    assert set(record["metrics"]) == {"wnut17"} and set(record["predictions"]) == {"wnut17"}
    assert set(record["predictions"]["wnut17"]) == {"dev", "test"}
    assert record["selected"] == {"wnut17": 1, "conll03_ner_aux": 1}
    assert len(record["predictions"]["wnut17"]["test"]["entities"]) == 12
