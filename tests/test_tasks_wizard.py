"""``mtdnn tasks init`` guesses, checked on small files of known content (and a header-less slice of
CoLA); the drafts load as written. Training each user-task shape: tests/test_user_tasks.py."""

from __future__ import annotations

import json

import pytest
import yaml

from mtdnn.cli import main
from mtdnn.data.readers import read_split
from mtdnn.errors import ConfigError, DataError
from mtdnn.records import InitOptions
from mtdnn.tasks.check import check_task_file, format_report
from mtdnn.tasks.schema import load_task_file
from mtdnn.tasks.wizard import column_stats, init_task


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


# word POS chunk NER; the NER and chunk columns are IOB1 (entities start with I-, B- only between two
# entities of one type), POS tags are plain
CONLL = """\
-DOCSTART- -X- O O

John NNP I-NP I-PER
Smith NNP I-NP I-PER
visited VBD I-VP O
Paris NNP I-NP I-LOC
. . O O

EU NNP I-NP I-ORG
Germany NNP I-NP I-LOC
France NNP I-NP B-LOC
"""
CONLL_DEV = "Anna NNP I-NP I-PER\nsang VBD I-VP O\n\nRome NNP I-NP I-LOC\n"


def test_conll_file_drafts_a_task_per_tag_column(tmp_path, tiny_encoder):
    _write(tmp_path / "ner.train", CONLL)
    _write(tmp_path / "ner.testa", CONLL_DEV)
    out, draft, sources = init_task(InitOptions(str(tmp_path / "ner.train"), dev=str(tmp_path / "ner.testa"),
                                                label="1,2,3", output=str(tmp_path / "ner.yaml")))
    pos, chunk, ner = load_task_file(out)
    assert [t.name for t in (pos, chunk, ner)] == ["ner_1", "ner_2", "ner_3"]
    assert [t.scheme for t in (pos, chunk, ner)] == ["plain", "iob1", "iob1"]
    assert pos.labels == ["NNP", ".", "VBD"] and pos.metrics == ["accuracy"]  # by training frequency, then name
    assert chunk.labels == ["O", "B-NP", "I-NP", "B-VP", "I-VP"]
    assert ner.labels == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    assert ner.metrics == ["f1", "precision", "recall"] and ner.input == "words"
    split = ner.splits["train"]
    assert (split.format, split.columns.text_a, split.columns.label, split.path) == ("conll", 0, 3, "ner.train")
    assert ner.splits["dev"].path == "ner.testa" and [s.role for s in sources] == ["train", "dev"]
    text = out.read_text()
    # John, Paris, EU, Germany start with I-; France (B-LOC after LOC) fits both schemes
    assert "scheme: iob1  # 4 entities start with I- after O or another type, 0 with B- (IOB1; read into IOB2)" in text
    assert "# words: the column with the most distinct values (8); tags: given with --label" in text
    assert draft.summary.endswith("splits train (2 sentences), dev (2 sentences)")
    # IOB1 read into IOB2: Germany starts LOC with B-, France follows it as a new LOC entity
    raw = read_split(ner, "train", tmp_path / "nowhere", allow_hub=False)
    assert raw.labels[1] == ("B-ORG", "B-LOC", "B-LOC")
    report = check_task_file(out, encoder=tiny_encoder, allow_hub=False)
    assert report.ok, report.problems
    # without --label: the last column, and the comment names the others
    out2, _, _ = init_task(InitOptions(str(tmp_path / "ner.train"), output=str(tmp_path / "last.yaml")))
    (only,) = load_task_file(out2)
    assert only.name == "ner" and only.splits["train"].columns.label == 3
    assert "tags: the last column (also tags: 1, 2; --label 1,2,3 drafts a task each)" in out2.read_text()
    with pytest.raises(ConfigError, match="--label: column 0 holds the words"):
        init_task(InitOptions(str(tmp_path / "ner.train"), label="0", output=str(tmp_path / "x.yaml")))
    with pytest.raises(ConfigError, match=r"--label: no column 7 \(the file's columns: 0, 1, 2, 3\)"):
        init_task(InitOptions(str(tmp_path / "ner.train"), label="7", output=str(tmp_path / "x.yaml")))


