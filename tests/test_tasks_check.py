"""``mtdnn tasks check`` on files of known content: every figure it reports, computed by hand, and
its exit code (1 on what would make training fail)."""

from __future__ import annotations

import pytest

from mtdnn.cli import main
from mtdnn.tasks.check import check_task_file, format_report

TASK = """\
name: words
type: classification
input: single
labels: [a, b, c]
splits:
  train: {role: train, path: train.tsv, columns: {text_a: text, label: label}}
  dev: {role: dev, path: dev.tsv, columns: {text_a: text, label: label}}
  test: {role: test, path: test.tsv, labeled: false, columns: {text_a: text}}
"""
# every word is one token of the (MiniLM/BERT uncased) vocabulary: a row is its words + [CLS], [SEP]
TRAIN = ("text\tlabel\n"
         "the cat sat\ta\n"            # 5 tokens
         "the dog ran on a mat\tb\n"   # 8 tokens
         "the cat sat\ta\n"            # duplicate, same label
         "the cat sat\tb\n"            # duplicate, another label
         "big red house\t-\n"          # no gold label: dropped
         "small blue car\ta\n")        # 5 tokens
DEV = "text\tlabel\nthe cat sat\ta\na dog ran\tb\n"


def _files(folder, task=TASK, train=TRAIN, dev=DEV):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text(train, encoding="utf-8")
    (folder / "dev.tsv").write_text(dev, encoding="utf-8")
    (folder / "task.yaml").write_text(task, encoding="utf-8")
    return folder / "task.yaml"


def test_figures_by_hand(tmp_path, tiny_encoder):
    report = check_task_file(_files(tmp_path), data_dir=tmp_path / "nowhere", encoder=tiny_encoder,
                             max_seq_len=6, allow_hub=False)
    (tc,) = report.tasks
    train, dev, test = tc.splits
    assert (train.rows, train.dropped) == (5, {"without a gold label (missing_labels)": 1})
    assert train.labels == {"a": 3, "b": 2, "c": 0}
    assert (train.duplicates, train.conflicting, train.overlap) == (2, 1, None)
    # lengths [5, 8, 5, 5, 5]: numpy's linear percentiles of the sorted [5, 5, 5, 5, 8]
    assert train.lengths == pytest.approx({"p50": 5, "p90": 6.8, "p95": 7.4, "p99": 7.88, "max": 8,
                                           "truncated": 0.2, "rows": 5})
    assert (dev.rows, dev.labels, dev.overlap, dev.duplicates) == (2, {"a": 1, "b": 1, "c": 0}, 1, 0)
    assert dev.lengths["max"] == 5 and dev.lengths["truncated"] == 0.0
    assert test.error is not None and "test.tsv: file not found" in test.error
    assert report.ok and report.problems == []
    assert report.warnings == [
        "words/train: 20.0% of rows are longer than --max-seq-len 6 and get cut",
        "words/train: 1 texts appear with different labels",
        "words/dev: 1 of 2 rows are also in the training split",
        f"words/test: {test.error}; training writes no submission file for it",
        "words/train: no training rows labeled c",
    ]
    text = format_report(report)
    assert "    rows: 5 (dropped: 1 without a gold label (missing_labels))" in text
    assert "    labels: a 3 (60.0%), b 2 (40.0%), c 0 (0.0%)" in text
    assert "    tokens: p50 5, p90 7, p95 7, p99 8, max 8; longer than 6: 20.0%" in text
    assert "    duplicates: 1; also in the training split: 1 (50.0%)" not in text
    assert "    duplicates: 0; also in the training split: 1 (50.0%)" in text
    assert text.endswith(": OK, 5 warning(s)")


