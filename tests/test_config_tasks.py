"""Run configuration and task definitions: validation, the registry, `mtdnn tasks`."""

from __future__ import annotations

import pytest

import mtdnn
from mtdnn.cli import build_parser, main
from mtdnn.commands.config_flags import config_from_args
from mtdnn.config import load_config_file
from mtdnn.errors import ConfigError
from mtdnn.tasks.registry import TaskRegistry, builtin_tasks
from mtdnn.tasks.schema import parse_task

BUILTIN = {"ax", "cola", "mnli", "mrpc", "qnli", "qnli_rank", "qqp", "rte", "scitail", "snli", "sst2", "stsb", "wnli",
           "conll03_ner", "conll03_pos", "conll03_chunk", "wnut17", "squad11"}


def test_builtin_tasks():
    tasks = builtin_tasks()
    assert set(tasks) == BUILTIN
    # linear heads (pair classification: SAN with --pair-head san, the paper's), ranking for QNLI
    for name in ("rte", "mrpc", "mnli", "qnli", "qqp", "wnli", "snli", "scitail", "ax"):
        assert tasks[name].head.kind == "linear" and tasks[name].input == "pair", name
    for name in ("cola", "sst2"):
        assert tasks[name].head.kind == "linear" and tasks[name].input == "single"
    assert tasks["stsb"].type == "regression" and tasks["stsb"].loss_kind == "mse"
    assert tasks["stsb"].metrics == ["pearson", "spearman"] and tasks["stsb"].num_outputs == 1
    assert tasks["qnli_rank"].type == "ranking" and tasks["qnli_rank"].loss_kind == "ranking_softmax"
    assert tasks["mrpc"].metrics == ["f1", "accuracy"] and tasks["cola"].metrics == ["mcc"]
    assert tasks["mnli"].dropout == 0.3 and tasks["cola"].dropout == 0.05 and tasks["rte"].dropout == 0.1
    assert tasks["mnli"].num_outputs == 3
    assert tasks["mnli"].eval_splits == ["dev_matched", "dev_mismatched"]
    assert tasks["mnli"].selection_split == "dev_matched"
    assert tasks["ax"].head_from == "mnli"
    assert tasks["rte"].splits["test"].submission == "RTE.tsv"


def test_registry_resolve_errors():
    reg = TaskRegistry()
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        reg.resolve(["rte", "nope"])
    with pytest.raises(ConfigError, match="head of 'mnli'"):
        reg.resolve(["ax"])
    with pytest.raises(ConfigError, match="task 'rte' is listed twice"):
        reg.resolve(["rte", "rte"])
    assert [t.name for t in reg.resolve(["mnli", "ax"])] == ["mnli", "ax"]


def test_pair_head_switches_the_pair_tasks_that_name_no_head(tmp_path):
    """--pair-head san gives SAN to every pair classification task whose definition names no head
    (the built-in ones); a task file's own head wins, and other tasks keep theirs."""
    pair = ["rte", "mrpc", "mnli", "qnli", "qqp", "wnli", "snli", "scitail", "ax"]
    others = ["cola", "sst2", "stsb", "qnli_rank"]
    reg = TaskRegistry()
    assert {t.head.kind for t in reg.resolve(pair + others)} == {"linear"}
    san = {t.name: t for t in reg.resolve(pair + others, pair_head="san")}
    for name in pair:
        assert san[name].head.model_dump() == {"kind": "san", "steps": 5, "step_dropout": 0.1}, name
    for name in others:
        assert san[name] == builtin_tasks()[name], name
    f = tmp_path / "pairs.yaml"
    f.write_text("- name: mine\n  type: classification\n  labels: [a, b]\n  head: {kind: linear}\n"
                 "  splits: {train: {role: train, path: x.tsv, columns: {text_a: 0, text_b: 1, label: 2}}}\n"
                 "- name: bare\n  type: classification\n  labels: [a, b]\n"
                 "  splits: {train: {role: train, path: x.tsv, columns: {text_a: 0, text_b: 1, label: 2}}}\n",
                 encoding="utf-8")
    mine, bare = TaskRegistry([f]).resolve(["mine", "bare"], pair_head="san")
    assert mine.head.kind == "linear" and bare.head.kind == "san"


