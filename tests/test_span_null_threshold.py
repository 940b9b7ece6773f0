"""Choosing the SQuAD v2.0 null threshold where the task file sets none: on the held-out training
questions when they are evaluated, else on a fixed quarter of the dev articles whose other
questions alone are reported; hand logits whose best threshold is known; a finished run records
it in tasks.yaml, and predictions of the saved run use it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from mtdnn.api import load_run
from mtdnn.cli import main
from mtdnn.data.readers import read_split
from mtdnn.data.tokenized import tokenize_split
from mtdnn.records import Predictions
from mtdnn.span.decoding import SpanCandidate, SpanPrediction, threshold_part
from mtdnn.tasks.schema import parse_task

CONTEXT = "Every spring the old lighthouse keeper painted the tower red."
ANSWER = "red"
QUESTION = "What colour is the tower?"
SPAN = 5.0  # start and end logit of the gold answer (unanswerable: of the context's first token)

# (answerable, null margin = null score - best span score). On these five questions the F1 of a
# threshold t: t < -1: 2 (the unanswerable ones); -1 <= t < 0.5: 3; 0.5 <= t < 1.5: 4 (q4 is
# wrong below 5); 1.5 <= t < 3: 3; 3 <= t < 5: 2; t >= 5: 3. The best is 0.5, and q4 stays wrong.
CHOOSING = [(True, -1.0), (True, 0.5), (False, 1.5), (False, 3.0), (True, 5.0)]
# right with any threshold in [0.3, 0.8), so all of them right at 0.5 (wrong at 0.2 or 0.9)
REPORTED = [(True, 0.3), (False, 0.8), (True, -2.0)]


def _squad(articles: dict[str, list[tuple[bool, float]]]) -> dict:
    data = []
    for title, questions in articles.items():
        qas = [{"id": f"{title}-{i}", "question": QUESTION, "is_impossible": not ok,
                "answers": [{"text": ANSWER, "answer_start": CONTEXT.index(ANSWER)}] if ok else []}
               for i, (ok, _) in enumerate(questions)]
        data.append({"title": title, "paragraphs": [{"context": CONTEXT, "qas": qas}]})
    return {"version": "v2.0", "data": data}


def _split(tmp_path: Path, tokenizer, name: str, articles: dict[str, list[tuple[bool, float]]], **task):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(_squad(articles)), encoding="utf-8")
    spec = {"name": "qa", "type": "span", "input": "question_context", "version": "v2.0", **task,
            "splits": {"train": {"path": str(path), "format": "squad", "role": "train"},
                       "dev": {"path": str(path), "format": "squad", "role": "dev"}}}
    t = parse_task(spec, "t.yaml")
    tok = tokenize_split(t, read_split(t, "dev", tmp_path), tokenizer, 64)
    tok.split = name
    return t, tok


def _hand_outputs(tok, margins: list[float]) -> np.ndarray:
    """Each question's one window: start and end logit SPAN at its answer (unanswerable: at the
    first context token), null logits that put its null score ``margin`` above that span."""
    assert len(tok) == len(margins)  # one window per question
    outputs = np.empty(len(tok), dtype=object)
    for w, margin in enumerate(margins):
        lo, hi = tok.offsets[w], tok.offsets[w + 1]
        row = np.zeros((hi - lo, 2))
        s, e = tok.labels[w]
        if s == 0:  # unanswerable: a wrong one-token span
            s = e = int(np.flatnonzero(tok.seg[lo:hi] == 1)[0])
        row[s, 0] += SPAN
        row[e, 1] += SPAN
        row[0, :] = (2 * SPAN + margin) / 2
        outputs[w] = row
    return outputs


def _evaluated(task, toks_and_margins) -> dict:
    out = {}
    for tok, margins in toks_and_margins:
        outputs = _hand_outputs(tok, margins)
        out[tok.split] = (tok, Predictions(outputs, task.kind.decide(task, outputs, tok)))
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_encoder)


def test_threshold_part_draws_whole_articles_else_questions():
    by_article = [SimpleNamespace(id=f"{t}{i}", title=t) for t in "ABCDEFGH" for i in range(3)]
    mask = threshold_part(by_article)
    picked = {ex.title for ex, m in zip(by_article, mask) if m}
    assert len(picked) == 2 and mask.sum() == 6  # a quarter of 8 articles, each whole
    assert (threshold_part(by_article) == mask).all()  # fixed seed: the same part every time
    assert threshold_part(by_article, seed=1).sum() == 6
    untitled = [SimpleNamespace(id=str(i), title="") for i in range(10)]
    assert threshold_part(untitled).sum() == 2  # round(0.25 * 10) questions
    one_article = [SimpleNamespace(id=str(i), title="A") for i in range(3)]
    assert threshold_part(one_article).sum() == 1  # one article: by question, never all
    two = [SimpleNamespace(id="a", title="A"), SimpleNamespace(id="b", title="B")]
    assert threshold_part(two).sum() == 1
    assert threshold_part([SimpleNamespace(id="a", title="A")]).sum() == 0


def test_chosen_on_the_holdout_applies_to_dev(tmp_path, tokenizer):
    task, held = _split(tmp_path, tokenizer, "holdout", {"H": CHOOSING})
    _, dev = _split(tmp_path, tokenizer, "dev", {"D": REPORTED})
    evaluated = _evaluated(task, [(held, [m for _, m in CHOOSING]), (dev, [m for _, m in REPORTED])])
    # at the default threshold 0, dev's first question (margin 0.3) is answered ""
    assert list(evaluated["dev"][1].preds) == ["", "", ANSWER]
    got = task.kind.score_splits(task, evaluated)
    assert got["holdout"]["null_threshold"] == got["dev"]["null_threshold"] == 0.5
    assert got["dev"]["null_threshold_questions"] == 5 and got["dev"]["questions"] == 3
    assert got["dev"]["exact"] == got["dev"]["f1"] == got["dev"]["score"] == pytest.approx(100.0)
    assert got["holdout"]["exact"] == pytest.approx(80.0) and got["holdout"]["questions"] == 5
    assert list(evaluated["dev"][1].preds) == [ANSWER, "", ANSWER]  # re-decided with 0.5
    assert task.kind.chosen_fields(task, got) == {"null_threshold": 0.5}


def test_chosen_on_a_quarter_of_dev_reported_on_the_rest(tmp_path, tokenizer):
    titles = ["Alpha", "Beta", "Gamma", "Delta"]
    mask = threshold_part([SimpleNamespace(id=t, title=t) for t in titles])
    assert mask.sum() == 1
    chooser = titles[int(np.flatnonzero(mask)[0])]
    articles = {t: CHOOSING if t == chooser else REPORTED for t in titles}
    task, dev = _split(tmp_path, tokenizer, "dev", articles)
    margins = [m for t in titles for _, m in articles[t]]
    got = task.kind.score_splits(task, _evaluated(task, [(dev, margins)]))["dev"]
    assert got["null_threshold"] == 0.5 and got["null_threshold_questions"] == 5 and got["questions"] == 9
    # the chooser's q4 is wrong at 0.5: had it been scored, exact match would be 13/14
    assert got["exact"] == got["f1"] == pytest.approx(100.0)


def test_given_threshold_and_v11_are_scored_as_before(tmp_path, tokenizer):
    task, dev = _split(tmp_path, tokenizer, "dev", {"D": REPORTED}, null_threshold=0.9)
    evaluated = _evaluated(task, [(dev, [m for _, m in REPORTED])])
    got = task.kind.score_splits(task, evaluated)["dev"]
    assert set(got) == {"exact", "f1", "score"} and got["exact"] == pytest.approx(100 * 2 / 3)  # 0.8 answered
    assert task.kind.chosen_fields(task, {"dev": got}) == {}


def test_recorded_threshold_reaches_answers_and_export_settings():
    from mtdnn.kinds.span import answer_dict

    pred = SpanPrediction("q", (SpanCandidate("the cat", 5.0, 0, 7, 0, 1, 2),), null_score=6.0)
    assert answer_dict("v2.0", pred)["text"] == "" and answer_dict("v2.0", pred, 1.5)["text"] == "the cat"
    assert answer_dict("v1.1", pred, -9.0)["text"] == "the cat"
    split = {"path": "x.json", "format": "squad", "role": "train"}
    base = {"name": "qa", "type": "span", "input": "question_context", "splits": {"train": split}}
    v2 = parse_task({**base, "version": "v2.0", "null_threshold": 1.5}, "t.yaml")
    assert v2.kind.export_settings(v2, 64)["null_threshold"] == 1.5
    assert "null_threshold" not in v2.kind.export_settings(parse_task(base, "t.yaml"), 64)  # v1.1 unchanged


FACTS = [("Paris", "What is the capital of France?", "The capital of France is Paris, a city on the Seine."),
         ("Ottawa", "Which city is the capital of Canada?", "Canada has ten provinces and its capital is Ottawa."),
         ("1969", "When did people first land on the Moon?", "People first landed on the Moon in 1969."),
         ("Jupiter", "What is the largest planet?", "The largest planet of the solar system is Jupiter.")]


def _facts(title: str, n_impossible: int) -> dict:
    paragraphs = []
    for i, (a, q, c) in enumerate(FACTS * 2):
        no = i < n_impossible
        paragraphs.append({"context": c, "qas": [{"id": f"{title}-{i}", "question": q, "is_impossible": no,
                                                  "answers": [] if no else [{"text": a, "answer_start": c.index(a)}]}]})
    return {"title": title, "paragraphs": paragraphs}


@pytest.mark.parametrize("holdout", [True, False])
def test_run_records_the_threshold_and_predicts_with_it(tmp_path, tiny_encoder, cache_dir, holdout):
    (tmp_path / "train.json").write_text(json.dumps({"version": "v2.0", "data": [_facts("Train", 3)]}))
    (tmp_path / "dev.json").write_text(json.dumps({"version": "v2.0", "data": [_facts(t, 2) for t in "ABCD"]}))
    qa = {"name": "qa", "type": "span", "input": "question_context", "version": "v2.0", "stride": 16, "splits": {
        "train": {"path": str(tmp_path / "train.json"), "format": "squad", "role": "train"},
        "dev": {"path": str(tmp_path / "dev.json"), "format": "squad", "role": "dev"}}}
    (tmp_path / "tasks.yaml").write_text(json.dumps([qa]), encoding="utf-8")
    out = tmp_path / "run"
    extra = ["--selection-split", "holdout", "--holdout-fraction", "0.25"] if holdout else []
    assert main(["train", "--task-file", str(tmp_path / "tasks.yaml"), "--tasks", "qa", "--encoder", tiny_encoder,
                 "--output-dir", str(out), "--epochs", "1", "--batch-size", "8", "--max-seq-len", "48",
                 "--threads", "1", "--no-progress", "--no-hub", "--cache-dir", cache_dir, "--lr", "1e-3",
                 *extra]) in (0, None)
    metrics = json.loads((out / "metrics.json").read_text())["qa"]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    dev = metrics["dev"]
    assert history[-1]["dev"]["qa"]["dev"] == dev
    # holdout: 2 of the 8 training questions, dev reported whole; else one of the 4 dev articles
    assert (dev["null_threshold_questions"], dev["questions"]) == ((2, 32) if holdout else (8, 24))
    saved = {t["name"]: t for t in yaml.safe_load((out / "tasks.yaml").read_text())}
    assert saved["qa"]["null_threshold"] == dev["null_threshold"]
    run = load_run(out)
    assert run.task("qa").null_threshold == dev["null_threshold"]
    # predictions of the saved run follow the threshold in tasks.yaml
    questions, contexts = [q for _, q, _ in FACTS], [c for _, _, c in FACTS]
    for threshold, empty in ((1e6, False), (-1e6, True)):
        saved["qa"]["null_threshold"] = threshold
        (out / "tasks.yaml").write_text(yaml.safe_dump(list(saved.values()), sort_keys=False))
        answers = load_run(out).predict("qa", questions, contexts)
        assert all((a["text"] == "") == empty for a in answers)
        assert load_run(out).predict_file("qa", tmp_path / "dev.json", tmp_path / "p.json") == 32
        assert all((v == "") == empty for v in json.loads((tmp_path / "p.json").read_text()).values())
