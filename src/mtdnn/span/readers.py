"""Readers for extractive question answering: SQuAD JSON (v1.1 and v2.0), JSON lines and CSV.

Every example keeps where it came from: the file and its line (JSON lines, CSV: the 1-based line
where the row starts) or, for SQuAD JSON, the JSON path of its question
(``data[3].paragraphs[2].qas[5]``). Every problem a file can have raises a one-line ``DataError``
naming the file, that line and the field: an empty question or context, an answer start outside
the context, an answer text that differs from the context at its start, a duplicate id, a JSON
file that is not SQuAD-shaped.

SQuAD v2.0 unanswerable questions (``is_impossible: true``) get no answers; their
``plausible_answers`` are ignored. In JSON lines and CSV a row whose answer text is empty (``""``,
``null``, ``[]``) is unanswerable.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..errors import DataError, json_object_line

Answer = tuple[str, int]  # (answer text, character start in the context)


@dataclass(frozen=True)
class SpanExample:
    """One question on one context. ``answers``: every gold answer, in file order (the first is
    the training target); empty when ``is_impossible``. ``source``: the file; ``line``: the line
    (int) or the JSON path (str) of the question in it."""

    id: str
    title: str
    question: str
    context: str
    answers: tuple[Answer, ...]
    is_impossible: bool
    source: str = ""
    line: int | str | None = None

    @property
    def answer_texts(self) -> list[str]:
        return [text for text, _ in self.answers]


@dataclass(frozen=True)
class SpanColumns:
    """Column names of a JSON lines or CSV file. ``id`` and ``title`` may be absent from the file
    (ids then default to ``"<line>"``, titles to ``""``)."""

    id: str = "id"
    title: str = "title"
    question: str = "question"
    context: str = "context"
    answer_text: str = "answer_text"
    answer_start: str = "answer_start"


def check_example(example: SpanExample) -> SpanExample:
    """Return ``example`` if it is usable, else raise a ``DataError`` naming its file, line and
    the field at fault."""
    def fail(fld: str, message: str) -> DataError:
        return DataError(message, path=example.source, line=example.line, field=fld)  # type: ignore[arg-type]

    if not example.question.strip():
        raise fail("question", "empty question")
    if not example.context.strip():
        raise fail("context", "empty context")
    if example.is_impossible and example.answers:
        raise fail("answers", "an unanswerable question (is_impossible) with answers")
    n = len(example.context)
    for k, (text, start) in enumerate(example.answers):
        where = f"answers[{k}]"
        if not text.strip():
            raise fail(where, "empty answer text")
        if not 0 <= start < n or start + len(text) > n:
            raise fail(where, f"answer start {start} (length {len(text)}) is beyond the context "
                              f"({n} characters)")
        found = example.context[start:start + len(text)]
        if found != text:
            raise fail(where, f"answer text {text!r} differs from the context at its start "
                              f"{start}: {found!r}")
    return example


def _require(value: Any, kind: type | tuple[type, ...], path: str, line: str, fld: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"expected {names}, found {type(value).__name__} (not SQuAD-shaped)",
                        path=path, line=line, field=fld)  # type: ignore[arg-type]
    return value


def _squad_answers(qa: dict, path: str, where: str) -> tuple[tuple[Answer, ...], bool]:
    """The gold answers of one SQuAD question and whether it is unanswerable."""
    impossible = _require(qa.get("is_impossible", False), bool, path, where, "is_impossible")
    if impossible:
        return (), True
    answers = _require(qa.get("answers"), list, path, where, "answers")
    out = []
    for k, answer in enumerate(answers):
        fld = f"answers[{k}]"
        _require(answer, dict, path, where, fld)
        text = _require(answer.get("text"), str, path, where, fld + ".text")
        start = _require(answer.get("answer_start"), int, path, where, fld + ".answer_start")
        out.append((text, start))
    if not out:
        raise DataError("no answers, and the question is not marked is_impossible", path=path,
                        line=where, field="answers")  # type: ignore[arg-type]
    return tuple(out), False


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"not valid JSON: {e}", path=str(path)) from None


def _squad_questions(data: Any, path: str) -> Iterator[tuple[str, str, dict, str]]:
    """(title, context, qa, JSON path) for every question of a SQuAD-shaped document."""
    _require(data, dict, path, "(top level)", "data")
    articles = _require(data.get("data"), list, path, "(top level)", "data")
    for a, article in enumerate(articles):
        where = f"data[{a}]"
        _require(article, dict, path, where, "(article)")
        title = _require(article.get("title", ""), str, path, where, "title")
        for p, para in enumerate(_require(article.get("paragraphs"), list, path, where, "paragraphs")):
            where_p = f"{where}.paragraphs[{p}]"
            _require(para, dict, path, where_p, "(paragraph)")
            context = _require(para.get("context"), str, path, where_p, "context")
            for q, qa in enumerate(_require(para.get("qas"), list, path, where_p, "qas")):
                yield title, context, _require(qa, dict, path, f"{where_p}.qas[{q}]", "(question)"), \
                    f"{where_p}.qas[{q}]"


def read_squad_json(path: str | Path, strict: bool = True, labeled: bool = True) -> list[SpanExample]:
    """All questions of a SQuAD v1.1 or v2.0 JSON file, in file order (``strict=False``: without
    ``check_example``, to count what is wrong; ``labeled=False``: questions may have no answers)."""
    path = Path(path)
    src = str(path)
    out = []
    for title, context, qa, where in _squad_questions(_load_json(path), src):
        qid = _require(qa.get("id"), str, src, where, "id")
        question = _require(qa.get("question"), str, src, where, "question")
        answers, impossible = (_squad_answers(qa, src, where) if labeled or qa.get("answers") or qa.get("is_impossible")
                               else ((), False))
        example = SpanExample(qid, title, question, context, answers, impossible, src, where)
        out.append(check_example(example) if strict else example)
    return _unique_ids(out)


def _unique_ids(examples: list[SpanExample]) -> list[SpanExample]:
    seen: dict[str, int | str | None] = {}
    for ex in examples:
        if ex.id in seen:
            raise DataError(f"duplicate id {ex.id!r} (first at {seen[ex.id]})", path=ex.source,
                            line=ex.line, field="id")  # type: ignore[arg-type]
        seen[ex.id] = ex.line
    return examples


def _as_list(value: Any) -> list[Any]:
    """A cell holding one value or a list of values -> the list (``None``/``""`` -> empty)."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list) else [value]


