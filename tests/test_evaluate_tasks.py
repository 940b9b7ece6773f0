"""The one evaluation loop (``evaluation.evaluate_tasks``) used by training and the API: the same
metrics as predicting and scoring each split by hand, in data order and split definition order,
with the API's per-task callback before each task's splits."""

from __future__ import annotations

import pytest
import torch

from mtdnn import evaluation
from mtdnn.data.pipeline import TaskData
from mtdnn.data.readers import read_split
from mtdnn.data.tokenized import tokenize_split
from mtdnn.evaluation import evaluate_tasks, predict, score
from mtdnn.model.multitask import MultiTaskModel, load_encoder, load_tokenizer
from mtdnn.tasks.registry import builtin_tasks


@pytest.fixture(scope="module")
def setup(tiny_encoder, data_dir):
    tokenizer = load_tokenizer(tiny_encoder)
    b = builtin_tasks()
    tasks = [b["stsb"], b["mnli"], b["rte"]]
    torch.manual_seed(0)
    model = MultiTaskModel(load_encoder(tiny_encoder), tasks)

    def tok(task, split, n):
        raw = read_split(task, split, data_dir, allow_hub=False).select(list(range(n)))
        return tokenize_split(task, raw, tokenizer, 32, cache_dir=None)

    data = {"stsb": TaskData(b["stsb"], evals={"dev": tok(b["stsb"], "dev", 7)}),
            "mnli": TaskData(b["mnli"], evals={"dev_matched": tok(b["mnli"], "dev_matched", 5),
                                               "dev_mismatched": tok(b["mnli"], "dev_mismatched", 6)}),
            "rte": TaskData(b["rte"], train=tok(b["rte"], "train", 4))}  # no evaluation split
    return model, data


def test_same_metrics_as_predict_and_score(setup):
    model, data = setup
    got = evaluate_tasks(model, data, batch_size=4, device=torch.device("cpu"))
    by_hand = {}
    for name in ("stsb", "mnli"):
        td = data[name]
        for split_name, split in td.evals.items():
            preds = predict(model, td.task, split, batch_size=4, device=torch.device("cpu"))
            by_hand.setdefault(name, {})[split_name] = score(td.task, split, preds)
    assert got == by_hand
    assert list(got) == ["stsb", "mnli"] and list(got["mnli"]) == ["dev_matched", "dev_mismatched"]
    assert list(got["stsb"]["dev"]) == ["pearson", "spearman", "score"]


def test_before_task_runs_before_each_task_with_splits(setup, monkeypatch):
    model, data = setup
    events: list[tuple[str, ...]] = []
    real = evaluation.predict

    def spy(model, task, split, **kw):
        events.append(("predict", task.name, split.split, str(kw["batch_size"]), kw["precision"]))
        return real(model, task, split, **kw)

    monkeypatch.setattr(evaluation, "predict", spy)
    out = evaluate_tasks(model, data, batch_size=3, device=torch.device("cpu"), precision="fp32",
                         before_task=lambda name: events.append(("before", name)))
    assert events == [("before", "stsb"), ("predict", "stsb", "dev", "3", "fp32"),
                      ("before", "mnli"), ("predict", "mnli", "dev_matched", "3", "fp32"),
                      ("predict", "mnli", "dev_mismatched", "3", "fp32")]
    assert set(out) == {"stsb", "mnli"}
