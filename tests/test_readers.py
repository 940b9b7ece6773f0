"""Readers on the real data: every file of the built-in tasks that exists, with row and label counts
from the data directory's SOURCES.md; missing files; user task files in csv, jsonl and parquet."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mtdnn.data.readers import read_split, resolve_path
from mtdnn.errors import ConfigError, DataError
from mtdnn.tasks.registry import TaskRegistry, builtin_tasks
from mtdnn.tasks.schema import parse_task

# task -> split -> (rows kept, rows dropped without gold label, label counts or None)
EXPECTED = {
    "cola": {"train": (8551, 0, {"1": 6023, "0": 2528}), "dev": (1043, 0, {"1": 721, "0": 322}),
             "test": (1063, 0, None)},
    "mrpc": {"train": (3668, 0, {"1": 2474, "0": 1194}), "dev": (408, 0, {"1": 279, "0": 129}),
             "test": (1725, 0, None)},
    "rte": {"train": (2490, 0, {"entailment": 1249, "not_entailment": 1241}),
            "dev": (277, 0, {"entailment": 146, "not_entailment": 131}), "test": (3000, 0, None)},
    "stsb": {"train": (5749, 0, None), "dev": (1500, 0, None), "test": (1379, 0, None)},
    "wnli": {"train": (635, 0, {"0": 323, "1": 312}), "dev": (71, 0, {"0": 40, "1": 31}),
             "test": (146, 0, None)},
    "sst2": {"train": (67349, 0, {"0": 29780, "1": 37569}), "dev": (872, 0, {"0": 428, "1": 444}),
             "test": (1821, 0, None)},
    "qnli": {"dev": (5463, 0, {"entailment": 2702, "not_entailment": 2761}), "test": (5463, 0, None)},
    "qnli_rank": {"dev": (5463, 0, {"entailment": 2702, "not_entailment": 2761}), "test": (5463, 0, None)},
    "ax": {"test": (1104, 0, None)},
    "mnli": {"dev_matched": (9815, 185, {"entailment": 3479, "neutral": 3123, "contradiction": 3213}),
             "dev_mismatched": (9832, 168, {"entailment": 3463, "neutral": 3129, "contradiction": 3240})},
    "snli": {"dev": (9842, 158, {"entailment": 3329, "contradiction": 3278, "neutral": 3235}),
             "test": (9824, 176, {"entailment": 3368, "contradiction": 3237, "neutral": 3219})},
    "scitail": {"train": (23596, 0, {"entails": 8602, "neutral": 14994}),
                "dev": (1304, 0, {"entails": 657, "neutral": 647}),
                "test": (2126, 0, {"entails": 842, "neutral": 1284})},
    **{name: {"train": (14041, 0, None), "dev": (3250, 0, None), "test": (3453, 0, None)}  # sentences
       for name in ("conll03_ner", "conll03_pos", "conll03_chunk")},
    "wnut17": {"train": (3394, 0, None), "dev": (1009, 0, None), "test": (1287, 0, None)},
    "squad11": {"train": (8981, 0, None), "dev": (1589, 0, None)},  # questions: the first 40 articles, the last 8
}
MISSING_TRAIN = {"mnli": "glue/MNLI/train.tsv", "qnli": "glue/QNLI/train.tsv", "qnli_rank": "glue/QNLI/train.tsv",
                 "qqp": "glue/QQP/train.tsv", "snli": "SNLI/snli_1.0_train.csv"}


def _cases():
    return [(t, s) for t, splits in EXPECTED.items() for s in splits]


@pytest.mark.parametrize("task_name,split", _cases())
def test_builtin_split_counts(data_dir, task_name, split):
    task = builtin_tasks()[task_name]
    path = resolve_path(task.splits[split], data_dir)
    if not path.is_file():
        pytest.fail(f"expected data file missing: {path}")
    raw = read_split(task, split, data_dir, allow_hub=False)
    n, dropped, labels = EXPECTED[task_name][split]
    assert len(raw) == n
    assert raw.dropped_unlabeled == dropped
    assert raw.source == str(path)
    assert len(raw.ids) == len(raw.text_a) == len(raw.text_b) == len(raw.labels) == len(raw.lines) == n
    assert all(isinstance(a, str) and a for a in raw.text_a)
    if not task.has_text_b:
        assert all(b is None for b in raw.text_b)
    else:
        assert all(isinstance(b, str) and b for b in raw.text_b)
    if labels is not None:
        assert dict(Counter(raw.labels)) == labels
    elif task.type == "regression" and task.splits[split].labeled:
        assert all(isinstance(y, float) and 0.0 <= y <= 5.0 for y in raw.labels)
    if not task.splits[split].labeled:
        assert all(y is None for y in raw.labels)


def test_every_existing_builtin_file_is_covered(data_dir):
    """Every split of every built-in task whose file is in the data dir is counted above."""
    for name, task in builtin_tasks().items():
        for split_name, split in task.splits.items():
            path = resolve_path(split, data_dir)
            if path.is_file():
                assert split_name in EXPECTED.get(name, {}), f"{name}/{split_name} ({path}) not checked"
            else:
                assert split_name not in EXPECTED.get(name, {})


def test_glue_quirks(data_dir):
    tasks = builtin_tasks()
    # RTE train has fields that begin with a quote: quoting must be off
    rte = read_split(tasks["rte"], "train", data_dir, allow_hub=False)
    assert any(a.startswith('"') for a in rte.text_a + rte.text_b)
    # MRPC: the BOM does not end up in the header (otherwise the 'Quality' column is not found)
    mrpc = read_split(tasks["mrpc"], "dev", data_dir, allow_hub=False)
    assert not mrpc.text_a[0].startswith("\ufeff")
    # CoLA dev has no header and no trailing newline: first and last row kept
    cola = read_split(tasks["cola"], "dev", data_dir, allow_hub=False)
    assert cola.lines[0] == 1 and cola.lines[-1] == 1043
    # ids come from the id column where one is given
    rte_test = read_split(tasks["rte"], "test", data_dir, allow_hub=False)
    assert rte_test.ids[:3] == ["0", "1", "2"] and rte_test.ids[-1] == "2999"
    snli = read_split(tasks["snli"], "dev", data_dir, allow_hub=False)
    assert snli.ids[0] == "4705552913.jpg#2r1n" and snli.labels[0] == "neutral"
    assert snli.text_a[0] == "Two women are embracing while holding to go packages."
    # STS-B scores are floats
    stsb = read_split(tasks["stsb"], "dev", data_dir, allow_hub=False)
    assert all(isinstance(y, float) for y in stsb.labels)


@pytest.mark.parametrize("task_name", sorted(MISSING_TRAIN))
@pytest.mark.parametrize("allow_hub", [False, True])
def test_missing_train_file_names_the_file(data_dir, task_name, allow_hub):
    """Offline (HF_DATASETS_OFFLINE=1 from conftest) or with the hub disallowed, a missing built-in
    train file is a DataError that names it."""
    task = builtin_tasks()[task_name]
    missing = Path(data_dir) / MISSING_TRAIN[task_name]
    assert not missing.exists()
    with pytest.raises(DataError) as err:
        read_split(task, "train", data_dir, allow_hub=allow_hub)
    assert str(missing) in str(err.value)
    if allow_hub:
        assert "cannot load with datasets" in str(err.value)
    else:
        assert "file not found" in str(err.value)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        read_split(builtin_tasks()["rte"], "dev", tmp_path / "nowhere", allow_hub=False)


def test_unknown_split(data_dir):
    with pytest.raises(DataError, match="no split 'validation'"):
        read_split(builtin_tasks()["rte"], "validation", data_dir, allow_hub=False)


# ------------------------------------------------------------------ user task files
USER_TASKS = """
- name: snli_csv
  type: classification
  labels: [entailment, neutral, contradiction]
  splits:
    train: {{role: train, path: SNLI/snli_1.0_dev.csv, format: csv,
             columns: {{id: pairID, text_a: sentence1, text_b: sentence2, label: label}}}}