def _row_answers(texts: Any, starts: Any, path: str, line: int,
                 columns: SpanColumns) -> tuple[Answer, ...]:
    """The answers of one JSON lines or CSV row: one text and start, or lists of equal length."""
    texts, starts = _as_list(texts), _as_list(starts)
    if not texts:
        return ()
    if len(texts) != len(starts):
        raise DataError(f"{len(texts)} answer texts but {len(starts)} answer starts", path=path,
                        line=line, field=columns.answer_start)
    out = []
    for text, start in zip(texts, starts):
        if not isinstance(text, str):
            raise DataError(f"answer text {text!r} is not a string", path=path, line=line,
                            field=columns.answer_text)
        if isinstance(start, str) and start.strip().lstrip("-").isdigit():
            start = int(start)
        if not isinstance(start, int) or isinstance(start, bool):
            raise DataError(f"answer start {start!r} is not an integer", path=path, line=line,
                            field=columns.answer_start)
        out.append((text, start))
    return tuple(out)


def _row_example(row: dict[str, Any], path: str, line: int, columns: SpanColumns, strict: bool = True,
                 labeled: bool = True) -> SpanExample:
    """One JSON lines or CSV row -> a checked example (``labeled=False``: a row without answer
    columns is a question without answers)."""
    answer_columns = (columns.answer_text, columns.answer_start)
    if not labeled and not any(n in row for n in answer_columns):
        row = {**row, **dict.fromkeys(answer_columns)}
    for name in (columns.question, columns.context, *answer_columns):
        if name not in row:
            raise DataError("missing column", path=path, line=line, field=name)
    for name in (columns.question, columns.context):
        if not isinstance(row[name], str):
            raise DataError(f"expected a string, found {type(row[name]).__name__}", path=path,
                            line=line, field=name)
    answers = _row_answers(row[columns.answer_text], row[columns.answer_start], path, line, columns)
    qid = row.get(columns.id)
    title = row.get(columns.title)
    example = SpanExample(str(line) if qid is None or qid == "" else str(qid),
                          "" if title is None else str(title), row[columns.question],
                          row[columns.context], answers, not answers, path, line)
    return check_example(example) if strict else example


def read_span_jsonl(path: str | Path, columns: SpanColumns = SpanColumns(), strict: bool = True,
                    labeled: bool = True) -> list[SpanExample]:
    """A JSON lines file, one object per line (blank lines skipped). The answer text and start
    columns hold one value each, or lists of equal length (several gold answers); ``labeled=False``:
    rows may leave them out."""
    path = Path(path)
    out = []
    for line, text in enumerate(_read_text(path).split("\n"), start=1):
        if not text.strip():
            continue
        out.append(_row_example(json_object_line(text, str(path), line), str(path), line, columns, strict, labeled))
    return _unique_ids(out)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except UnicodeDecodeError as e:
        raise DataError(f"bytes that are not UTF-8 (byte offset {e.start})", path=str(path)) from None


def _csv_cell(value: str | None, is_list: bool, path: str, line: int, fld: str) -> Any:
    if not is_list:
        return value
    try:
        parsed = json.loads(value or "")
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list):
        raise DataError(f"expected a JSON list, found {value!r}", path=path, line=line, field=fld)
    return parsed


