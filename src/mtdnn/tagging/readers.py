"""Readers for tagged sentences: CoNLL-style column files and JSON lines.

``format: conll``: one word per line, columns separated by spaces or tabs, a blank (or
whitespace-only) line between sentences. The word and the tag column are chosen by index, so
one file gives several tasks (CoNLL-2003: word 0, POS 1, chunk 2, NER 3). Lines whose first
field is ``-DOCSTART-`` are skipped whatever their other columns hold, and end the sentence
they interrupt. Trailing whitespace, CRLF line ends, a BOM and runs of blank lines are
tolerated.

``format: jsonl``: one sentence per line, an object with a list of words and a list of tags
(field names configurable, ``tokens`` and ``tags`` by default).

Every sentence keeps the 1-based line number where it starts. Every problem becomes a
``DataError`` naming the file, the line and the field.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import DataError, json_object_line

DOCSTART = "-DOCSTART-"
_FIELD_SEP = re.compile(r"[ \t]+")


@dataclass
class TaggedSentence:
    """One sentence: its words, their tags (None for an untagged file) and the 1-based line
    where it starts. In a column file word ``i`` is on line ``line + i``; in JSON lines the
    whole sentence is on ``line`` (``words_on_lines`` tells which)."""

    words: list[str]
    tags: list[str] | None
    line: int
    words_on_lines: bool = True

    def __len__(self) -> int:
        return len(self.words)

    def line_of(self, index: int) -> int:
        """The line of word ``index``."""
        return self.line + index if self.words_on_lines else self.line


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text without the line end)``, decoding errors as DataError."""
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"not UTF-8 ({err.reason} at byte {err.start})", path=str(path),
                                line=number) from None
            yield number, text.rstrip("\r\n")


def _columns(text: str, sep: str | None) -> list[str]:
    stripped = text.rstrip(" \t")
    return _FIELD_SEP.split(stripped.lstrip(" \t")) if sep is None else stripped.split(sep)


def _cell(cols: list[str], index: int, name: str, path: Path, number: int) -> str:
    if not -len(cols) <= index < len(cols):
        raise DataError(f"{len(cols)} column(s), the {name} is column {index}", path=str(path),
                        line=number, field=f"column {index}")
    return cols[index]


def read_conll(path: str | Path, *, word_column: int = 0, tag_column: int | None = -1,
               sep: str | None = None) -> list[TaggedSentence]:
    """The sentences of a column file. ``word_column``/``tag_column``: 0-based indices (negative
    ones count from the end; ``tag_column=None`` reads words only). ``sep``: None splits on runs
    of spaces and tabs (not on other Unicode spaces, which may be part of a word); ``"\\t"`` keeps
    spaces inside a field. Raises DataError for a line with too few columns, an empty word or tag
    field, or a file without any sentence."""
    path = Path(path)
    out: list[TaggedSentence] = []
    current: TaggedSentence | None = None
    for number, text in _lines(path):
        cols = _columns(text, sep) if text.strip(" \t") else []
        if not cols or cols[0] == DOCSTART:
            current = None
            continue
        word = _cell(cols, word_column, "word", path, number)
        tag = None if tag_column is None else _cell(cols, tag_column, "tag", path, number)
        if word == "" or tag == "":
            raise DataError("empty field", path=str(path), line=number,
                            field=f"column {word_column if word == '' else tag_column}")
        if current is None:
            current = TaggedSentence([], None if tag_column is None else [], number)
            out.append(current)
        current.words.append(word)
        if current.tags is not None:
            current.tags.append(tag)
    if not out:
        raise DataError("no sentence in the file", path=str(path))
    return out


def _string_list(record: dict, name: str, path: Path, number: int) -> list[str]:
    if name not in record:
        raise DataError("missing", path=str(path), line=number, field=name)
    value = record[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError("not a list of strings", path=str(path), line=number, field=name)
    return value


def _jsonl_sentence(text: str, path: Path, number: int, tokens_field: str,
                    tags_field: str | None) -> TaggedSentence:
    record = json_object_line(text, str(path), number)
    words = _string_list(record, tokens_field, path, number)
    if not words:
        raise DataError("empty sentence (no words)", path=str(path), line=number, field=tokens_field)
    tags = None
    if tags_field is not None:
        tags = _string_list(record, tags_field, path, number)
        if len(tags) != len(words):
            raise DataError(f"{len(tags)} tags for {len(words)} words in '{tokens_field}'",
                            path=str(path), line=number, field=tags_field)
    return TaggedSentence(words, tags, number, words_on_lines=False)


def read_tagged_jsonl(path: str | Path, *, tokens_field: str = "tokens",
                      tags_field: str | None = "tags") -> list[TaggedSentence]:
    """The sentences of a JSON-lines file, one object per non-blank line with a list of words
    and a list of tags of the same length (``tags_field=None`` reads words only). Raises
    DataError for invalid JSON, a missing or non-list field, lists of different lengths, an
    empty sentence or a file without any sentence."""
    path = Path(path)
    out = [_jsonl_sentence(text, path, number, tokens_field, tags_field)
           for number, text in _lines(path) if text.strip()]
    if not out:
        raise DataError("no sentence in the file", path=str(path))
    return out


def read_tagged(path: str | Path, format: str, **options: object) -> list[TaggedSentence]:
    """``read_conll`` (``format="conll"``) or ``read_tagged_jsonl`` (``format="jsonl"``) with
    their keyword options."""
    if format == "conll":
        return read_conll(path, **options)  # type: ignore[arg-type]
    if format == "jsonl":
        return read_tagged_jsonl(path, **options)  # type: ignore[arg-type]
    raise DataError(f"unknown tagged-file format {format!r} (conll or jsonl)", path=str(path))


def check_tags(sentences: Sequence[TaggedSentence], labels: Collection[str], path: str | Path,
               field: str = "tags") -> None:
    """Raise DataError at the first tag that is not one of the task's ``labels``, naming the
    file, the tag's line and ``field`` (e.g. ``column 3`` or ``tags``)."""
    known = set(labels)
    for sentence in sentences:
        for i, tag in enumerate(sentence.tags or ()):
            if tag not in known:
                shown = ", ".join(sorted(known)[:20]) + (", ..." if len(known) > 20 else "")
                raise DataError(f"tag {tag!r} (word {i} {sentence.words[i]!r}) is not a label of "
                                f"the task ({shown})", path=str(path), line=sentence.line_of(i),
                                field=field)
