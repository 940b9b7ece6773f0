"""Metrics that fit any label set (checked when the task file loads) and data paths resolved beside
the task file first, then in the data dir, then as given."""

from __future__ import annotations

import numpy as np
import pytest

from mtdnn.data.readers import read_split
from mtdnn.errors import ConfigError, DataError
from mtdnn.evaluation import score
from mtdnn.metrics import compute_metric
from mtdnn.records import Predictions
from mtdnn.tasks.registry import builtin_tasks
from mtdnn.tasks.schema import load_task_file, parse_task

# 3 classes: class 0 TP 3, FN 1 (P 1, R 3/4, F 6/7); class 1 TP 1, FP 2 (P 1/3, R 1, F 1/2);
# class 2 FN 1 (F 0); supports 4, 1, 1
GOLD = np.array([0, 0, 0, 0, 1, 2])
PRED = np.array([0, 0, 0, 1, 1, 1])

SUPPORT_TICKETS = """\
name: support_tickets
type: classification
input: single
labels: [billing, bug, other]
metrics: [accuracy, f1]
splits:
  train: {role: train, path: tickets.csv, format: csv, columns: {text_a: body, label: category}}
"""


def test_averaged_f1_by_hand():
    assert compute_metric("f1_macro", PRED, GOLD) == pytest.approx(100 * (6 / 7 + 1 / 2 + 0) / 3)
    assert compute_metric("f1_weighted", PRED, GOLD) == pytest.approx(100 * (4 * 6 / 7 + 1 / 2) / 6)
    assert compute_metric("f1_micro", PRED, GOLD) == pytest.approx(100 * 4 / 6)  # = accuracy


def test_f1_of_more_than_two_labels_is_macro_and_named_so(tmp_path):
    """The example that used to die after an epoch ("Target is multiclass but average='binary'")."""
    f = tmp_path / "tickets.yaml"
    f.write_text(SUPPORT_TICKETS, encoding="utf-8")
    (task,) = load_task_file(f)
    assert task.metrics == ["accuracy", "f1"] and task.metric_names == ["accuracy", "f1_macro"]

    class _Split:
        labels = GOLD

    got = score(task, _Split, Predictions(np.zeros((6, 3)), PRED))
    assert list(got) == ["accuracy", "f1_macro", "score"]
    assert got["f1_macro"] == pytest.approx(100 * (6 / 7 + 1 / 2) / 3)
    assert got["score"] == pytest.approx((100 * 4 / 6 + got["f1_macro"]) / 2)
    # binary tasks keep 'f1' (GLUE's binary F1 of label index 1)
    assert builtin_tasks()["mrpc"].metric_names == ["f1", "accuracy"]