def read_span_csv(path: str | Path, columns: SpanColumns = SpanColumns(), strict: bool = True,
                  labeled: bool = True) -> list[SpanExample]:
    """A CSV file with a header line. Several gold answers: an answer start cell holding a JSON
    list (``[3, 10]``) makes the answer text cell a JSON list too (``["a", "b"]``)."""
    path = Path(path)
    src = str(path)
    reader = csv.DictReader(_read_text(path).splitlines(keepends=True))
    out, line = [], 2
    try:
        for row in reader:
            if any(v is None for v in row.values()) or None in row:
                raise DataError("wrong number of columns", path=src, line=line)
            starts = row.get(columns.answer_start)
            is_list = starts is not None and starts.lstrip().startswith("[")
            for name in (columns.answer_text, columns.answer_start):
                if name in row:
                    row[name] = _csv_cell(row[name], is_list, src, line, name)
            out.append(_row_example(row, src, line, columns, strict, labeled))
            line = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"malformed CSV: {e}", path=src, line=line) from None
    return _unique_ids(out)


def read_span_file(path: str | Path, columns: SpanColumns = SpanColumns()) -> list[SpanExample]:
    """By file name: ``.json`` -> SQuAD JSON, ``.jsonl`` -> JSON lines, ``.csv`` -> CSV."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return read_squad_json(path)
    if suffix == ".jsonl":
        return read_span_jsonl(path, columns)
    if suffix == ".csv":
        return read_span_csv(path, columns)
    raise DataError("unknown file type (expected .json, .jsonl or .csv)", path=str(path))


def misplaced_answers(examples: Iterable[SpanExample]) -> list[tuple[SpanExample, int]]:
    """(example, answer index) of every answer whose text is not the context's at its start."""
    return [(ex, k) for ex in examples for k, (text, start) in enumerate(ex.answers)
            if not 0 <= start or ex.context[start:start + len(text)] != text]


def gold_answers(examples: Iterable[SpanExample]) -> dict[str, list[str]]:
    """``{id: [gold answer texts]}`` (an empty list for an unanswerable question), for the metrics."""
    return {ex.id: ex.answer_texts for ex in examples}


# The built-in SQuAD v1.1 task trains and evaluates on the official dev file (no train file is
# available): the first 40 articles in file order train (8,981 questions), the last 8 evaluate
# (1,589 questions). Articles, not questions, are split so that no context is seen on both sides.
SQUAD11_DEV_N_TRAIN_ARTICLES = 40
SQUAD11_DEV_TRAIN_TITLES: tuple[str, ...] = (
    "Super_Bowl_50", "Warsaw", "Normans", "Nikola_Tesla", "Computational_complexity_theory",
    "Teacher", "Martin_Luther", "Southern_California", "Sky_(United_Kingdom)",
    "Victoria_(Australia)", "Huguenot", "Steam_engine", "Oxygen", "1973_oil_crisis",
    "Apollo_program", "European_Union_law", "Amazon_rainforest", "Ctenophora",
    "Fresno,_California", "Packet_switching", "Black_Death", "Geology", "Newcastle_upon_Tyne",
    "Victoria_and_Albert_Museum", "American_Broadcasting_Company", "Genghis_Khan", "Pharmacy",
    "Immune_system", "Civil_disobedience", "Construction", "Private_school",
    "Harvard_University", "Jacksonville,_Florida", "Economic_inequality", "Doctor_Who",
    "University_of_Chicago", "Yuan_dynasty", "Kenya", "Intergovernmental_Panel_on_Climate_Change",
    "Chloroplast",
)
SQUAD11_DEV_EVAL_TITLES: tuple[str, ...] = (
    "Prime_number", "Rhine", "Scottish_Parliament", "Islamism", "Imperialism",
    "United_Methodist_Church", "French_and_Indian_War", "Force",
)


def article_titles(examples: Iterable[SpanExample]) -> list[str]:
    """The distinct titles of ``examples`` in order of first appearance (file order)."""
    return list(dict.fromkeys(ex.title for ex in examples))


def first_article_titles(examples: Iterable[SpanExample], n: int) -> list[str]:
    """The rule behind ``SQUAD11_DEV_TRAIN_TITLES``: the first ``n`` titles in file order."""
    titles = article_titles(examples)
    if not 0 < n < len(titles):
        raise DataError(f"cannot take {n} of {len(titles)} articles for training: both sides "
                        "need at least one")
    return titles[:n]


def split_by_articles(examples: Sequence[SpanExample],
                      train_titles: Iterable[str]) -> tuple[list[SpanExample], list[SpanExample]]:
    """(examples of the ``train_titles`` articles, all other examples), each in input order.
    A training title found in no example raises ``DataError`` (a misspelt title would otherwise
    silently move an article to the evaluation side)."""
    wanted = set(train_titles)
    missing = sorted(wanted - {ex.title for ex in examples})
    if missing:
        raise DataError(f"training article titles not in the data: {', '.join(missing[:5])}"
                        + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    train = [ex for ex in examples if ex.title in wanted]
    rest = [ex for ex in examples if ex.title not in wanted]
    return train, rest
