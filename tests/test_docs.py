"""The documentation against the code and the tree: the options tables against ``TrainConfig``,
every relative link of README.md and docs/ resolving inside the repository, README.md's length,
and no file of the repository speaking of how the project was made instead of what it is."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from mtdnn.commands.config_flags import default_text
from mtdnn.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
OPTIONS_DOC = ROOT / "docs" / "options.md"
README = ROOT / "README.md"


# ----------------------------------------------------------------------------- the options tables
def _default_text(name: str) -> str:
    """A field's default as the tables write it: what ``mtdnn train --help`` shows, else
    "required" or "unset"."""
    info = TrainConfig.model_fields[name]
    shown = default_text(info)
    if shown is not None:
        return shown
    return "required" if info.is_required() else "unset"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _option_rows(path: Path) -> list[dict[str, str]]:
    """The rows of every table of ``path`` whose first column is a flag, as {column header: cell}."""
    rows, header = [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    for line, after in zip(lines, [*lines[1:], ""]):
        if line.startswith("|") and re.fullmatch(r"\|[-:| ]+\|", after.strip()):
            header = [c.replace("`", "").strip().lower() for c in _cells(line)]
        elif line.startswith("| `--"):
            rows.append(dict(zip(header, _cells(line))))
    return rows


def _first_flag(cell: str) -> str:
    return re.match(r"`(--[a-z0-9-]+)", cell).group(1)


def test_options_doc_has_one_row_per_trainconfig_field_with_its_default():
    rows = _option_rows(OPTIONS_DOC)
    by_key = {r["yaml key"].strip("`"): r for r in rows}
    fields = set(TrainConfig.model_fields)
    assert len(by_key) == len(rows), "a field has two rows in docs/options.md"
    missing = sorted(fields - set(by_key))
    stale = sorted(set(by_key) - fields)
    assert not missing, f"docs/options.md lacks rows for TrainConfig fields {missing}"
    assert not stale, f"docs/options.md has rows for fields TrainConfig no longer has: {stale}"
    may_change = TrainConfig.resume_may_change()
    for name, row in by_key.items():
        assert _first_flag(row["flag"]) == _flag(name), row
        for alias in TrainConfig.flag_aliases(name):
            assert f"`{alias}`" in row["flag"], (name, alias)
        assert row["default"] == f"`{_default_text(name)}`", (name, row["default"], _default_text(name))
        assert row["on --resume"] == ("may change" if name in may_change else "fixed"), name


def test_readme_options_table_matches_trainconfig():
    rows = _option_rows(README)
    assert len(rows) >= 8, "README.md's table of the main options is missing"
    flags = {_flag(n): n for n in TrainConfig.model_fields}
    for row in rows:
        flag = _first_flag(row["option"])
        assert flag in flags, f"README.md documents {flag}, which mtdnn train does not have"
        assert row["default"] == f"`{_default_text(flags[flag])}`", (flag, row["default"])


def test_readme_is_a_front_page():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 160


# ----------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def _markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", _markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve_inside_the_repository(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if ROOT not in dest.parents and dest != ROOT:
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(bad)


# ----------------------------------------------------------------------------- how the project speaks
# Words about how the project was made (work sessions, issue numbers, plans, redesigns, who did
# it): a reader has none of these. Written so that this file does not match itself.
PROCESS_WORDS = re.compile(
    r"\bsessions?\s+#?\d+|\bthis\s+session\b|\bsession[']s|"
    r"\b(?:both|earlier|previous|next|later|last|other)\s+sessions?\b|"
    r"\bissues?\s+#?\d+|\bthe\s+issue\b|\bissue's|\bthe\s+reproduction\s+issue\b|"
    r"\bre-?design(?:ed)?\b|\bhelp(?:er)s?\b|\bother\s+engineers\b|"
    r"\bthe\s+device\s+tool\b|\bthis\s+task's\s+budget\b|\bwas\s+lent\s+to\s+this\s+task\b",
    re.IGNORECASE)
# what may contain "session" legitimately: pytest's session-scoped fixtures, ONNX Runtime's sessions
ALLOWED = re.compile(r'scope="session"|ort\.InferenceSession|ort\.SessionOptions|start_new_session=True')


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in out.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def test_no_file_speaks_of_how_the_project_was_made():
    found = []
    for path in _tracked_text_files():
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            m = PROCESS_WORDS.search(ALLOWED.sub("", line))
            if m:
                found.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r}: {line.strip()[:120]}")
    assert not found, "say what the project is, not how it was made:\n" + "\n".join(found)


def test_no_code_reads_a_path_outside_the_repository():
    """The data folder is --data-dir, $MTDNN_DATA_DIR or ./data; only scripts/ may add a fallback
    beside the clone (README, "Data")."""
    pattern = re.compile(r"parents\[[2-9]\]|Path\(\s*[\"']\.\.[/\"']")
    found = [f"{p.relative_to(ROOT)}:{n}"
             for p in _tracked_text_files() if p.suffix == ".py"
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not found, found


# ----------------------------------------------------------------------------- the front page's figures
README_ROWS = {"single-task, 4 epochs": "single4", "MT-DNN": "finetune"}
README_TASKS = ["cola", "sst2", "mrpc", "stsb", "rte", "mnli_aux"]


def test_readme_result_table_is_the_seeds_grid_summary():
    """The GLUE table of README.md's Result section is copied from experiments/results/summary.json
    (the seeds grid, held-out selection): every mean, and every difference with its interval."""
    import json

    summary = json.loads((ROOT / "experiments" / "results" / "summary.json").read_text())["glue_seeds"]["glue"]["holdout"]
    section = README.read_text(encoding="utf-8").split("## Result", 1)[1].split("\n## ", 1)[0]
    rows = {c[0]: c[1:] for c in (_cells(line) for line in section.splitlines() if line.startswith("| "))}
    for label, row in README_ROWS.items():
        means = [float(re.match(r"-?[\d.]+", cell).group()) for cell in rows[label][:len(README_TASKS)]]
        assert means == [round(summary["rows"][row][t]["mean"], 1) for t in README_TASKS], label
    differences = summary["differences"]["finetune"]
    shown = [re.findall(r"[-+]?[\d.]+", cell)[:3] for cell in rows["difference [95% interval]"][:len(README_TASKS)]]
    assert shown == [[f"{differences[t][k]:+.1f}" for k in ("difference", "low", "high")] for t in README_TASKS]
    average = sum(differences[t]["difference"] for t in README_TASKS) / len(README_TASKS)
    assert rows["difference [95% interval]"][len(README_TASKS)].startswith(f"{average:+.1f}")