- name: scitail_jsonl
  type: classification
  labels: [entails, neutral]
  splits:
    train: {{role: train, path: SciTail/generative-nli/scitail_1.0_test.jsonl, format: jsonl,
             columns: {{text_a: premise, text_b: hypothesis, label: label}},
             label_map: {{entailment: entails, not_entailment: neutral}}}}
    snli_subset: {{role: dev, format: jsonl, path: subsets/snli_1.0/snli_1.0_dev.records_1-400_9112-10000.jsonl,
                   columns: {{id: pairID, text_a: sentence1, text_b: sentence2, label: gold_label}}}}
- name: qnli_parquet
  type: classification
  labels: [entailment, not_entailment]
  splits:
    train: {{role: train, format: parquet, path: {parquet},
             columns: {{id: idx, text_a: question, text_b: sentence, label: label}}}}
"""


@pytest.fixture()
def user_registry(tmp_path, data_dir):
    parquet = (Path(data_dir) / "hf_parquet" / "glue_qnli_validation.parquet").resolve()
    f = tmp_path / "my_tasks.yaml"
    f.write_text(USER_TASKS.format(parquet=parquet), encoding="utf-8")
    return TaskRegistry([f])


def test_user_task_csv(user_registry, data_dir):
    raw = read_split(user_registry.get("snli_csv"), "train", data_dir, allow_hub=False)
    assert len(raw) == 9842 and raw.dropped_unlabeled == 158
    assert Counter(raw.labels) == {"entailment": 3329, "contradiction": 3278, "neutral": 3235}
    # quoted CSV fields with commas stay whole
    assert any("," in a for a in raw.text_a)


def test_user_task_jsonl(user_registry, data_dir):
    task = user_registry.get("scitail_jsonl")
    raw = read_split(task, "train", data_dir, allow_hub=False)
    assert len(raw) == 2126 and Counter(raw.labels) == {"entails": 842, "neutral": 1284}
    sub = read_split(task.model_copy(update={"labels": ["entailment", "neutral", "contradiction"]}),
                     "snli_subset", data_dir, allow_hub=False)
    assert len(sub) == 1289 - 16 and sub.dropped_unlabeled == 16
    assert Counter(sub.labels) == {"entailment": 433, "neutral": 421, "contradiction": 419}


def test_user_task_parquet_through_datasets(user_registry, data_dir):
    raw = read_split(user_registry.get("qnli_parquet"), "train", data_dir, allow_hub=False)
    assert len(raw) == 5463
    # integer labels of the HF parquet: 0 = entailment
    assert Counter(raw.labels) == {"entailment": 2702, "not_entailment": 2761}
    assert raw.ids[:3] == ["0", "1", "2"]
    # same rows, same order, same labels as the GLUE TSV (the repaired dev file equals the parquet)
    tsv = read_split(builtin_tasks()["qnli"], "dev", data_dir, allow_hub=False)
    assert raw.labels == tsv.labels
    assert raw.text_a == tsv.text_a and raw.text_b == tsv.text_b


def test_user_tasks_in_registry(user_registry):
    assert {"snli_csv", "scitail_jsonl", "qnli_parquet", "rte"} <= set(user_registry.names())
    assert user_registry.origin("rte") == "built-in"
    assert user_registry.origin("snli_csv").endswith("my_tasks.yaml")


def _one_task(tmp_path, rows: str, fmt="tsv", extra="", name="t"):
    data = tmp_path / f"d.{fmt}"
    data.write_text(rows, encoding="utf-8")
    spec = {"name": name, "type": "classification", "labels": ["yes", "no"],
            "splits": {"train": {"role": "train", "path": str(data), "format": fmt,
                                 "columns": {"text_a": "a", "text_b": "b", "label": "y"}}}}
    if extra:
        spec["splits"]["train"].update(extra)
    return parse_task(spec, "test"), data


def test_bad_rows_name_file_line_and_field(tmp_path):
    task, path = _one_task(tmp_path, "a\tb\ty\nx\ty\tyes\nx\ty\tmaybe\nx\ty\tYES\nx\ty\tperhaps\n")
    with pytest.raises(DataError) as err:
        read_split(task, "train", tmp_path, allow_hub=False)
    msg = str(err.value)
    # the first problem with its place, then the count and the lines of all of them
    assert msg.startswith(f"{path}:3, field 'label': unknown label 'maybe'")
    assert "3 bad rows in all, at lines 3, 4, 5" in msg
    task, path = _one_task(tmp_path, "a\tb\ty\nx\ty\tyes\nx\ty\n")
    with pytest.raises(DataError, match="2 columns where 3 were expected") as err:
        read_split(task, "train", tmp_path, allow_hub=False)
    assert f"{path}:3" in str(err.value)


def test_unknown_label_is_an_error(tmp_path):
    task, path = _one_task(tmp_path, "a\tb\ty\nx\ty\tyes\nx\ty\tmaybe\n")
    with pytest.raises(DataError) as err:
        read_split(task, "train", tmp_path, allow_hub=False)
    assert f"{path}:3" in str(err.value) and "field 'label'" in str(err.value) and "maybe" in str(err.value)


def test_missing_labels_dropped_and_label_map(tmp_path):
    task, _ = _one_task(tmp_path, "a\tb\ty\nx\ty\t1\nx\ty\t-\nx\ty\t0\nx\ty\t\n", extra={"label_map": {"1": "yes", "0": "no"}})
    raw = read_split(task, "train", tmp_path, allow_hub=False)
    assert raw.labels == ["yes", "no"] and raw.dropped_unlabeled == 2 and raw.lines == [2, 4]


def test_column_not_in_header(tmp_path):
    task, _ = _one_task(tmp_path, "a\tB\ty\nx\ty\tyes\n")
    with pytest.raises(DataError, match="column 'b' not in the header"):
        read_split(task, "train", tmp_path, allow_hub=False)


def test_bad_jsonl(tmp_path):
    task, path = _one_task(tmp_path, '{"a": "x", "b": "y", "y": "yes"}\n{"a": "x", "b": \n', fmt="jsonl")
    with pytest.raises(DataError) as err:
        read_split(task, "train", tmp_path, allow_hub=False)
    assert f"{path}:2" in str(err.value) and "invalid JSON" in str(err.value)


def test_bad_task_yaml_names_file_and_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\ntype: regression\nlabels: [a, b]\nsplits: {train: {role: train, path: x, "
                 "columns: {text_a: 0, text_b: 1, label: 2}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="regression task has no labels") as err:
        TaskRegistry([f])
    assert str(f) in str(err.value)
    f.write_text("name: x\ntype: classification\nlabels: [a, b]\nbogus: 1\nsplits: {train: {role: train, path: x, "
                 "columns: {text_a: 0, text_b: 1, label: 2}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="field 'bogus': unknown field"):
        TaskRegistry([f])


def test_data_dir_default_is_the_environment_or_data_in_the_current_folder(monkeypatch, tmp_path):
    """No path outside the repository: ``$MTDNN_DATA_DIR``, else ``./data`` (the scripts add the
    ``../shared/data`` fallback)."""
    from mtdnn.data.readers import data_dir_default

    monkeypatch.setenv("MTDNN_DATA_DIR", str(tmp_path))
    assert data_dir_default() == tmp_path
    monkeypatch.delenv("MTDNN_DATA_DIR")
    (tmp_path / "outside" / "data" / "glue").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert data_dir_default() == Path("data")