def test_user_file_overrides_builtin(tmp_path):
    f = tmp_path / "rte.yaml"
    f.write_text("name: rte\ntype: classification\nlabels: [entailment, not_entailment]\nhead: {kind: linear}\n"
                 "splits: {train: {role: train, path: glue/RTE/train.tsv, "
                 "columns: {text_a: sentence1, text_b: sentence2, label: label}}}\n", encoding="utf-8")
    reg = TaskRegistry([f])
    assert reg.get("rte").head.kind == "linear" and reg.origin("rte") == str(f)


SPLITS = {"train": {"role": "train", "path": "x.tsv", "columns": {"text_a": 0, "text_b": 1, "label": 2}}}


@pytest.mark.parametrize("spec,message", [
    ({"type": "classification", "labels": ["a"]}, "at least 2 labels"),
    ({"type": "regression", "head": {"kind": "san"}}, "head kind 'san'"),
    ({"type": "ranking", "labels": ["a", "b"], "input": "pair"}, "needs input: ranking"),
    ({"type": "classification", "labels": ["a", "b"], "loss": "mse"}, "does not fit type"),
    ({"type": "classification", "labels": ["a", "b"], "head": {"steps": 0}}, "head.steps"),
    ({"type": "classification", "labels": ["a", "b"], "dropout": 1.5}, "dropout"),
    ({"type": "classification", "labels": ["a", "b"],
      "splits": {"dev": {"role": "dev", "path": "x", "columns": {"text_a": 0, "text_b": 1, "label": 2}}}},
     "role: train"),
    ({"type": "classification", "labels": ["a", "b"],
      "splits": {"train": {"role": "train", "path": "x", "columns": {"text_a": 0, "text_b": 1}}}},
     "needs columns.label"),
    ({"type": "classification", "labels": ["a", "b"],
      "splits": {"train": {"role": "train", "path": "x", "columns": {"text_a": 0, "label": 2}}}},
     "needs columns.text_b"),
])
def test_task_validation_errors(spec, message):
    data = {"name": "x", "splits": SPLITS, **spec}
    with pytest.raises(ConfigError, match=message) as err:
        parse_task(data, "src.yaml")
    assert str(err.value).startswith("src.yaml")


def test_make_config():
    cfg = mtdnn.make_config({"epochs": 3, "lr": 1e-4}, {"tasks": "rte, mrpc", "epochs": 2, "lr": None})
    assert cfg.tasks == ["rte", "mrpc"] and cfg.epochs == 2 and cfg.lr == 1e-4
    assert cfg.optimizer == "adamw" and cfg.batch_size == 32 and cfg.warmup_ratio == 0.1  # defaults
    assert mtdnn.make_config(overrides={"tasks": "rte"}).lr == 1e-4  # the default encoder's (paper: 5e-5)
    with pytest.raises(ConfigError, match="field 'epochs'"):
        mtdnn.make_config(overrides={"tasks": "rte", "epochs": 0})
    with pytest.raises(ConfigError, match="field 'bogus': unknown field"):
        mtdnn.make_config({"tasks": "rte", "bogus": 1}, source="run.yaml")
    with pytest.raises(ConfigError, match="field 'tasks'"):
        mtdnn.make_config(overrides={})


def test_cli_flags_override_config_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("tasks: [rte, stsb]\nepochs: 4\nbatch_size: 8\n", encoding="utf-8")
    args = build_parser().parse_args(["train", "--config", str(f), "--epochs", "2", "--no-hub", "--no-progress",
                                      "--task-file", "a.yaml,b.yaml"])
    cfg = config_from_args(args)
    assert cfg.tasks == ["rte", "stsb"] and cfg.epochs == 2 and cfg.batch_size == 8
    assert cfg.allow_hub is False and cfg.progress is False and cfg.task_files == ["a.yaml", "b.yaml"]
    assert cfg.predict_test is True and cfg.compile is False
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [rte\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config_file(bad)


def test_cli_tasks_lists_builtin_and_user_tasks(tmp_path, capsys):
    f = tmp_path / "mine.yaml"
    f.write_text("name: mytask\ntype: regression\ninput: single\ndescription: my own task\n"
                 "splits: {train: {role: train, path: x.tsv, columns: {text_a: 0, label: 1}}}\n", encoding="utf-8")
    assert main(["tasks", "--task-file", str(f)]) == 0
    out = capsys.readouterr().out
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert names == BUILTIN | {"mytask"}
    line = next(line for line in out.splitlines() if line.startswith("mytask"))
    assert "regression" in line and "my own task" in line
    # a broken task file: one line on stderr, exit code 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [\n", encoding="utf-8")
    assert main(["tasks", "--task-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtdnn: error:") and str(bad) in err and len(err.strip().splitlines()) == 1
