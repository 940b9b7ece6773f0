"""The shape of the training loop: ``train()`` reads on one screen, and no function in
src/ grows past 80 lines (new features plug into the loop's named pieces instead)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "mtdnn"


def _functions():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(SRC), node.name, node.end_lineno - node.lineno + 1


def test_train_fits_one_screen():
    lengths = {name: n for path, name, n in _functions() if str(path) == "training/loop.py"}
    assert "train" in lengths
    assert lengths["train"] <= 60


def test_no_function_over_80_lines():
    found = list(_functions())
    assert len(found) > 100  # the walk saw the package
    long = [f"{path}:{name} ({n} lines)" for path, name, n in found if n > 80]
    assert not long, long
