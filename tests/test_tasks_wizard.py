"""``mtdnn tasks init`` guesses, checked on small files of known content (and a header-less slice of
CoLA); the drafts load as written. Training each user-task shape: tests/test_user_tasks.py."""

from __future__ import annotations

import json

import pytest
import yaml

from mtdnn.cli import main
from mtdnn.data.readers import read_split
from mtdnn.errors import ConfigError, DataError
from mtdnn.tasks.schema import load_task_file
from mtdnn.tasks.wizard import InitOptions, column_stats, init_task


def _write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


TICKETS = ("ticket_id,body,category\n"
           '1,"Charged twice, please refund",billing\n'
           "2,App crashes on start,bug\n"
           "3,How do I change my email address,other\n"
           "4,Invoice shows the wrong amount,billing\n"
           '5,"Button does nothing, even after restart",bug\n'
           "6,Where is the office,other\n")


def test_column_kinds():
    rows = [{"a": "1", "b": "1.5", "c": "x", "d": "-"}, {"a": "-2", "b": "3", "c": "y", "d": "0"},
            {"a": None, "b": "2e3", "c": "x", "d": "1"}]
    assert [column_stats(rows, c).kind for c in "abcd"] == ["int", "float", "text", "int"]
    assert column_stats(rows, "c").distinct == 2 and column_stats(rows, "d").values == ["0", "1"]
    assert column_stats([{"x": True}, {"x": False}], "x").kind == "text"  # JSON booleans are labels, not numbers


def test_three_class_csv_with_dev_and_unlabeled_test(tmp_path):
    _write(tmp_path / "data" / "tickets_train.csv", TICKETS)
    _write(tmp_path / "data" / "tickets_dev.csv", TICKETS)
    _write(tmp_path / "data" / "tickets_test.csv", "ticket_id,body\n7,Refund please\n")
    out, draft, sources = init_task(InitOptions(str(tmp_path / "data" / "tickets_train.csv"),
                                                output=str(tmp_path / "tickets.yaml")))
    assert draft.name == "tickets" and (draft.type, draft.input) == ("classification", "single")
    assert draft.columns == {"text_a": "body", "label": "category", "id": "ticket_id"}
    assert draft.labels == ["billing", "bug", "other"] and draft.metrics == ["accuracy", "f1_macro"]
    assert [(s.split, s.role, len(s.rows)) for s in sources] == [("train", "train", 6), ("dev", "dev", 6),
                                                                 ("test", "test", 1)]
    (task,) = load_task_file(out)
    assert task.splits["train"].path == "data/tickets_train.csv"  # relative to the draft's folder
    assert task.splits["test"].labeled is False and task.splits["test"].columns.label is None
    raw = read_split(task, "train", tmp_path / "nowhere", allow_hub=False)
    assert raw.text_a[0] == "Charged twice, please refund" and raw.ids[:2] == ["1", "2"]
    text = out.read_text()
    assert "# 3 distinct labels" in text and "label: the column named 'category'" in text
    # the draft is not replaced without --force
    with pytest.raises(ConfigError, match="the file exists: pass --force"):
        init_task(InitOptions(str(tmp_path / "data" / "tickets_train.csv"), output=str(out)))


def test_header_less_cola_slice(tmp_path, data_dir):
    lines = (data_dir / "glue" / "CoLA" / "train.tsv").read_text(encoding="utf-8").splitlines()[:80]
    src = _write(tmp_path / "cola_train.tsv", "\n".join(lines) + "\n")
    out, draft, _ = init_task(InitOptions(str(src), header=False, output=str(tmp_path / "cola.yaml")))
    assert draft.columns == {"text_a": "3", "label": "1"} and draft.labels == ["0", "1"]
    assert draft.name == "cola" and draft.metrics == ["accuracy", "f1"]
    (task,) = load_task_file(out)
    split = task.splits["train"]
    assert split.header is False and (split.columns.text_a, split.columns.label) == (3, 1)
    raw = read_split(task, "train", tmp_path, allow_hub=False)
    assert len(raw) == 80 and raw.text_a[0] == lines[0].split("\t")[3]


