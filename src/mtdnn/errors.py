"""The one exception type for problems a user can cause.

The CLI prints its message on one line and exits non-zero; everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import json


class MtdnnError(Exception):
    """A problem with the user's input, configuration or files, worded for people."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        where = []
        if path is not None:
            where.append(str(path) + (f":{line}" if line is not None else ""))
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        # One line, whatever a quoted value from a file holds: line breaks are shown escaped.
        text = (prefix + message).replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(text)
        self.path, self.line, self.field = path, line, field


class DataError(MtdnnError):
    """Bad or missing data files and rows."""


class ConfigError(MtdnnError):
    """Bad run configuration or task definition."""


class CheckpointError(MtdnnError):
    """A run directory or weights file that cannot be used."""


def json_object_line(text: str, path: str, line: int) -> dict:
    """One line of a JSON lines file as an object; otherwise a DataError naming the file and line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg})", path=path, line=line) from None
    if not isinstance(value, dict):
        raise DataError("not a JSON object", path=path, line=line)
    return value
