"""Removed task fields: ``loss`` (one loss per type) still loads from old files when it is null or
the type's loss, and is an error otherwise; ``split_names`` is gone."""

from __future__ import annotations

import pytest
import yaml

from mtdnn.errors import ConfigError
from mtdnn.run_dir import RunDir
from mtdnn.tasks.registry import builtin_tasks
from mtdnn.tasks.schema import TaskDef, parse_task
from mtdnn.training.checkpoint import check_resume_tasks

SPEC = {"name": "x", "type": "regression", "metrics": ["pearson"],
        "splits": {"train": {"role": "train", "path": "x.tsv", "columns": {"text_a": 0, "text_b": 1, "label": 2}}}}


@pytest.mark.parametrize("value", [None, "mse"])
def test_old_loss_values_load_and_are_dropped(value):
    task = parse_task({**SPEC, "loss": value}, "old.yaml")
    assert task == parse_task(SPEC, "old.yaml")
    assert "loss" not in task.model_dump() and task.loss_kind == "mse"


@pytest.mark.parametrize("value,shown", [("cross_entropy", "'cross_entropy'"), ("hinge", "'hinge'"), (3, "3")])
def test_other_loss_values_are_an_error(value, shown):
    with pytest.raises(ConfigError) as err:
        parse_task({**SPEC, "loss": value}, "old.yaml")
    assert str(err.value) == (f"old.yaml, field 'loss': the field was removed: a task's loss follows its type, "
                              f"and {shown} does not fit type 'regression' (which trains with 'mse'); "
                              "delete the field")


def test_loss_with_a_bad_type_reports_the_type():
    with pytest.raises(ConfigError, match="field 'type'"):
        parse_task({**SPEC, "type": "other", "loss": "mse"}, "old.yaml")


def test_split_names_removed():
    assert not hasattr(TaskDef, "split_names")


def test_run_dir_of_an_older_version_loads_and_resumes(tmp_path):
    """tasks.yaml written before the field was removed has ``loss: null`` in every task."""
    tasks = [builtin_tasks()[n] for n in ("rte", "stsb", "qnli_rank")]
    old = [{**t.model_dump(mode="json"), "loss": None} for t in tasks]
    run = RunDir(tmp_path)
    run.tasks_file.write_text(yaml.safe_dump(old, sort_keys=False), encoding="utf-8")
    assert run.read_tasks() == tasks
    check_resume_tasks(tasks, run)  # the same definitions: no error
    changed = [tasks[0].model_copy(update={"dropout": 0.2}), *tasks[1:]]
    with pytest.raises(ConfigError, match="task 'rte' is not defined as in the run to resume"):
        check_resume_tasks(changed, run)


def test_unprintable_field_name_stays_on_one_line():
    with pytest.raises(ConfigError) as err:
        parse_task({**SPEC, "a\nb": 1}, "t.yaml")
    assert str(err.value) == "t.yaml: field 'a\\nb': unknown field"
