"""Built-in task definitions plus the user's own YAML files, looked up by name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable

import yaml

from ..errors import ConfigError
from .schema import HeadDef, PairHead, TaskDef, load_task_file, parse_task


def builtin_tasks() -> dict[str, TaskDef]:
    tasks: dict[str, TaskDef] = {}
    folder = resources.files("mtdnn.tasks") / "builtin"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            task = parse_task(yaml.safe_load(entry.read_text(encoding="utf-8")), f"builtin:{entry.name}")
            tasks[task.name] = task
    return tasks


def with_pair_head(task: TaskDef, kind: PairHead) -> TaskDef:
    """``task`` with head ``kind`` when it is a pair classification task whose definition names no
    ``head`` (the built-in ones); any other task as it is. The default head is linear over [CLS]:
    ``--pair-head san`` gives such tasks the paper's SAN answer module (K = 5, step dropout 0.1)."""
    if kind == "linear" or "head" in task.model_fields_set or not task.kind.takes_pair_head(task.input):
        return task
    return task.model_copy(update={"head": HeadDef(kind=kind)})


class TaskRegistry:
    """Name -> TaskDef. User files override built-ins of the same name."""

    def __init__(self, task_files: Iterable[str | Path] = ()) -> None:
        self._tasks = builtin_tasks()
        self._origin = {name: "built-in" for name in self._tasks}
        for f in task_files:
            for task in load_task_file(f):
                self._tasks[task.name] = task
                self._origin[task.name] = str(f)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def origin(self, name: str) -> str:
        return self._origin[name]

    def get(self, name: str) -> TaskDef:
        try:
            return self._tasks[name]
        except KeyError:
            raise ConfigError(f"unknown task '{name}'; known tasks: {', '.join(self.names())} "
                              "(add your own with --task-file FILE.yaml)", field="tasks") from None

    def resolve(self, names: Iterable[str], pair_head: PairHead = "linear") -> list[TaskDef]:
        """The definitions of ``names``, each pair classification task that names no head given
        ``pair_head`` (``with_pair_head``: the ``--pair-head`` of a run)."""
        tasks = [with_pair_head(self.get(n), pair_head) for n in names]
        chosen = {t.name for t in tasks}
        for t in tasks:
            if t.head_from is not None and t.head_from not in chosen:
                raise ConfigError(f"task '{t.name}' is evaluated with the head of '{t.head_from}': "
                                  f"add '{t.head_from}' to the tasks", field="tasks")
        listed = [t.name for t in tasks]
        twice = next((n for n in listed if listed.count(n) > 1), None)
        if twice is not None:
            raise ConfigError(f"task '{twice}' is listed twice", field="tasks")
        return tasks
