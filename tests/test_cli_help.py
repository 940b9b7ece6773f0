"""Every command's ``--help`` text, exactly as recorded in ``fixtures/help_texts.json``.

The texts are printed at a fixed width (``COLUMNS=100``). After a deliberate change of a flag or
its help, record them again: ``python tests/test_cli_help.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "help_texts.json"
WIDTH = "100"

# every command and nested command of ``mtdnn`` (the words before ``--help``)
COMMANDS = [[], ["tasks"], ["tasks", "init"], ["tasks", "check"], ["train"], ["evaluate"], ["predict"],
            ["affinity"], ["distill"], ["shrink-encoder"], ["export"], ["serve"]]


def help_text(words: list[str]) -> str:
    from mtdnn.cli import main

    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([*words, "--help"])
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue()


def help_texts() -> dict[str, str]:
    return {" ".join(["mtdnn", *words]): help_text(words) for words in COMMANDS}


def test_help_texts_are_as_recorded():
    recorded = json.loads(FIXTURE.read_text(encoding="utf-8"))
    now = help_texts()
    assert list(now) == list(recorded)
    for command, text in recorded.items():
        assert now[command] == text, f"`{command} --help` changed (record again: python tests/test_cli_help.py)"


def test_every_command_is_recorded():
    from mtdnn.cli import COMMANDS as TABLE

    assert sorted(TABLE) == sorted(words[0] for words in COMMANDS if len(words) == 1)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(help_texts(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE}")