@pytest.mark.parametrize("kind,metrics,piece", [
    ("classification", "[accuracy, pearson]", "'pearson' is for regression scores, a classification task predicts classes"),
    ("ranking", "[spearman]", "'spearman' is for regression scores, a ranking task predicts classes"),
    ("regression", "[pearson, accuracy]", "'accuracy' needs predicted classes, a regression task predicts scores: "
                                          "use pearson or spearman"),
    ("classification", "[f1, f1_macro]", "'f1_macro' is listed twice (with 3 labels, f1 is macro-F1"),
])
def test_a_metric_that_cannot_be_computed_is_an_error_on_load(tmp_path, kind, metrics, piece):
    text = {"classification": SUPPORT_TICKETS,
            "ranking": SUPPORT_TICKETS.replace("type: classification", "type: ranking").replace(
                "input: single", "input: ranking").replace("[billing, bug, other]", "[pos, neg]").replace(
                "text_a: body,", "text_a: q, text_b: body,"),
            "regression": SUPPORT_TICKETS.replace("type: classification", "type: regression").replace(
                "labels: [billing, bug, other]\n", "")}[kind]
    f = tmp_path / "t.yaml"
    f.write_text(text.replace("metrics: [accuracy, f1]", f"metrics: {metrics}"), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_task_file(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: field 'metrics': ") and piece in msg and "\n" not in msg


def test_default_metrics_follow_the_type():
    base = {"name": "t", "input": "single",
            "splits": {"train": {"role": "train", "path": "x.tsv", "columns": {"text_a": 0, "label": 1}}}}
    assert parse_task({**base, "type": "regression"}, "t").metrics == ["pearson", "spearman"]
    assert parse_task({**base, "type": "classification", "labels": ["a", "b"]}, "t").metrics == ["accuracy"]


def test_class_report_by_hand():
    task = load_task_file_text(SUPPORT_TICKETS)
    r = task.kind.class_report(task, GOLD, PRED)
    assert r["labels"] == ["billing", "bug", "other"] and r["rows"] == 6
    assert r["per_class"]["billing"] == pytest.approx({"precision": 100.0, "recall": 75.0, "f1": 100 * 6 / 7,
                                                       "support": 4})
    assert r["per_class"]["bug"] == pytest.approx({"precision": 100 / 3, "recall": 100.0, "f1": 50.0, "support": 1})
    assert r["per_class"]["other"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["confusion_matrix"]["matrix"] == [[3, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert r["accuracy"] == pytest.approx(100 * 4 / 6)
    assert r["f1_weighted"] == pytest.approx(100 * (4 * 6 / 7 + 1 / 2) / 6)
    # ranking: class 0 is "not the best candidate" (labels[1]), class 1 the best (labels[0])
    rank = builtin_tasks()["qnli_rank"]
    rr = rank.kind.class_report(rank, np.array([1, 0, 0, 1]), np.array([1, 1, 0, 0]))
    assert rr["labels"] == ["not_entailment", "entailment"]
    assert rr["confusion_matrix"]["matrix"] == [[1, 1], [1, 1]]


def load_task_file_text(text: str):
    return parse_task(__import__("yaml").safe_load(text), "t.yaml")


# ----------------------------------------------------------------------------- paths
def _task_file(folder, path: str) -> object:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "task.yaml"
    f.write_text(f"""name: t
type: classification
input: single
labels: [a, b]
splits:
  train: {{role: train, path: {path}, columns: {{text_a: text, label: label}}}}
""", encoding="utf-8")
    return f


def _data(path, label: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"text\tlabel\nsome words\t{label}\n", encoding="utf-8")
    return path


def test_paths_beside_the_task_file_then_data_dir_then_as_given(tmp_path, monkeypatch):
    cwd, data_dir = tmp_path / "cwd", tmp_path / "data"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    (task,) = load_task_file(_task_file(tmp_path / "tasks", "files/train.tsv"))
    assert task.base_dir == str((tmp_path / "tasks").resolve())
    beside = _data(tmp_path / "tasks" / "files" / "train.tsv", "a")
    in_data = _data(data_dir / "files" / "train.tsv", "b")
    given = _data(cwd / "files" / "train.tsv", "a")
    assert read_split(task, "train", data_dir, allow_hub=False).source == str(beside)
    beside.unlink()
    assert read_split(task, "train", data_dir, allow_hub=False).source == str(in_data)
    in_data.unlink()
    raw = read_split(task, "train", data_dir, allow_hub=False)
    assert raw.source == "files/train.tsv" and raw.labels == ["a"]
    given.unlink()
    with pytest.raises(DataError) as err:
        read_split(task, "train", data_dir, allow_hub=False)
    assert str(err.value) == (
        f"files/train.tsv: file not found (task 't', split 'train'); looked in: "
        f"{tmp_path.resolve() / 'tasks' / 'files' / 'train.tsv'} (beside the task file); "
        f"{data_dir / 'files' / 'train.tsv'} (in the data dir); files/train.tsv (from the current folder); "
        "set --data-dir or MTDNN_DATA_DIR, or write the path relative to the task file")


def test_absolute_paths_and_builtin_tasks(tmp_path, data_dir):
    target = _data(tmp_path / "elsewhere" / "train.tsv", "b")
    (task,) = load_task_file(_task_file(tmp_path / "tasks", str(target)))
    assert read_split(task, "train", tmp_path / "no-data", allow_hub=False).source == str(target)
    target.unlink()
    with pytest.raises(DataError, match=r"looked in: \S+train\.tsv \(as given\); "):
        read_split(task, "train", tmp_path / "no-data", allow_hub=False)
    rte = builtin_tasks()["rte"]
    assert rte.base_dir is None  # built-in tasks read the data dir
    assert read_split(rte, "dev", data_dir, allow_hub=False).source == str(data_dir / "glue/RTE/dev.tsv")
    with pytest.raises(DataError) as err:
        read_split(rte, "dev", tmp_path / "nowhere", allow_hub=False)
    assert f"{tmp_path / 'nowhere' / 'glue/RTE/dev.tsv'} (in the data dir: data directory not found)" in str(err.value)


def test_hub_data_files_beside_the_task_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "tasks" / "pq").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["one", "two"], "label": ["a", "b"]}), str(tmp_path / "tasks" / "pq" / "x.parquet"))
    f = tmp_path / "tasks" / "task.yaml"
    f.write_text("""name: t
type: classification
input: single
labels: [a, b]
splits:
  train: {role: train, hub: {path: parquet, data_files: pq/x.parquet}, columns: {text_a: text, label: label}}
""", encoding="utf-8")
    (task,) = load_task_file(f)
    raw = read_split(task, "train", tmp_path / "nowhere", allow_hub=True)
    assert raw.text_a == ["one", "two"] and raw.labels == ["a", "b"]


def test_integer_labels_of_parquet_files(tmp_path):
    """Integers in a parquet file are the labels' names when the task names them so (or a
    label_map does), else class indices (datasets' ClassLabel, GLUE parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "y": [5, 3, 1]}), str(path))

    def task(labels, label_map=None):
        split = {"role": "train", "path": str(path), "format": "parquet", "columns": {"text_a": "text", "label": "y"}}
        if label_map:
            split["label_map"] = label_map
        return parse_task({"name": "t", "type": "classification", "input": "single", "labels": labels,
                           "splits": {"train": split}}, "t")

    assert read_split(task(["1", "3", "5"]), "train", tmp_path).labels == ["5", "3", "1"]
    assert read_split(task(["lo", "mid", "hi"], {"1": "lo", "3": "mid", "5": "hi"}), "train",
                      tmp_path).labels == ["hi", "mid", "lo"]
    pq.write_table(pa.table({"text": ["a", "b"], "y": [1, 0]}), str(path))
    assert read_split(task(["no", "yes"]), "train", tmp_path).labels == ["yes", "no"]  # indices


def test_without_matplotlib_only_the_png_is_skipped(tmp_path, monkeypatch, caplog):
    import logging
    import sys

    from mtdnn.reports import write_report

    task = load_task_file_text(SUPPORT_TICKETS)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    with caplog.at_level(logging.INFO, logger="mtdnn.reports"):
        write_report(tmp_path / "reports", task, "dev", task.kind.class_report(task, GOLD, PRED), with_plot=True)
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["support_tickets.dev.json"]
    assert "matplotlib is not installed (pip install 'mtdnn[plots]'): no confusion-matrix PNG" in caplog.text
