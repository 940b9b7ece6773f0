"""Span readers: SQuAD JSON v1.1 (the real dev file) and v2.0, JSON lines and CSV with several
gold answers, every kind of bad input as a one-line DataError, the split by articles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtdnn.errors import DataError
from mtdnn.span.readers import (SQUAD11_DEV_EVAL_TITLES, SQUAD11_DEV_N_TRAIN_ARTICLES,
                                SQUAD11_DEV_TRAIN_TITLES, SpanColumns, SpanExample, article_titles,
                                first_article_titles, gold_answers, read_span_csv, read_span_file,
                                read_span_jsonl, read_squad_json, split_by_articles)

CTX = "Denver Broncos beat the Carolina Panthers."


def _squad(qas: list[dict], context: str = CTX, title: str = "T", version: str = "1.1") -> dict:
    return {"version": version, "data": [{"title": title, "paragraphs": [{"context": context,
                                                                          "qas": qas}]}]}


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dev(data_dir) -> list[SpanExample]:
    return read_squad_json(data_dir / "squad" / "v1.1" / "dev-v1.1.json")


def test_real_dev_file_counts(dev):
    assert len(dev) == 10570
    assert len(article_titles(dev)) == 48
    assert len({ex.id for ex in dev}) == 10570
    assert sum(len(ex.answers) for ex in dev) == 34726
    assert not any(ex.is_impossible for ex in dev)
    # every gold answer matches its context at its start (the reader checks; count them here too)
    bad = [ex.id for ex in dev for text, start in ex.answers
           if ex.context[start:start + len(text)] != text]
    assert bad == []
    first = dev[0]
    assert first.title == "Super_Bowl_50" and first.line == "data[0].paragraphs[0].qas[0]"
    assert first.answers[0] == ("Denver Broncos", 177)


def test_real_dev_article_split(dev):
    assert first_article_titles(dev, SQUAD11_DEV_N_TRAIN_ARTICLES) == list(SQUAD11_DEV_TRAIN_TITLES)
    assert article_titles(dev)[SQUAD11_DEV_N_TRAIN_ARTICLES:] == list(SQUAD11_DEV_EVAL_TITLES)
    train, rest = split_by_articles(dev, SQUAD11_DEV_TRAIN_TITLES)
    assert (len(train), len(rest)) == (8981, 1589)
    assert {ex.title for ex in train}.isdisjoint({ex.title for ex in rest})
    assert {ex.title for ex in rest} == set(SQUAD11_DEV_EVAL_TITLES)


def test_split_by_articles_keeps_order_and_rejects_unknown_titles():
    exs = [SpanExample(str(i), t, "q?", "c", (), True) for i, t in enumerate("ABABC")]
    train, rest = split_by_articles(exs, ["B"])
    assert [e.id for e in train] == ["1", "3"] and [e.id for e in rest] == ["0", "2", "4"]
    with pytest.raises(DataError, match="not in the data: Z"):
        split_by_articles(exs, ["B", "Z"])
    with pytest.raises(DataError, match="cannot take 3 of 3"):
        first_article_titles(exs, 3)


def test_squad_v2_impossible_ignores_plausible_answers(tmp_path):
    qas = [{"id": "a", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 0}],
            "is_impossible": False},
           {"id": "b", "question": "Who lost in 1990?", "answers": [], "is_impossible": True,
            "plausible_answers": [{"text": "Carolina Panthers", "answer_start": 24}]}]
    exs = read_squad_json(_write(tmp_path, "v2.json", _squad(qas, version="v2.0")))
    assert [(e.id, e.answers, e.is_impossible) for e in exs] == [
        ("a", (("Denver Broncos", 0),), False), ("b", (), True)]
    assert gold_answers(exs) == {"a": ["Denver Broncos"], "b": []}
    assert exs[1].line == "data[0].paragraphs[0].qas[1]"


def _qa(**kw) -> dict:
    qa = {"id": "q1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 0}]}
    qa.update(kw)
    return qa


@pytest.mark.parametrize("qa, context, message, field", [
    (_qa(answers=[{"text": "Denver Broncos", "answer_start": 40}]), CTX, "beyond the context",
     "answers[0]"),
    (_qa(answers=[{"text": "Denver Broncos", "answer_start": 1}]), CTX, "differs from the context",
     "answers[0]"),
    (_qa(question="  "), CTX, "empty question", "question"),
    (_qa(), " \n", "empty context", "context"),
    (_qa(answers=[]), CTX, "not marked is_impossible", "answers"),
    (_qa(answers=[{"text": "Denver", "answer_start": "0"}]), CTX, "expected int",
     "answers[0].answer_start"),
    (_qa(id=7), CTX, "expected str", "id"),
])
def test_squad_bad_questions(tmp_path, qa, context, message, field):
    qas = [_qa(id="ok"), qa] if context == CTX else [qa]  # a good question first where it can be
    path = _write(tmp_path, "bad.json", _squad(qas, context=context))
    with pytest.raises(DataError, match=message) as e:
        read_squad_json(path)
    assert e.value.field == field and e.value.path == str(path)
    assert str(e.value.line).startswith("data[0].paragraphs[0].qas[")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("doc, message", [
    ([1, 2], "expected dict"),
    ({"version": "1.1"}, "expected list"),
    ({"data": [{"title": "T", "paragraphs": {"context": "x"}}]}, "expected list"),
    ({"data": [{"title": "T", "paragraphs": [{"qas": []}]}]}, "expected str"),
])
def test_json_not_squad_shaped(tmp_path, doc, message):
    with pytest.raises(DataError, match=message) as e:
        read_squad_json(_write(tmp_path, "x.json", doc))
    assert "not SQuAD-shaped" in str(e.value)


def test_invalid_json_missing_file_and_duplicate_ids(tmp_path):
    with pytest.raises(DataError, match="not valid JSON"):
        read_squad_json(_write(tmp_path, "x.json", "{oops"))
    with pytest.raises(DataError, match="file not found"):
        read_squad_json(tmp_path / "none.json")
    with pytest.raises(DataError, match="duplicate id 'q1'") as e:
        read_squad_json(_write(tmp_path, "d.json", _squad([_qa(), _qa()])))
    assert e.value.line == "data[0].paragraphs[0].qas[1]"


def test_jsonl_several_answers_custom_columns_and_impossible(tmp_path):
    rows = [{"qid": "x", "q": "Who won?", "c": CTX, "a": ["Denver Broncos", "Denver"], "s": [0, 0]},
            {"q": "Who lost?", "c": CTX, "a": "Carolina Panthers", "s": 24},
            {"q": "Who tied?", "c": CTX, "a": [], "s": []}]
    text = "\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n"
    cols = SpanColumns(id="qid", question="q", context="c", answer_text="a", answer_start="s")
    exs = read_span_jsonl(_write(tmp_path, "x.jsonl", text), cols)
    assert [(e.id, e.answers, e.is_impossible, e.line, e.title) for e in exs] == [
        ("x", (("Denver Broncos", 0), ("Denver", 0)), False, 1, ""),
        ("2", (("Carolina Panthers", 24),), False, 2, ""),
        ("4", (), True, 4, "")]


@pytest.mark.parametrize("row, message, field", [
    ({"question": "Q?", "context": CTX, "answer_text": "Broncos", "answer_start": 0},
     "differs from the context", "answers[0]"),
    ({"question": "Q?", "context": CTX, "answer_text": "x", "answer_start": 99}, "beyond the context",
     "answers[0]"),
    ({"question": "", "context": CTX, "answer_text": "x", "answer_start": 0}, "empty question",
     "question"),
    ({"question": "Q?", "context": CTX, "answer_text": ["a", "b"], "answer_start": [0]},
     "2 answer texts but 1 answer starts", "answer_start"),
    ({"question": "Q?", "context": CTX, "answer_text": "x"}, "missing column", "answer_start"),
    ({"question": "Q?", "context": CTX, "answer_text": "Denver", "answer_start": 0.5},
     "not an integer", "answer_start"),
])
def test_jsonl_bad_rows(tmp_path, row, message, field):
    good = {"question": "Q?", "context": CTX, "answer_text": "Denver", "answer_start": 0}
    path = _write(tmp_path, "x.jsonl", json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message) as e:
        read_span_jsonl(path)
    assert (e.value.line, e.value.field) == (2, field)
    assert str(e.value).startswith(f"{path}:2, field '{field}': ")


def test_csv_lists_multiline_cells_and_errors(tmp_path):
    ctx2 = "Line one.\nDenver won."
    text = ("id,title,question,context,answer_text,answer_start\n"
            f'a,T1,Who won?,{CTX},Denver Broncos,0\n'
            f'b,T2,Who won?,"{ctx2}","[""Denver"", ""Denver won""]","[10, 10]"\n'
            f'c,T2,Who?,{CTX},,\n')
    exs = read_span_file(_write(tmp_path, "x.csv", text))
    assert [(e.id, e.title, e.answers, e.is_impossible, e.line) for e in exs] == [
        ("a", "T1", (("Denver Broncos", 0),), False, 2),
        ("b", "T2", (("Denver", 10), ("Denver won", 10)), False, 3),
        ("c", "T2", (), True, 5)]
    bad = text + 'd,T3,Who?,"Denver",Denver,"[0"\n'
    with pytest.raises(DataError, match="expected a JSON list") as e:
        read_span_csv(_write(tmp_path, "bad.csv", bad))
    assert e.value.line == 6
    with pytest.raises(DataError, match="differs from the context") as e:
        read_span_csv(_write(tmp_path, "bad2.csv", text + "e,T,Q?,Denver,denver,0\n"))
    assert (e.value.line, e.value.field) == (6, "answers[0]")
    with pytest.raises(DataError, match="unknown file type"):
        read_span_file(tmp_path / "x.tsv")
