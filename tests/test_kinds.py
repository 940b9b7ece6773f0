"""Task kinds (``mtdnn.kinds``): the registry, the hooks of the built-in kinds, and the rule that
no module outside ``mtdnn/kinds/`` branches on a task's type or input."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from mtdnn.errors import ConfigError
from mtdnn.kinds import KINDS, TaskKind, get_kind, kind_of, register_kind
from mtdnn.kinds.classification import Classification
from mtdnn.kinds.specs import ServedTask, SplitSpec, TaskSpec
from mtdnn.export.engine import TaskInfo
from mtdnn.tasks.registry import builtin_tasks
from mtdnn.tasks.schema import parse_task

SRC = Path(__file__).resolve().parent.parent / "src" / "mtdnn"
# the words a branch on a task's kind or input compares with
KIND_WORDS = set(KINDS) | {"single", "pair", "ranking", "words"}
# modules that may still compare with these words, and why
ALLOWED: dict[str, str] = {
    # ships inside an exported model folder and imports nothing of mtdnn
    "export/modeling_mtdnn.py": "standalone",
}


def _literals(node: ast.AST) -> set[str]:
    """The string constants a comparison operand is (one, or a tuple/list/set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def _kind_branches(tree: ast.AST) -> list[int]:
    """Lines comparing something with a kind or input name (``t.type == "ranking"``,
    ``task.input != "single"``, ``spec["type"] in ("classification", ...)``)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            words = set().union(*(_literals(x) for x in [node.left, *node.comparators]))
            if words & KIND_WORDS:
                lines.append(node.lineno)
    return lines


def test_no_module_outside_the_kinds_branches_on_the_type():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("kinds/") or rel in ALLOWED:
            continue
        found += [f"{rel}:{n}" for n in _kind_branches(ast.parse(path.read_text(encoding="utf-8")))]
    assert not found, f"branches on a task's kind outside mtdnn/kinds/: {found}"


def test_the_check_sees_a_branch():
    tree = ast.parse('if task.type == "regression":\n    pass\nx = t.input in ("single", "pair")\n')
    assert _kind_branches(tree) == [1, 3]


def test_every_task_has_its_kind():
    tasks = builtin_tasks()
    assert kind_of(tasks["rte"]) is get_kind("classification") is tasks["rte"].kind
    assert tasks["stsb"].kind.name == "regression" and tasks["qnli_rank"].kind.keeps_groups
    for task in tasks.values():
        assert task.loss_kind == task.kind.loss_name
        assert task.num_outputs == task.kind.num_outputs(task)


def _declared(protocol: type) -> set[str]:
    """The members a protocol declares: its annotated fields, properties and methods."""
    return set(protocol.__annotations__) | {n for n in vars(protocol) if not n.startswith("_")}


def _read_of(annotation: str) -> dict[str, list[str]]:
    """Each attribute the kinds (and the modules they use) read of a parameter annotated
    ``annotation``, with where."""
    read: dict[str, list[str]] = {}
    for path in sorted((SRC / "kinds").glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            params = {a.arg for a in fn.args.args + fn.args.kwonlyargs
                      if a.annotation is not None and annotation in ast.unparse(a.annotation)}
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in params:
                    read.setdefault(node.attr, []).append(f"{path.name}:{node.lineno}")
    return read


@pytest.mark.parametrize("protocol", [TaskSpec, SplitSpec, ServedTask], ids=lambda p: p.__name__)
def test_the_specs_declare_what_the_kinds_read(protocol):
    read = _read_of(protocol.__name__)
    assert read, f"no kind reads a {protocol.__name__}: the scan found nothing"
    undeclared = {name: where for name, where in read.items() if name not in _declared(protocol)}
    assert not undeclared, f"read by the kinds but not declared in kinds/specs.py: {undeclared}"


def test_the_schema_and_the_server_give_what_the_kinds_read():
    tasks = builtin_tasks()
    assert {t.type for t in tasks.values()} == set(KINDS)  # one task of each kind at least
    for task in tasks.values():
        assert isinstance(task, TaskSpec), task.name
        assert all(isinstance(s, SplitSpec) for s in task.splits.values()), task.name
    info = TaskInfo("t", "tagging", "words", ["O", "B-X"], "linear", 1, "e", settings={"scheme": "iob2"})
    assert isinstance(info, ServedTask)
    # the checks can fail: an object without the fields is no spec
    assert not isinstance(object(), TaskSpec) and not isinstance(info, SplitSpec)


def test_kind_hooks_of_the_built_in_kinds():
    tasks = builtin_tasks()
    rte, stsb, rank = tasks["rte"], tasks["stsb"], tasks["qnli_rank"]
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert rte.kind.eval_outputs(logits, {}).sum(-1).allclose(torch.ones(2))
    assert rte.kind.decide(rte, np.array([[0.9, 0.1], [0.2, 0.8]]), None).tolist() == [0, 1]
    assert rank.kind.onnx_predictions(rank, np.array([[0.1], [0.7], [0.3]]), np.array([0, 0, 1])).tolist() == [0, 1, 1]
    assert stsb.kind.api_values(stsb, ["1.500"]) == [1.5]
    assert rte.kind.prediction_columns(rte) == [f"p_{name}" for name in rte.labels]
    assert stsb.kind.class_names(stsb) is None and stsb.kind.class_report(stsb, np.zeros(1), np.zeros(1)) is None
    assert rank.kind.class_names(rank) == [rank.labels[1], rank.labels[0]]
    assert stsb.kind.adv_divergence(stsb) == "mse" and stsb.kind.uncertainty_scale() == 0.5


def test_kind_rules_reach_the_task_file():
    split = {"path": "x.tsv", "role": "train", "columns": {"text_a": "a", "label": "y"}}
    with pytest.raises(ConfigError, match="needs at least 2 labels"):
        parse_task({"name": "t", "type": "classification", "input": "single", "labels": ["a"],
                    "splits": {"train": split}}, "t.yaml")
    with pytest.raises(ConfigError, match="'pearson' is for regression scores"):
        parse_task({"name": "t", "type": "classification", "input": "single", "labels": ["a", "b"],
                    "metrics": ["pearson"], "splits": {"train": split}}, "t.yaml")


def test_a_registered_kind_is_a_type():
    class Binary(Classification):
        name = "binary_test_kind"

        def validate(self, task):
            if len(task.labels) != 2:
                raise ValueError("a binary_test_kind task has two labels")

    assert isinstance(Binary(), TaskKind)
    register_kind(Binary())
    try:
        split = {"path": "x.tsv", "role": "train", "columns": {"text_a": "a", "label": "y"}}
        task = parse_task({"name": "t", "type": "binary_test_kind", "input": "single", "labels": ["a", "b"],
                           "splits": {"train": split}}, "t.yaml")
        assert task.kind.name == "binary_test_kind" and task.num_outputs == 2
        with pytest.raises(ConfigError, match="has two labels"):
            parse_task({"name": "t", "type": "binary_test_kind", "input": "single", "labels": ["a", "b", "c"],
                        "splits": {"train": split}}, "t.yaml")
    finally:
        del KINDS["binary_test_kind"]