def test_binary_strings_put_the_positive_label_second(tmp_path):
    src = _write(tmp_path / "pairs.jsonl", "".join(json.dumps({"q": f"question {i}", "a": f"answer {i}",
                                                                "match": ["yes", "no"][i % 2]}) + "\n" for i in range(8)))
    _, draft, _ = init_task(InitOptions(str(src), output=str(tmp_path / "p.yaml")))
    assert draft.input == "pair" and draft.labels == ["no", "yes"] and draft.columns["label"] == "match"


def test_overrides_and_label_names(tmp_path):
    rows = "".join(f"{i}\tfirst text number {i}\tsecond text number {i}\t{i % 3}\n" for i in range(9))
    src = _write(tmp_path / "x.tsv", "n\tleft\tright\tcode\n" + rows)
    out, draft, _ = init_task(InitOptions(str(src), text=["right"], label="code", label_names=["lo", "mid", "hi"],
                                          name="coded", output=str(tmp_path / "c.yaml")))
    assert draft.input == "single" and draft.columns["text_a"] == "right"
    assert draft.labels == ["lo", "mid", "hi"] and draft.label_map == {"0": "lo", "1": "mid", "2": "hi"}
    (task,) = load_task_file(out)
    assert read_split(task, "train", tmp_path, allow_hub=False).labels[:4] == ["lo", "mid", "hi", "lo"]
    with pytest.raises(ConfigError, match=r"--label-names gives 2 names for 3 labels \(0, 1, 2\)"):
        init_task(InitOptions(str(src), label="code", label_names=["a", "b"], output=str(tmp_path / "d.yaml")))
    with pytest.raises(ConfigError, match=r"column: no column 'nope' \(columns: n, left, right, code\)"):
        init_task(InitOptions(str(src), label="nope", output=str(tmp_path / "e.yaml")))


def test_regression_and_ranking_guesses(tmp_path):
    rows = "".join(f"sentence {i} about cats\tsentence {i} about dogs\t{i / 4:.2f}\n" for i in range(9))
    src = _write(tmp_path / "sim.tsv", "s1\ts2\tsimilarity\n" + rows)
    _, draft, _ = init_task(InitOptions(str(src), output=str(tmp_path / "s.yaml")))
    assert (draft.type, draft.labels, draft.metrics) == ("regression", [], ["pearson", "spearman"])
    assert draft.notes["type"] == "the labels are 9 distinct numbers from 0 to 2"
    ranked = "".join(f"g{i // 3}\tquestion {i // 3}\tanswer {i}\t{int(i % 3 == 0)}\n" for i in range(9))
    src = _write(tmp_path / "rank.tsv", "grp\tq\ta\tgood\n" + ranked)
    out, draft, _ = init_task(InitOptions(str(src), group="grp", output=str(tmp_path / "r.yaml")))
    assert (draft.type, draft.input, draft.labels) == ("ranking", "ranking", ["1", "0"])
    assert draft.columns == {"text_a": "q", "text_b": "a", "label": "good", "group": "grp"}
    assert load_task_file(out)[0].splits["train"].columns.group == "grp"
    three = _write(tmp_path / "bad.tsv", "grp\tq\ta\tgood\ng\tquestion\tanswer\t0\ng\tquestion\tother\t1\n"
                                         "g\tquestion\tthird\t2\nh\tquestion\tfourth\t1\n")
    with pytest.raises(ConfigError, match="a ranking label has two values"):
        init_task(InitOptions(str(three), group="grp", label="good", output=str(tmp_path / "b.yaml")))


def test_cli_init_prints_the_next_steps(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "tickets_train.csv", TICKETS)
    assert main(["tasks", "init", "tickets_train.csv", "--name", "support_tickets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["wrote support_tickets.yaml: task support_tickets, classification, input single, labels "
                   "billing, bug, other; splits train (6 rows)",
                   "next: mtdnn tasks check support_tickets.yaml",
                   "      mtdnn train --task-file support_tickets.yaml --tasks support_tickets"]
    data = yaml.safe_load((tmp_path / "support_tickets.yaml").read_text())
    assert data["metrics"] == ["accuracy", "f1_macro"] and list(data["splits"]) == ["train"]
    assert main(["tasks", "init", "missing_train.csv"]) == 2
    assert capsys.readouterr().err.strip() == "mtdnn: error: missing_train.csv: file not found"
    assert main(["tasks", "init", "no/such/dataset"]) == 2
    assert "cannot load with datasets" in capsys.readouterr().err
    with pytest.raises(DataError):
        init_task(InitOptions("no/such/dataset"))
