"""Tiny user-defined tasks and data files for end-to-end CLI tests (errors, resume): a pair
classification task with a SAN head, a regression task and (on request) a ranking task, a few dozen
rows each, so that a whole training run on the tiny encoder takes about a second; and a few
SQuAD-style facts (question, context, answer) for the span tests."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = "the cat dog sat ran on a mat big small red blue house car tree".split()

TASKS_YAML = """\
- name: toycls
  type: classification
  input: pair
  labels: ["yes", "no"]
  head: {kind: san, steps: 3}
  splits:
    train: {path: cls_train.tsv, role: train, columns: {text_a: a, text_b: b, label: label}}
    dev: {path: cls_dev.tsv, role: dev, columns: {text_a: a, text_b: b, label: label}}
- name: toyreg
  type: regression
  input: pair
  metrics: [pearson]
  splits:
    train: {path: reg_train.tsv, role: train, columns: {text_a: a, text_b: b, label: score}}
    dev: {path: reg_dev.tsv, role: dev, columns: {text_a: a, text_b: b, label: score}}
- name: toyrank
  type: ranking
  input: ranking
  labels: [pos, neg]
  splits:
    train: {path: rank_train.tsv, role: train, columns: {text_a: question, text_b: answer, label: label}}
"""


def _sentence(r: random.Random) -> str:
    return " ".join(r.choice(WORDS) for _ in range(r.randint(3, 9)))


def write_toy_data(root: Path, seed: int = 0, n_cls: int = 24, n_reg: int = 16) -> tuple[Path, Path]:
    """Write ``root/tasks.yaml`` and ``root/data/*.tsv``; returns (task_file, data_dir)."""
    r = random.Random(seed)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)

    def table(name: str, header: str, rows: list[str]) -> None:
        (data / name).write_text(header + "\n" + "".join(row + "\n" for row in rows), encoding="utf-8")

    table("cls_train.tsv", "a\tb\tlabel", [f"{_sentence(r)}\t{_sentence(r)}\t{r.choice(['yes', 'no'])}" for _ in range(n_cls)])
    table("cls_dev.tsv", "a\tb\tlabel", [f"{_sentence(r)}\t{_sentence(r)}\t{r.choice(['yes', 'no'])}" for _ in range(8)])
    table("reg_train.tsv", "a\tb\tscore", [f"{_sentence(r)}\t{_sentence(r)}\t{r.uniform(0, 5):.2f}" for _ in range(n_reg)])
    table("reg_dev.tsv", "a\tb\tscore", [f"{_sentence(r)}\t{_sentence(r)}\t{r.uniform(0, 5):.2f}" for _ in range(8)])
    rank_rows = []
    for q in range(4):
        question = f"question {q} {_sentence(r)}"
        rank_rows += [f"{question}\t{_sentence(r)}\t{'pos' if k == 0 else 'neg'}" for k in range(3)]
    table("rank_train.tsv", "question\tanswer\tlabel", rank_rows)
    task_file = root / "tasks.yaml"
    task_file.write_text(TASKS_YAML, encoding="utf-8")
    return task_file, data


def train_argv(task_file: Path, data_dir: Path, encoder: str, cache_dir: str, out: Path, *extra: str,
               tasks: str = "toycls,toyreg", epochs: int = 2, batch_size: int = 4, max_seq_len: int = 32) -> list[str]:
    return ["train", "--task-file", str(task_file), "--tasks", tasks, "--data-dir", str(data_dir),
            "--encoder", encoder, "--output-dir", str(out), "--epochs", str(epochs), "--batch-size", str(batch_size),
            "--max-seq-len", str(max_seq_len), "--threads", "1", "--no-progress", "--no-hub", "--cache-dir", cache_dir,
            "--lr", "1e-3", *extra]


FACTS = [  # (answer, question, context): each answer once in its context
    ("Paris", "What is the capital of France?", "The capital of France is Paris, a city on the Seine."),
    ("Ottawa", "Which city is the capital of Canada?", "Canada has ten provinces and its capital is Ottawa."),
    ("1969", "When did people first land on the Moon?", "People first landed on the Moon in 1969 with Apollo 11."),
    ("Jupiter", "What is the largest planet?", "The largest planet of the solar system is Jupiter, a gas giant."),
    ("Everest", "Which mountain is the highest?", "Mount Everest is the highest mountain above sea level."),
    ("Nile", "Which river is the longest in Africa?", "The longest river in Africa is the Nile, flowing north."),
    ("oxygen", "What gas do people breathe in?", "People breathe in oxygen and breathe out carbon dioxide."),
    ("Tokyo", "What is the capital of Japan?", "Japan's capital and largest city is Tokyo, on Honshu."),
]


def squad_json(facts, title: str) -> dict:
    """A SQuAD v1.1 file of one article: one paragraph per fact, question ids ``<title>-<i>``."""
    paragraphs = [{"context": c, "qas": [{"id": f"{title}-{i}", "question": q,
                                          "answers": [{"text": a, "answer_start": c.index(a)}]}]}
                  for i, (a, q, c) in enumerate(facts)]
    return {"version": "1.1", "data": [{"title": title, "paragraphs": paragraphs}]}
