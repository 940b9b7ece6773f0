"""What ``mtdnn tasks init`` guesses from question-answering files: a SQuAD JSON file (``data`` >
``paragraphs`` > ``qas``) or JSON lines / CSV with a question and a context per row, the answer
text and start columns by their names, and the SQuAD version (v2.0 when a question is
unanswerable: ``is_impossible``, or an empty answer in JSON lines and CSV)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

QUESTION_FIELDS = ("question", "query", "q")
CONTEXT_FIELDS = ("context", "passage", "paragraph", "document")
ANSWER_FIELDS = ("answer_text", "answer", "answers", "answer_texts")
START_FIELDS = ("answer_start", "answer_starts", "start")
ID_FIELDS = ("id", "qid", "question_id", "uid")
TABLE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def looks_like_squad(path: Path) -> bool:
    """A ``.json`` file holding ``{"data": [{"paragraphs": [...]}, ...]}``."""
    if path.suffix.lower() != ".json":
        return False
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    articles = data.get("data") if isinstance(data, dict) else None
    return isinstance(articles, list) and bool(articles) and isinstance(articles[0], dict) \
        and "paragraphs" in articles[0]


def table_fields(path: Path) -> list[str]:
    """The field names of the first JSON-lines record, or the CSV header ([] when unreadable)."""
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "csv":
                return [str(x) for x in next(csv.reader(f), [])]
            if fmt == "jsonl":
                record = json.loads(next((ln for ln in f if ln.strip()), "{}"))
                return list(record) if isinstance(record, dict) else []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error):
        return []
    return []


def named(fields: list[str], names: tuple[str, ...]) -> str | None:
    """The first of ``fields`` whose lower-cased name is one of ``names`` (in ``names``' order)."""
    low = {f.lower(): f for f in fields}
    return next((low[n] for n in names if n in low), None)


def looks_like_span_table(path: Path) -> bool:
    """JSON lines or CSV with a question field and a context field (named as above)."""
    fields = table_fields(path)
    return named(fields, QUESTION_FIELDS) is not None and named(fields, CONTEXT_FIELDS) is not None


def flow(mapping: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in mapping.items()) + "}"