def test_exit_codes(tmp_path, tiny_encoder, capsys):
    argv = ["tasks", "check", "--encoder", tiny_encoder, "--no-hub", "--data-dir", str(tmp_path / "nowhere")]
    assert main([*argv, str(_files(tmp_path / "ok"))]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("task.yaml: OK, 4 warning(s)")
    # a label the task does not know: training would fail on it
    bad = _files(tmp_path / "bad", dev=DEV + "a cat\tz\n")
    assert main([*argv, str(bad)]) == 1
    out = capsys.readouterr().out
    assert "problems (training would fail):" in out and "unknown label 'z' (expected one of: a, b, c)" in out
    assert out.splitlines()[-1].endswith("task.yaml: FAILED: 1 problem(s), 3 warning(s)")  # dev unread: no overlap
    # a missing training file
    gone = _files(tmp_path / "gone")
    (tmp_path / "gone" / "train.tsv").unlink()
    assert main([*argv, str(gone)]) == 1
    assert "words/train: train.tsv: file not found" in capsys.readouterr().out
    # a max length beyond the encoder's positions
    assert main([*argv, "--max-seq-len", "4096", str(_files(tmp_path / "long"))]) == 1
    assert "--max-seq-len 4096 is above the encoder's limit of 512 positions" in capsys.readouterr().out
    # a task file that does not load: one line, exit 2
    (tmp_path / "broken.yaml").write_text(TASK.replace("type: classification", "type: sorting"), encoding="utf-8")
    assert main([*argv, str(tmp_path / "broken.yaml")]) == 2
    assert "field 'type'" in capsys.readouterr().err


def test_ranking_groups(tmp_path, tiny_encoder):
    task = """\
name: rk
type: ranking
input: ranking
labels: [pos, neg]
ranking_no_positive: drop
splits:
  train: {role: train, path: train.tsv, columns: {text_a: q, text_b: a, label: y, group: g}}
"""
    train = ("g\tq\ta\ty\n"
             "1\twho sat\tthe cat\tpos\n1\twho sat\tthe dog\tneg\n1\twho sat\ta mat\tneg\n"
             "2\twho sat\tthe cat\tpos\n2\twho sat\tthe car\tpos\n"   # same question, another group
             "3\twho ran\tthe dog\tpos\n"
             "4\twho ran\tthe car\tneg\n")                           # no positive: dropped
    report = check_task_file(_files(tmp_path, task=task, train=train), encoder=tiny_encoder, allow_hub=False)
    (sc,) = report.tasks[0].splits[:1]
    assert sc.rows == 6 and sc.dropped == {"in ranking groups without a positive answer": 1}
    assert sc.groups == {"groups": 3, "min": 1, "median": 2, "max": 3, "single": 1, "no_positive": 0,
                         "several_positive": 1}
    assert "rk/train: 1 of 3 ranking groups have one candidate (always predicted positive)" in report.warnings


TAGGING = """\
name: ner
type: tagging
input: words
scheme: iob2
labels: [O, B-PER, I-PER, B-LOC, I-LOC]
splits:
  train: {role: train, path: train.conll, format: conll, columns: {text_a: 0, label: 1}}
  dev: {role: dev, path: dev.conll, format: conll, columns: {text_a: 0, label: 1}}
"""


def test_tagging_schemes_entities_and_windows(tmp_path, tiny_encoder):
    (tmp_path / "train.conll").write_text("John B-PER\nSmith I-PER\nin O\nParis B-LOC\n\nAnn B-PER\nran O\n")
    # IOB1-style starts in a task declared iob2: Bob (I-PER first) and Oslo (I-LOC after O) break it
    (tmp_path / "dev.conll").write_text("Bob I-PER\nmet O\nRome B-LOC\nand O\nOslo I-LOC\n")
    (tmp_path / "task.yaml").write_text(TAGGING)
    # every word is one token: 4 + 2 and 5 + 2 tokens; a window holds 3 words at --max-seq-len 5
    report = check_task_file(tmp_path / "task.yaml", encoder=tiny_encoder, max_seq_len=5, allow_hub=False)
    train, dev = report.tasks[0].splits
    assert train.labels == {"O": 2, "B-PER": 2, "I-PER": 1, "B-LOC": 1, "I-LOC": 0}
    assert (train.extra["scheme_found"], train.extra["scheme_breaks"]) == ("iob2", 0)
    assert train.extra["entities"] == {"PER": 2, "LOC": 1}
    assert train.windows == {"rows": 2, "windows": 3, "split": 1, "max": 2}
    assert (dev.extra["scheme_found"], dev.extra["scheme_breaks"]) == ("iob1", 2)
    assert dev.extra["entities"] == {"LOC": 2, "PER": 1}
    assert dev.windows == {"rows": 1, "windows": 2, "split": 1, "max": 2}
    assert report.ok and report.warnings == [
        "ner/train: 50.0% of rows are longer than --max-seq-len 5 and are split into overlapping windows (merged "
        "back per word)",
        "ner/dev: 100.0% of rows are longer than --max-seq-len 5 and are split into overlapping windows (merged "
        "back per word)",
        "ner/dev: the tags read as iob1, the task declares scheme iob2: 2 tags break iob2 (first: line 1, tag "
        "'I-PER': I-PER starts an entity (after O); IOB2 needs B-PER); set scheme: iob1 if the file is iob1",
        "ner/dev: tags no training word has: I-LOC (1 words)",
        "ner/train: no training words tagged I-LOC"]
    text = format_report(report)
    assert "    labels: O 2 (33.3%), B-PER 2 (33.3%), I-PER 1 (16.7%), B-LOC 1 (16.7%), I-LOC 0 (0.0%)" in text
    assert "    scheme: iob2 declared, the tags read as iob1; tags breaking iob2: 2" in text
    assert "    entities: 3 (PER 2, LOC 1)" in text and "    entities: 3 (LOC 2, PER 1)" in text
    assert "    windows: 3 for 2 sentences; longer than 5 tokens: 1 (50.0%), the most windows of one: 2" in text
