"""Ranking groups: built in one place (``RawSplit.group_ids``), from the split's ``group`` column
when it names one, else from ``text_a``; the cache key and group ids without a group column are
those of earlier versions."""

from __future__ import annotations

import pytest

from mtdnn.api import _guess_columns
from mtdnn.data.pipeline import subset_rows
from mtdnn.data.readers import read_split
from mtdnn.data.tokenized import content_hash, encode_labels
from mtdnn.errors import ConfigError, DataError
from mtdnn.records import RawSplit
from mtdnn.tasks.schema import parse_task

# rows 1-3 ask the same question, but rows 1-2 are candidates of group g1 and row 3 of group g2
ROWS = ("qid\tquestion\tanswer\tlabel\n"
        "g1\tWho wrote it?\tTolstoy did.\tpos\n"
        "g1\tWho wrote it?\tIt is long.\tneg\n"
        "g2\tWho wrote it?\tDostoevsky did.\tpos\n"
        "g3\tWhere is it?\tIn Paris.\tpos\n")


def _ranking_task(path, group: str | None = "qid", fmt: str = "tsv", no_positive: str = "error"):
    cols = {"text_a": "question", "text_b": "answer", "label": "label"}
    if group is not None:
        cols["group"] = group
    return parse_task({"name": "rk", "type": "ranking", "input": "ranking", "labels": ["pos", "neg"],
                       "ranking_no_positive": no_positive,
                       "splits": {"train": {"role": "train", "path": str(path), "format": fmt, "columns": cols}}},
                      "test")


