"""The span kind (extractive question answering) end to end: task files, a tiny encoder trained on
a hand-made SQuAD-shaped file beside RTE (exact match and F1 in metrics.json), answers that are
spans of their contexts, windows of a long context merged per question, the methods that refuse
span tasks in one line, and the built-in squad11's article split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtdnn.api import load_run
from mtdnn.cli import main
from mtdnn.data.readers import read_split
from mtdnn.errors import ConfigError
from mtdnn.kinds import get_kind
from mtdnn.tasks.registry import builtin_tasks
from mtdnn.tasks.schema import parse_task

from toy_tasks import FACTS, squad_json, train_argv

def _task(**changes) -> dict:
    split = {"path": "x.json", "format": "squad", "role": "train"}
    return {"name": "qa", "type": "span", "input": "question_context", "splits": {"train": split}, **changes}


def test_span_task_defaults():
    task = parse_task(_task(stride=32, version="v2.0"), "t.yaml")
    assert task.metric_names == ["exact", "f1"] and task.num_outputs == 2
    assert task.splits["train"].columns.text_b == "context"
    jsonl = {"path": "x.jsonl", "format": "jsonl", "role": "train", "titles": ["A", "B"],
             "columns": {"text_a": "q", "text_b": "c", "label": "a", "answer_start": "s"}}
    assert parse_task(_task(splits={"train": jsonl}), "t.yaml").splits["train"].titles == ["A", "B"]


@pytest.mark.parametrize("changes, message", [
    ({"input": "pair"}, "a span task needs input: question_context"),
    ({"labels": ["a", "b"]}, "a span task has no labels"),
    ({"metrics": ["accuracy"]}, "'accuracy' is not a metric of span tasks: use exact, f1"),
    ({"version": "v3"}, "version"),
    ({"splits": {"train": {"path": "x.tsv", "role": "train", "columns": {"text_a": "q", "label": "a"}}}},
     "a span task reads format squad, jsonl or csv, not tsv"),
    ({"splits": {"train": {"path": "x.jsonl", "format": "jsonl", "role": "train",
                           "columns": {"text_a": "q", "label": "a"}}}}, "needs columns.text_b"),
    ({"splits": {"train": {"path": "x.json", "format": "squad", "role": "train", "titles": "last:3"}}},
     "titles 'last:3': use first:N, after:N"),
])
def test_span_task_rules(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_task(_task(**changes), "t.yaml")


def test_other_kinds_refuse_span_fields():
    split = {"path": "x.tsv", "role": "train", "columns": {"text_a": "a", "label": "y"}}
    base = {"name": "c", "type": "classification", "input": "single", "labels": ["a", "b"]}
    with pytest.raises(ConfigError, match="stride is for span tasks only"):
        parse_task({**base, "stride": 64, "splits": {"train": split}}, "t.yaml")
    with pytest.raises(ConfigError, match="format squad, titles and columns.answer_start are for span tasks"):
        parse_task({**base, "splits": {"train": {"path": "x.json", "format": "squad", "role": "train"}}}, "t.yaml")


def test_refusals_are_one_line():
    kind = get_kind("span")
    for method, words in (("smart", "SMART (--adv)"), ("distillation", "distillation (--teachers)")):
        why = kind.refuses(method)
        assert why is not None and words in why and "\n" not in why
    assert kind.refuses("lora") is None and kind.refuses("export") is None  # tests/test_span_export.py


def test_windows_of_a_long_context_merge_per_question(tmp_path, tiny_encoder):
    from transformers import AutoTokenizer

    from mtdnn.data.tokenized import tokenize_split

    filler = " ".join(f"Sentence {i} says nothing of note here." for i in range(30))
    context = filler + " The treasure is buried under the old oak tree. " + filler
    long = [("under the old oak tree", "Where is the treasure buried?", context)]
    (tmp_path / "x.json").write_text(json.dumps(squad_json(long + FACTS[:2], "Long")), encoding="utf-8")
    task = parse_task({**_task(stride=8), "base_dir": str(tmp_path)}, "t.yaml")
    raw = read_split(task, "train", tmp_path)
    tok = tokenize_split(task, raw, AutoTokenizer.from_pretrained(tiny_encoder), 64)
    first = tok.span_windows.example_index == 0
    assert first.sum() > 3 and len(tok) == len(tok.span_windows) and tok.labels.shape == (len(tok), 2)
    assert (tok.labels[first, 0] > 0).sum() >= 1  # some window holds the answer, the others target null
    # logits that point at the answer in one window only: the question's answer is that span
    outputs = np.empty(len(tok), dtype=object)
    for w in range(len(tok)):
        row = np.zeros((int(tok.lengths[w]), 2))
        s, e = tok.labels[w]
        if s > 0:
            row[s, 0], row[e, 1] = 10.0, 10.0
        outputs[w] = row
    preds = task.kind.decide(task, outputs, tok)
    assert len(preds) == len(raw) == 3 and preds[0] == "under the old oak tree"
    assert task.kind.score(task, tok, preds)["exact"] == pytest.approx(100.0)


def _train_beside_rte(tmp_path: Path, encoder: str, data_dir: Path, cache_dir: str, *extra: str) -> Path:
    """A one-epoch run of RTE and a hand-made SQuAD-shaped task (8 training, 6 dev questions)."""
    (tmp_path / "train.json").write_text(json.dumps(squad_json(FACTS, "Train")), encoding="utf-8")
    (tmp_path / "dev.json").write_text(json.dumps(squad_json(FACTS[:6], "Dev")), encoding="utf-8")
    qa = _task(name="qa", stride=16, splits={
        "train": {"path": str(tmp_path / "train.json"), "format": "squad", "role": "train"},
        "dev": {"path": str(tmp_path / "dev.json"), "format": "squad", "role": "dev"}})
    task_file = tmp_path / "tasks.yaml"
    task_file.write_text(json.dumps([qa]), encoding="utf-8")
    out = tmp_path / "run"
    assert main(train_argv(task_file, data_dir, encoder, cache_dir, out, "--max-train-examples", "16",
                           "--max-eval-examples", "16", *extra, tasks="rte,qa", epochs=1, batch_size=8,
                           max_seq_len=48)) in (0, None)
    return out


def test_span_trains_evaluates_and_predicts_beside_rte(tmp_path, tiny_encoder, data_dir, cache_dir):
    out = _train_beside_rte(tmp_path, tiny_encoder, data_dir, cache_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["qa"]["dev"]) == {"exact", "f1", "score"}
    assert metrics["qa"]["dev"]["score"] == metrics["qa"]["dev"]["f1"] and "accuracy" in metrics["rte"]["dev"]
    run = load_run(out)
    contexts = [c for _, _, c in FACTS[:3]]
    answers = run.predict("qa", [q for _, q, _ in FACTS[:3]] + ["Who?"], contexts + [""])
    assert len(answers) == 4 and answers[3] is None
    for context, answer in zip(contexts, answers):
        assert answer["text"] and answer["text"] in context
        assert context[answer["start"]:answer["end"]] == answer["text"]
    n = run.predict_file("qa", tmp_path / "dev.json", tmp_path / "predictions.json")
    got = json.loads((tmp_path / "predictions.json").read_text(encoding="utf-8"))
    assert n == 6 and set(got) == {f"Dev-{i}" for i in range(6)}
    assert all(got[f"Dev-{i}"] in FACTS[i][2] for i in range(6))
    # files without answers: SQuAD JSON whose questions have no "answers", JSON lines of question and context
    bare = squad_json(FACTS[:3], "Bare")
    for article in bare["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                qa.pop("answers", None)
                qa.pop("is_impossible", None)
    (tmp_path / "bare.json").write_text(json.dumps(bare), encoding="utf-8")
    assert run.predict_file("qa", tmp_path / "bare.json", tmp_path / "bare_predictions.json") == 3
    bare_got = json.loads((tmp_path / "bare_predictions.json").read_text(encoding="utf-8"))
    assert set(bare_got) == {f"Bare-{i}" for i in range(3)} and all(bare_got[f"Bare-{i}"] in FACTS[i][2]
                                                                     for i in range(3))
    (tmp_path / "bare.jsonl").write_text("".join(json.dumps({"id": f"j{i}", "question": q, "context": c}) + "\n"
                                                 for i, (_, q, c) in enumerate(FACTS[:2])), encoding="utf-8")
    assert run.predict_file("qa", tmp_path / "bare.jsonl", tmp_path / "bare_jsonl.json") == 2
    assert set(json.loads((tmp_path / "bare_jsonl.json").read_text(encoding="utf-8"))) == {"j0", "j1"}


@pytest.mark.slow
def test_span_trains_with_lora(tmp_path, tiny_encoder, data_dir, cache_dir):
    out = _train_beside_rte(tmp_path, tiny_encoder, data_dir, cache_dir, "--adapter", "lora",
                            "--sampling", "temperature")
    assert set(json.loads((out / "metrics.json").read_text())["qa"]["dev"]) == {"exact", "f1", "score"}


def test_squad11_splits_the_dev_file_by_articles(data_dir):
    from mtdnn.span.readers import SQUAD11_DEV_EVAL_TITLES, SQUAD11_DEV_TRAIN_TITLES, article_titles

    task = builtin_tasks()["squad11"]
    train, dev = (read_split(task, s, data_dir) for s in ("train", "dev"))
    assert (len(train), len(dev)) == (8981, 1589)
    assert tuple(article_titles(train.examples)) == SQUAD11_DEV_TRAIN_TITLES
    assert tuple(article_titles(dev.examples)) == SQUAD11_DEV_EVAL_TITLES


def test_null_threshold_of_the_task_file():
    from mtdnn.errors import ConfigError
    from mtdnn.kinds.span import answer_text
    from mtdnn.span.decoding import SpanCandidate, SpanPrediction
    from mtdnn.tasks.schema import parse_task

    # best span 2.0 + 3.0 = 5.0, null 6.0: the null answer wins by a margin of 1.0
    pred = SpanPrediction("q", (SpanCandidate("the cat", 5.0, 0, 7, 0, 1, 2),), null_score=6.0)
    v2 = parse_task(_task(version="v2.0"), "t.yaml")
    assert v2.null_threshold is None and answer_text(v2, pred) == ""           # threshold 0 < 1.0
    assert answer_text(parse_task(_task(version="v2.0", null_threshold=1.5), "t.yaml"), pred) == "the cat"
    assert answer_text(parse_task(_task(version="v2.0", null_threshold=0.5), "t.yaml"), pred) == ""
    assert answer_text(parse_task(_task(), "t.yaml"), pred) == "the cat"          # v1.1: always a span
    with pytest.raises(ConfigError, match="null_threshold is for tasks with version: v2.0"):
        parse_task(_task(null_threshold=1.0), "t.yaml")
    with pytest.raises(ConfigError, match="null_threshold is for span tasks only"):
        parse_task({"name": "c", "type": "classification", "input": "single", "labels": ["a", "b"],
                    "null_threshold": 1.0, "splits": {"train": {"path": "x.tsv", "role": "train",
                                                                "columns": {"text_a": "t", "label": "l"}}}}, "t.yaml")
