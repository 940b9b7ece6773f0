"""Checks shared by several test files: the CLI's one-line error."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(capsys) -> str:
    """The single ``mtdnn: error: ...`` line a failed command printed (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("mtdnn: error: ")]
    assert len(lines) == 1, err
    return lines[0]
