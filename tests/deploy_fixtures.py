"""The trained run the export and serve tests share (tests/test_export.py, tests/test_serve.py): the
tiny encoder trained for 2 epochs on real slices of RTE (SAN head: --pair-head san), MRPC (SAN),
STS-B (regression), SST-2 (single sentence, linear) and a ranking task on QNLI's dev file (there is
no QNLI train file here), every task keeping the last epoch. Built once per test session under pytest's base temp
folder; the exports of it likewise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import mtdnn
from mtdnn.data.readers import read_split
from mtdnn.tasks.registry import TaskRegistry

TASKS = ["rte", "mrpc", "stsb", "sst2", "qnlirank"]
N_ROWS = 24  # dev rows compared per task

RANK_YAML = """\
- name: qnlirank
  type: ranking
  input: ranking
  labels: [entailment, not_entailment]
  metrics: [accuracy]
  ranking_no_positive: drop
  splits:
    train: {role: train, path: glue/QNLI/dev.tsv, columns: {text_a: question, text_b: sentence, label: label}}
    dev: {role: dev, path: glue/QNLI/dev.tsv, columns: {id: index, text_a: question, text_b: sentence, label: label}}
"""


def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.getbasetemp() / "deploy-shared"
    d.mkdir(exist_ok=True)
    return d


def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: str, data_dir: Path) -> Path:
    """The shared run directory (trained on first use in the session)."""
    root = shared_dir(tmp_path_factory)
    out = root / "run"
    if (out / "metrics.json").is_file():
        return out
    task_file = root / "rank.yaml"
    task_file.write_text(RANK_YAML, encoding="utf-8")
    return train_run(out, tiny_encoder, data_dir, ",".join(TASKS), task_files=str(task_file), max_train_examples=32,
                     max_eval_examples=48, max_seq_len=48, epochs=2, lr=1e-3, seed=3, pair_head="san")


def train_run(out: Path, tiny_encoder: str, data_dir: Path, tasks: str, **overrides) -> Path:
    """The tiny encoder trained on ``tasks`` into ``out`` (its cache beside it; one thread, batches of
    16, every task keeping the last epoch, no test predictions); ``overrides``: the run's own
    sizes, epochs, learning rate and seed."""
    cfg = mtdnn.make_config(overrides=dict(
        tasks=tasks, encoder=tiny_encoder, data_dir=str(Path(data_dir).resolve()), cache_dir=str(out.parent / "cache"),
        output_dir=str(out), progress=False, batch_size=16, threads=1, selection="last", predict_test=False,
        **overrides))
    mtdnn.train(cfg)
    return out


def exported(tmp_path_factory: pytest.TempPathFactory, run_dir: Path, name: str, *args: str) -> Path:
    """``mtdnn export RUN_DIR ARGS --output <shared>/name`` (once per session)."""
    from mtdnn.cli import main

    out = shared_dir(tmp_path_factory) / name
    if not (out / "mtdnn_export.json").is_file():
        assert main(["export", str(run_dir), "--output", str(out), *args]) == 0
    return out


def dev_rows(run_dir: Path, data_dir: Path, task: str, n: int = N_ROWS) -> tuple[list[str], list[str | None]]:
    """The first ``n`` rows of a task's dev split (for ranking: whole candidate groups)."""
    registry = TaskRegistry([str(shared_dir_of(run_dir) / "rank.yaml")])
    t = registry.get(task)
    raw = read_split(t, "dev", data_dir, allow_hub=False)
    keep = list(range(min(n, len(raw))))
    return [raw.text_a[i] for i in keep], [raw.text_b[i] for i in keep]


def shared_dir_of(run_dir: Path) -> Path:
    return run_dir.parent


def write_input(path: Path, text_a: list[str], text_b: list[str | None]) -> Path:
    """A TSV with ``text_a``/``text_b`` columns for ``mtdnn predict`` (dev texts hold no tabs)."""
    pair = text_b[0] is not None
    lines = ["text_a\ttext_b" if pair else "text_a"]
    lines += [f"{a}\t{b}" if pair else a for a, b in zip(text_a, text_b)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_predictions(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def history(run_dir: Path) -> dict[int, dict]:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return {json.loads(x)["epoch"]: json.loads(x) for x in lines if x.strip()}


# The start of a script run in a fresh interpreter where importing mtdnn fails (the venv has it
# installed in editable mode, so a meta-path finder refuses it): exported folders with transformers
# only. ``blocked`` says that the import did fail, for the script to report.
HIDE_MTDNN = r'''
import importlib.abc, json, sys
class _NoMtdnn(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mtdnn" or name.startswith("mtdnn."):
            raise ImportError("mtdnn is hidden in this process")
sys.meta_path.insert(0, _NoMtdnn())
try:
    import mtdnn  # noqa
    blocked = False
except ImportError:
    blocked = True
'''
