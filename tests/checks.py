"""Checks and loaders shared by several test files: the CLI's one-line error, and the experiment
runners (scripts in experiments/, not a package) loaded as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(capsys) -> str:
    """The single ``mtdnn: error: ...`` line a failed command printed (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("mtdnn: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def load_experiment(name: str) -> ModuleType:
    """``experiments/<name>.py`` as the module ``experiments_<name>``."""
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
