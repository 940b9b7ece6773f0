"""The tagging kind end to end: task files, reading CoNLL columns, a tiny encoder trained on a
CoNLL-2003 slice beside RTE (entity F1 in metrics.json and the per-type report), ``Run.predict``
giving entities, and the methods that refuse tagging tasks in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtdnn.api import load_run
from mtdnn.cli import main
from mtdnn.data.readers import read_split
from mtdnn.errors import ConfigError, DataError
from mtdnn.tasks.registry import builtin_tasks
from mtdnn.tasks.schema import parse_task
from toy_tasks import train_argv

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def _task(**changes) -> dict:
    split = {"path": "x.conll", "format": "conll", "role": "train", "columns": {"text_a": 0, "label": 3}}
    return {"name": "ner", "type": "tagging", "input": "words", "scheme": "iob1", "labels": NER_LABELS,
            "splits": {"train": split}, **changes}


@pytest.mark.parametrize("changes, message", [
    ({"input": "pair"}, "a tagging task needs input: words"),
    ({"scheme": None}, "needs scheme: iob1, iob2, iobes or plain"),
    ({"labels": ["B-PER", "I-PER"]}, "needs the label O"),
    ({"labels": ["O", "E-PER"]}, "label 'E-PER' is not a tag of scheme iob1"),
    ({"scheme": "plain", "labels": ["NN", "VB"]}, "'f1' counts entities"),
    ({"metrics": ["pearson"]}, "'pearson' is for regression scores"),
    ({"splits": {"train": {"path": "x.tsv", "role": "train", "columns": {"text_a": "a", "label": "y"}}}},
     "a tagging task reads format conll or jsonl, not tsv"),
    ({"splits": {"train": {"path": "x", "format": "conll", "role": "train", "columns": {"text_a": "w", "label": 3}}}},
     "format conll names columns.text_a by 0-based index"),
])
def test_tagging_task_rules(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_task(_task(**changes), "t.yaml")


def test_other_kinds_refuse_tagging_fields():
    split = {"path": "x", "format": "conll", "role": "train", "columns": {"text_a": 0, "label": 1}}
    with pytest.raises(ConfigError, match="format conll is for tagging tasks"):
        parse_task({"name": "c", "type": "classification", "input": "single", "labels": ["a", "b"],
                    "splits": {"train": split}}, "t.yaml")
    with pytest.raises(ConfigError, match="scheme is for tagging tasks only"):
        parse_task({"name": "c", "type": "regression", "input": "single", "scheme": "iob2",
                    "splits": {"train": {**split, "format": "tsv", "columns": {"text_a": "a", "label": "y"}}}}, "t.yaml")


def test_one_conll_file_gives_three_tasks(data_dir):
    tasks = builtin_tasks()
    raws = {n: read_split(tasks[n], "dev", data_dir) for n in ("conll03_ner", "conll03_pos", "conll03_chunk")}
    assert {len(r) for r in raws.values()} == {3250}  # -DOCSTART- lines skipped
    assert raws["conll03_ner"].words[0] == raws["conll03_pos"].words[0]
    assert raws["conll03_pos"].labels[0][:2] == ("NNP", ":")
    # IOB1 read into IOB2: the first word of every entity is B-
    assert raws["conll03_ner"].labels[0][2] == "B-ORG" and raws["conll03_chunk"].labels[0][0] == "B-NP"
    assert len(read_split(tasks["wnut17"], "train", data_dir)) == 3394


def test_an_unknown_tag_names_file_line_and_column(tmp_path):
    f = tmp_path / "x.conll"
    f.write_text("-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP B-FOO\n", encoding="utf-8")
    task = parse_task({**_task(), "base_dir": str(tmp_path)}, "t.yaml")
    with pytest.raises(DataError) as err:
        read_split(task, "train", tmp_path)
    assert "x.conll" in str(err.value) and ":4" in str(err.value) and "column 3" in str(err.value)


def _slice(src: Path, dst: Path, sentences: int) -> None:
    """The first ``sentences`` sentences of a CoNLL file."""
    blocks = [b for b in src.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    dst.write_text("\n\n".join(blocks[:sentences + 1]) + "\n", encoding="utf-8")


def _train_beside_rte(tmp_path: Path, encoder: str, data_dir: Path, cache_dir: str, *extra: str) -> Path:
    """A one-epoch run of RTE and a CoNLL-2003 NER slice (48 training, 24 dev sentences)."""
    for name, n in (("eng.train", 48), ("eng.testa", 24)):
        _slice(Path(data_dir) / "conll2003" / name, tmp_path / name, n)
    ner = builtin_tasks()["conll03_ner"].model_dump(mode="json", exclude={"base_dir", "splits"})
    split = {"format": "conll", "columns": {"text_a": 0, "label": 3}}
    ner.update(name="ner_slice", splits={"train": {**split, "path": str(tmp_path / "eng.train"), "role": "train"},
                                         "dev": {**split, "path": str(tmp_path / "eng.testa"), "role": "dev"}})
    task_file = tmp_path / "tasks.yaml"
    task_file.write_text(json.dumps([ner]), encoding="utf-8")
    out = tmp_path / "run"
    assert main(train_argv(task_file, data_dir, encoder, cache_dir, out, "--max-train-examples", "48",
                           "--max-eval-examples", "16", *extra, tasks="rte,ner_slice", epochs=1, batch_size=8,
                           max_seq_len=16)) in (0, None)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--adapter", "lora"], ["--mtl-method", "pcgrad"], ["--sampling", "temperature"],
                                   ["--mtl-method", "uncertainty"]])
def test_tagging_trains_with_the_methods(tmp_path, tiny_encoder, data_dir, cache_dir, extra):
    out = _train_beside_rte(tmp_path, tiny_encoder, data_dir, cache_dir, *extra)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["ner_slice"]["dev"]) == {"f1", "precision", "recall", "score"}


@pytest.mark.slow
def test_tagging_trains_beside_rte(tmp_path, tiny_encoder, data_dir, cache_dir):
    out = _train_beside_rte(tmp_path, tiny_encoder, data_dir, cache_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["ner_slice"]["dev"]) == {"f1", "precision", "recall", "score"}
    assert metrics["ner_slice"]["dev"]["score"] == metrics["ner_slice"]["dev"]["f1"]
    assert "accuracy" in metrics["rte"]["dev"]
    report = json.loads((out / "reports" / "ner_slice.dev.json").read_text())
    assert report["labels"][-1] == "(none)" and "per_type" in report
    run = load_run(out)
    n = run.predict_file("ner_slice", tmp_path / "eng.testa", tmp_path / "predicted.conll")
    given = (tmp_path / "eng.testa").read_text(encoding="utf-8").splitlines()
    got = (tmp_path / "predicted.conll").read_text(encoding="utf-8").splitlines()
    sentences = [b for b in "\n".join(given).split("\n\n") if b.strip() and not b.startswith("-DOCSTART-")]
    assert n == len(sentences) and len(got) == len(given)
    for before, after in zip(given, got):
        words = before.split()
        if words and words[0] != "-DOCSTART-":
            assert after.split()[:-1] == words and after.split()[-1] in NER_LABELS
        else:
            assert after == before
    assert "ner_slice" in run.evaluate(["ner_slice"], data_dir=str(data_dir))
    answers = run.predict("ner_slice", ["Peter Blackburn went to Brussels .", "", "EU"])
    assert len(answers) == 3 and answers[1] == []
    for entity in answers[0]:
        assert entity["type"] in {"PER", "ORG", "LOC", "MISC"} and 0.0 <= entity["score"] <= 1.0
        assert "Peter Blackburn went to Brussels ."[entity["start"]:entity["end"]] == entity["text"]


def test_smart_refuses_a_tagging_task(tmp_path, tiny_encoder, data_dir, cache_dir, capsys):
    task_file = tmp_path / "tasks.yaml"
    ner = builtin_tasks()["conll03_ner"].model_dump(mode="json", exclude={"base_dir"})
    task_file.write_text(json.dumps([{**ner, "name": "ner2"}]), encoding="utf-8")
    rc = main(["train", "--task-file", str(task_file), "--tasks", "ner2", "--data-dir", str(data_dir),
               "--encoder", tiny_encoder, "--output-dir", str(tmp_path / "run"), "--epochs", "1",
               "--max-seq-len", "16", "--threads", "1", "--no-progress", "--no-hub", "--cache-dir", cache_dir,
               "--max-train-examples", "8", "--max-eval-examples", "8", "--adv"])
    err = capsys.readouterr().err
    assert rc != 0 and len(err.strip().splitlines()) == 1
    assert "SMART (--adv)" in err and "task 'ner2' (tagging) cannot train with it" in err


def test_tasks_check_counts_tags(data_dir, tiny_encoder):
    from transformers import AutoTokenizer

    from mtdnn.tasks.check import check_task

    tc = check_task(builtin_tasks()["wnut17"], Path(data_dir), AutoTokenizer.from_pretrained(tiny_encoder), 16, False)
    assert not tc.problems
    dev = next(s for s in tc.splits if s.split == "dev")
    assert dev.rows == 1009 and dev.labels["O"] > dev.labels["B-person"] > 0
    assert any("split into overlapping windows" in w for w in tc.warnings)


def test_scores_and_reports_by_hand():
    from types import SimpleNamespace

    import numpy as np

    ner = builtin_tasks()["conll03_ner"]
    ids = {t: i for i, t in enumerate(ner.labels)}
    gold = [[ids[t] for t in s] for s in (["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"])]
    pred = np.empty(2, dtype=object)
    pred[0] = np.array([ids[t] for t in ["B-PER", "I-PER", "O", "B-ORG"]])  # LOC predicted as ORG
    pred[1] = np.array([ids[t] for t in ["B-ORG", "O"]])
    split = SimpleNamespace(word_labels=gold)
    got = ner.kind.score(ner, split, pred)
    assert got["precision"] == got["recall"] == got["f1"] == got["score"] == pytest.approx(200 / 3)
    report = ner.kind.split_report(ner, split, pred)
    assert report["labels"] == ["LOC", "ORG", "PER", "(none)"]
    assert report["confusion_matrix"]["matrix"][0] == [0, 1, 0, 0]  # the gold LOC predicted ORG
    assert ner.kind.prediction_labels(ner, pred) == ["B-PER I-PER O B-ORG", "B-ORG O"]
    pos = builtin_tasks()["conll03_pos"]
    split = SimpleNamespace(word_labels=[[0, 1, 2]])
    tags = np.empty(1, dtype=object)
    tags[0] = np.array([0, 1, 1])
    assert pos.kind.score(pos, split, tags) == {"accuracy": pytest.approx(200 / 3), "score": pytest.approx(200 / 3)}
    assert pos.kind.split_report(pos, split, tags)["accuracy"] == pytest.approx(200 / 3)