def _write(tmp_path, text: str, name: str = "rank.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_group_column_separates_same_wording(tmp_path):
    path = _write(tmp_path, ROWS)
    raw = read_split(_ranking_task(path), "train", tmp_path, allow_hub=False)
    assert raw.group_keys == ["g1", "g1", "g2", "g3"]
    assert raw.group_ids().tolist() == [0, 0, 1, 2]
    labels, groups = encode_labels(_ranking_task(path), raw)
    assert labels.tolist() == [1, 0, 1, 1] and groups.tolist() == [0, 0, 1, 2]
    # the same file without the group column: the three rows of one wording are one group
    plain = read_split(_ranking_task(path, group=None), "train", tmp_path, allow_hub=False)
    assert plain.group_keys is None
    assert plain.group_ids().tolist() == [0, 0, 0, 1]


def test_group_column_in_jsonl_and_non_adjacent_rows(tmp_path):
    path = _write(tmp_path, '{"q": "A?", "a": "x", "y": "pos", "g": 7}\n{"q": "B?", "a": "y", "y": "pos", "g": 8}\n'
                            '{"q": "A?", "a": "z", "y": "neg", "g": 7}\n', "rank.jsonl")
    task = parse_task({"name": "rk", "type": "ranking", "input": "ranking", "labels": ["pos", "neg"],
                       "splits": {"train": {"role": "train", "path": str(path), "format": "jsonl",
                                            "columns": {"text_a": "q", "text_b": "a", "label": "y", "group": "g"}}}},
                      "test")
    raw = read_split(task, "train", tmp_path, allow_hub=False)
    assert raw.group_keys == ["7", "8", "7"] and raw.group_ids().tolist() == [0, 1, 0]
    assert raw.select([1, 2]).group_keys == ["8", "7"]


def test_missing_group_column_is_a_one_line_error(tmp_path):
    path = _write(tmp_path, ROWS)
    with pytest.raises(DataError) as err:
        read_split(_ranking_task(path, group="question_id"), "train", tmp_path, allow_hub=False)
    msg = str(err.value)
    assert msg.startswith(f"{path}:1, field 'group': column 'question_id' not in the header")
    assert "\n" not in msg
    jl = _write(tmp_path, '{"question": "A?", "answer": "x", "label": "pos", "qid": 1}\n'
                          '{"question": "A?", "answer": "y", "label": "neg"}\n', "rank.jsonl")
    with pytest.raises(DataError) as err:
        read_split(_ranking_task(jl, fmt="jsonl"), "train", tmp_path, allow_hub=False)
    assert str(err.value) == f"{jl}:2, field 'group': column 'qid' missing from the record"


def test_empty_group_value_is_an_error(tmp_path):
    path = _write(tmp_path, "qid\tquestion\tanswer\tlabel\ng1\tA?\tx\tpos\n \tA?\ty\tneg\n")
    with pytest.raises(DataError) as err:
        read_split(_ranking_task(path), "train", tmp_path, allow_hub=False)
    assert str(err.value) == f"{path}:3, field 'group': empty group value"


def test_group_without_positive_is_named(tmp_path):
    path = _write(tmp_path, ROWS.replace("g2\tWho wrote it?\tDostoevsky did.\tpos", "g2\tWho wrote it?\tNo.\tneg"))
    with pytest.raises(DataError) as err:
        read_split(_ranking_task(path), "train", tmp_path, allow_hub=False)
    assert str(err.value) == (f"{path}:4, field 'label': ranking group (group 'g2', question 'Who wrote it?') "
                              "has no positive answer 'pos' (1 such groups)")
    kept = read_split(_ranking_task(path, no_positive="drop"), "train", tmp_path, allow_hub=False)
    assert kept.lines == [2, 3, 5] and kept.group_keys == ["g1", "g1", "g3"]
    # grouped by wording, g1 and g2 are one group that has a positive answer: nothing is dropped
    assert len(read_split(_ranking_task(path, group=None), "train", tmp_path, allow_hub=False)) == 4


def test_subset_keeps_whole_groups_of_the_group_column(tmp_path):
    path = _write(tmp_path, ROWS)
    raw = read_split(_ranking_task(path), "train", tmp_path, allow_hub=False)
    for seed in range(6):
        keys = subset_rows(raw, 2, seed, by_group=True).group_keys
        assert len(set(keys)) == 2 and (keys.count("g1") in (0, 2))
    assert subset_rows(raw, 3, 0, by_group=True) is raw
    plain = read_split(_ranking_task(path, group=None), "train", tmp_path, allow_hub=False)
    assert subset_rows(plain, 2, 0, by_group=True) is plain  # only 2 groups by wording


def _raw(group_keys=None) -> RawSplit:
    return RawSplit("rk", "train", "x", ids=["0", "1", "2"], text_a=["Who?", "Who?", "Where?"],
                    text_b=["A.", "B.", "C."], labels=["pos", "neg", "pos"], lines=[2, 3, 4],
                    group_keys=group_keys)


def test_cache_key_and_groups_without_group_column_are_unchanged(tmp_path):
    task = _ranking_task(tmp_path / "x.tsv", group=None)
    # recorded with the code before group columns were read
    assert content_hash(task, _raw(), 32, "fp") == "3e82a61c575ad1f25eaf46205854f0d4"
    assert encode_labels(task, _raw())[1].tolist() == [0, 0, 1]
    with_groups = content_hash(task, _raw(["a", "b", "c"]), 32, "fp")
    assert with_groups != "3e82a61c575ad1f25eaf46205854f0d4"
    assert with_groups != content_hash(task, _raw(["a", "a", "c"]), 32, "fp")
    assert encode_labels(task, _raw(["a", "b", "a"]))[1].tolist() == [0, 1, 0]


def test_group_column_is_for_ranking_only():
    with pytest.raises(ConfigError) as err:
        parse_task({"name": "c", "type": "classification", "labels": ["a", "b"],
                    "splits": {"train": {"role": "train", "path": "x",
                                         "columns": {"text_a": 0, "text_b": 1, "label": 2, "group": 3}}}}, "t.yaml")
    assert str(err.value).startswith("t.yaml: ")
    assert "split 'train': columns.group is for ranking tasks only" in str(err.value)


def test_predict_file_columns_keep_the_group_column(tmp_path):
    path = _write(tmp_path, ROWS)
    task = _ranking_task(path)
    assert _guess_columns(task, path, "tsv", None, None, None).group == "qid"
    other = _write(tmp_path, "question\tanswer\nA?\tx\n", "plain.tsv")
    assert _guess_columns(task, other, "tsv", None, None, None).group is None