def test_tag_schemes_and_tagged_json_lines(tmp_path):
    iob2 = "@me O\nsaw O\nNew B-loc\nYork I-loc\n\nHi O\nBob B-person\n"
    out, _, _ = init_task(InitOptions(str(_write(tmp_path / "w.conll", iob2)), output=str(tmp_path / "w.yaml")))
    (task,) = load_task_file(out)
    assert (task.scheme, task.labels) == ("iob2", ["O", "B-loc", "I-loc", "B-person", "I-person"])
    iobes = "a S-X\nb O\nc B-Y\nd E-Y\n"
    out, _, _ = init_task(InitOptions(str(_write(tmp_path / "e.conll", iobes)), output=str(tmp_path / "e.yaml")))
    (task,) = load_task_file(out)
    assert (task.scheme, task.labels) == ("iobes", ["O", "B-X", "I-X", "E-X", "S-X", "B-Y", "I-Y", "E-Y", "S-Y"])
    rows = [{"id": 1, "tokens": ["John", "lives", "in", "New", "York"], "ner": ["B-PER", "O", "O", "B-LOC", "I-LOC"]},
            {"id": 2, "tokens": ["Mary", "left"], "ner": ["B-PER", "O"]}]
    src = _write(tmp_path / "people_train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    out, draft, _ = init_task(InitOptions(str(src), output=str(tmp_path / "people.yaml")))
    (task,) = load_task_file(out)
    assert (task.type, task.scheme, task.name) == ("tagging", "iob2", "people")
    assert task.labels == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    assert (task.splits["train"].columns.text_a, task.splits["train"].columns.label) == ("tokens", "ner")
    assert "words: the field named 'tokens'; tags: the last list field" in out.read_text()
    assert read_split(task, "train", tmp_path, allow_hub=False).labels[0] == ("B-PER", "O", "O", "B-LOC", "I-LOC")


def _squad(path, qas_by_context, version="v2.0"):
    paragraphs = [{"context": c, "qas": qas} for c, qas in qas_by_context]
    path.write_text(json.dumps({"version": version, "data": [{"title": "T", "paragraphs": paragraphs}]}))
    return path


CONTEXT = "the cat sat on the mat"


def test_squad_json_drafts_a_span_task_and_check_reports_it(tmp_path, tiny_encoder):
    qas = [{"id": "a", "question": "who sat", "answers": [{"text": "the cat", "answer_start": 0}]},
           {"id": "b", "question": "where", "answers": [{"text": "the mat", "answer_start": 15},
                                                         {"text": "mat", "answer_start": 19}]},
           {"id": "c", "question": "who ran", "answers": [], "is_impossible": True}]
    _squad(tmp_path / "qa_train.json", [(CONTEXT, qas)])
    dev = [dict(qas[0], id="d", answers=[{"text": "the cat", "answer_start": 1}]),  # not at its start
           dict(qas[1], id="e", answers=[{"text": "mat", "answer_start": 3}])]     # nor this one
    _squad(tmp_path / "qa_dev.json", [(CONTEXT, dev)])
    _squad(tmp_path / "qa_test.json", [(CONTEXT, [{"id": "f", "question": "who sat"}])])
    out, draft, sources = init_task(InitOptions(str(tmp_path / "qa_train.json"), output=str(tmp_path / "qa.yaml")))
    (task,) = load_task_file(out)
    assert (task.type, task.input, task.version, task.metrics) == ("span", "question_context", "v2.0", ["exact", "f1"])
    assert [(n, s.format, s.labeled) for n, s in task.splits.items()] == [
        ("train", "squad", True), ("dev", "squad", True), ("test", "squad", False)]
    text = out.read_text()
    assert "version: v2.0  # 1 of 5 questions are unanswerable" in text
    assert "format: squad  # 3 questions in 1 article" in text
    assert draft.summary == ("task qa, span (v2.0), input question_context; splits train (3 questions), "
                             "dev (2 questions), test (1 questions)")
    # the context is 6 tokens: a question of 2 tokens + [CLS] + 2 [SEP] leaves 3 per window at 8
    report = check_task_file(out, encoder=tiny_encoder, max_seq_len=8, allow_hub=False)
    train, dev_check, test = report.tasks[0].splits
    assert train.extra == {"unanswerable": 1, "answers": 3}
    assert train.windows["rows"] == 3 and train.windows["split"] == 3
    assert dev_check.error is not None and "(in all, 2 of 2 answers are not found at their start: " \
        "data[0].paragraphs[0].qas[0], data[0].paragraphs[0].qas[1])" in dev_check.error
    assert test.error is None and test.rows == 1 and not test.labeled
    assert "    answers: 3 gold answers; unanswerable questions: 1 (33.3%)" in format_report(report)
    assert not report.ok


def test_span_json_lines_columns_by_name(tmp_path):
    rows = [{"qid": "1", "question": "who sat", "context": CONTEXT, "answer": "the cat", "answer_start": 0},
            {"qid": "2", "question": "where", "context": CONTEXT, "answer": "the mat", "answer_start": 15}]
    src = _write(tmp_path / "rc_train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _write(tmp_path / "rc_test.jsonl", json.dumps({"question": "who", "context": CONTEXT}) + "\n")
    out, _, _ = init_task(InitOptions(str(src), output=str(tmp_path / "rc.yaml")))
    (task,) = load_task_file(out)
    assert (task.type, task.version) == ("span", "v1.1")
    cols = task.splits["train"].columns
    assert (cols.text_a, cols.text_b, cols.label, cols.answer_start, cols.id) == (
        "question", "context", "answer", "answer_start", "qid")
    assert task.splits["test"].labeled is False and task.splits["test"].columns.label is None
    raw = read_split(task, "train", tmp_path, allow_hub=False)
    assert raw.ids == ["1", "2"] and raw.labels[1] == (("the mat", 15),)
    assert read_split(task, "test", tmp_path, allow_hub=False).text_a == ["who"]
    with pytest.raises(ConfigError, match="a SQuAD JSON file names its fields itself"):
        init_task(InitOptions(str(_squad(tmp_path / "x.json", [(CONTEXT, [])])), text=["q"],
                              output=str(tmp_path / "x.yaml")))
