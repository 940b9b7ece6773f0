"""Held-out model selection (--selection-split holdout) and early stopping
(--early-stopping-patience): the held-out rows are seeded, stratified, disjoint from what trains and
the same on resume; the kept epoch is chosen on them; training stops at the right evaluation, and
a killed run resumes to the same decision."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mtdnn.cli import main
from mtdnn.data.holdout import holdout_rows, split_off
from mtdnn.records import RawSplit
from mtdnn.tasks.registry import TaskRegistry
from mtdnn.training.methods.early_stopping import EarlyStopping, selection_score
from toy_tasks import train_argv, write_toy_data


def _raw(labels: list, groups: list[str] | None = None) -> RawSplit:
    n = len(labels)
    return RawSplit("t", "train", "t.tsv", ids=[str(i) for i in range(n)], text_a=groups or [f"a{i}" for i in range(n)],
                    text_b=[f"b{i}" for i in range(n)], labels=list(labels), lines=list(range(2, n + 2)))


def _task(tmp_path: Path, name: str):
    task_file, _ = write_toy_data(tmp_path)
    return TaskRegistry([str(task_file)]).resolve([name])[0]


def test_holdout_is_seeded_stratified_and_disjoint(tmp_path):
    task = _task(tmp_path, "toycls")
    labels = ["yes"] * 60 + ["no"] * 20
    raw = _raw(labels)
    held = holdout_rows(raw, task, 0.25, seed=3)
    assert np.array_equal(held, holdout_rows(raw, task, 0.25, seed=3))          # seeded
    assert not np.array_equal(held, holdout_rows(raw, task, 0.25, seed=4))
    assert Counter(labels[i] for i in held) == {"yes": 15, "no": 5}             # a quarter of each label
    train, holdout = split_off(raw, task, 0.25, seed=3)
    assert holdout.split == "holdout" and len(train) + len(holdout) == 80
    assert not set(train.lines) & set(holdout.lines)                             # disjoint
    assert sorted(train.lines + holdout.lines) == raw.lines


def test_regression_strata_and_ranking_questions(tmp_path):
    reg = _task(tmp_path, "toyreg")
    scores = [float(i) for i in range(100)]
    held = holdout_rows(_raw(scores), reg, 0.1, seed=0)
    assert len(held) == 10 and len({int(scores[i]) // 10 for i in held}) == 10  # one row from each tenth
    rank = _task(tmp_path, "toyrank")
    groups = [f"q{i // 3}" for i in range(30)]                                    # 10 questions of 3
    held = holdout_rows(_raw(["pos", "neg", "neg"] * 10, groups), rank, 0.2, seed=0)
    assert len(held) == 6 and len({groups[i] for i in held}) == 2                # two whole questions


def _scores(**per_task: float) -> dict:
    return {t: {"holdout": {"score": v}, "dev": {"score": -v}} for t, v in per_task.items()}


def test_early_stopping_on_a_hand_made_score_sequence():
    """Patience 2, min delta 0.5: 50 and 52 improve, 52.3 does not (< 52 + 0.5), 51 does not: the
    4th evaluation stops; the mean over two tasks is watched."""
    job = SimpleNamespace(selection_splits={"a": "holdout", "b": "holdout"})
    stop = EarlyStopping(patience=2, min_delta=0.5)
    seq = [(50, 50), (51, 53), (52.3, 52.3), (50, 52)]
    reasons = [stop.after_evaluation(job, None, _scores(a=a, b=b)) for a, b in seq]
    assert reasons[:3] == [None, None, None] and reasons[3] and "for 2 evaluations" in reasons[3]
    assert stop.epoch_fields(job, None) == {"early_stopping": {"score": 51.0, "best": 52.0, "waited": 2,
                                                               "stopped": reasons[3]}}
    # the counters are the method's resumable state: a new instance continues where it left off
    again = EarlyStopping(patience=3, min_delta=0.5)
    again.state().load_state_dict(stop.state().state_dict())
    assert again.after_evaluation(job, None, _scores(a=52, b=52)) is not None   # 3rd in a row
    assert selection_score(_scores(a=1.0, b=3.0), {"a": "dev", "b": None}) == -1.0


def _history(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "history.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_holdout_run_selects_on_held_out_rows_and_stops_early(tmp_path, tiny_encoder, cache_dir, monkeypatch):
    """A run that cannot improve (lr 1e-12) with patience 2 stops after epoch 3 of 6; the kept epoch
    of each task is its best held-out epoch; holdout.json lists the held-out lines; a run killed
    after epoch 2 resumes to the same stop, the same holdout and the same history."""
    import mtdnn.training.loop as loop

    task_file, data_dir = write_toy_data(tmp_path, n_cls=40, n_reg=30)
    extra = ("--selection-split", "holdout", "--holdout-fraction", "0.25", "--early-stopping-patience", "2",
             "--lr", "1e-12")
    run = tmp_path / "run"
    assert main(train_argv(task_file, data_dir, tiny_encoder, cache_dir, run, *extra, epochs=6)) == 0
    history = _history(run)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert "stopped" in history[-1]["early_stopping"] and "stopped" not in history[1]["early_stopping"]
    assert set(history[0]["dev"]["toycls"]) == {"dev", "holdout"}
    holdout = json.loads((run / "holdout.json").read_text())
    assert holdout["fraction"] == 0.25 and len(holdout["lines"]["toycls"]) == 10
    assert all(2 <= n <= 41 for n in holdout["lines"]["toycls"])
    selection = json.loads((run / "selection.json").read_text())["tasks"]
    for task in ("toycls", "toyreg"):
        held = [h["dev"][task]["holdout"]["score"] for h in history]
        assert selection[task] == 1 + int(np.argmax(held))  # the first best held-out epoch

    end_epoch = loop.end_epoch

    def killed_after_epoch_2(job, state, *args):
        end_epoch(job, state, *args)
        if state.epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "end_epoch", killed_after_epoch_2)
    again = tmp_path / "again"
    assert main(train_argv(task_file, data_dir, tiny_encoder, cache_dir, again, *extra, epochs=6)) == 130
    monkeypatch.setattr(loop, "end_epoch", end_epoch)
    assert main(["train", "--resume", str(again), "--no-progress"]) == 0
    assert json.loads((again / "holdout.json").read_text()) == holdout
    strip = ("train_seconds", "eval_seconds")
    assert [{k: v for k, v in h.items() if k not in strip} for h in _history(again)] == \
        [{k: v for k, v in h.items() if k not in strip} for h in history]


@pytest.mark.slow
def test_save_all_epochs_keeps_every_checkpoint(tmp_path, tiny_encoder, cache_dir):
    task_file, data_dir = write_toy_data(tmp_path)
    kept, pruned = tmp_path / "kept", tmp_path / "pruned"
    assert main(train_argv(task_file, data_dir, tiny_encoder, cache_dir, kept, "--save-all-epochs", epochs=3)) == 0
    assert main(train_argv(task_file, data_dir, tiny_encoder, cache_dir, pruned, "--selection", "last", epochs=3)) == 0
    assert sorted(p.name for p in (kept / "checkpoints").glob("epoch-*")) == [f"epoch-{e}.safetensors" for e in (1, 2, 3)]
    assert sorted(p.name for p in (pruned / "checkpoints").glob("epoch-*")) == ["epoch-3.safetensors"]
