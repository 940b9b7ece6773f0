"""What ``mtdnn tasks init`` guesses from tagged files: the word column, the tag columns and each
tag column's scheme, for CoNLL-style column files and JSON lines with a list of words and a list
of tags per line; and the commented YAML of the drafted tasks.

- A column file is recognised by its shape: a word per line, the same number of fields (two or
  more, split on spaces or tabs) on every line, blank lines between sentences (``-DOCSTART-``
  lines are skipped, as the reader skips them).
- The word column is the one with the most distinct values; the others are tag columns (the last
  one is drafted unless others are asked).
- A tag column's scheme: ``plain`` when a tag is not ``O`` nor ``B-``/``I-``/``E-``/``S-`` plus a
  type; ``iobes`` when ``E-``/``S-`` occur; else ``iob1`` when more entities start with ``I-``
  than with ``B-`` (``schemes.detect_scheme``), ``iob2`` otherwise.
- The labels: for an entity scheme ``O``, then each type's tags (``B``, ``I``; with IOBES also
  ``E``, ``S``) in order of first appearance, IOB1 tags read into IOB2; for plain tags, every tag
  of the files, most frequent in training first.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from .readers import DOCSTART, read_conll, read_tagged_jsonl
from .schemes import IOB1, IOB2, IOBES, PLAIN, detect_scheme, iob1_to_iob2, parse_tag, spans

SNIFF_LINES = 2000      # lines read to tell whether a file is a column file
# endings of column files (and files named without one, ``eng.train``), besides the table formats'
TAGGED_SUFFIXES = ("", ".conll", ".conllu", ".conll03", ".bio", ".iob", ".iob2", ".bioes", ".iobes", ".ner",
                   ".txt", ".tsv", ".train", ".dev", ".test", ".testa", ".testb", ".annotated")
WORD_FIELDS = ("tokens", "words", "token", "word", "text")
SCHEME_NOTES = {IOB1: "read into IOB2", IOB2: "", IOBES: "", PLAIN: ""}


@dataclass
class TaggedFile:
    """One split's file as ``tasks init`` saw it: its format, the columns (indices of a column file,
    field names of JSON lines) and the values of each column per sentence."""

    role: str
    path: Path
    format: str                                   # conll or jsonl
    columns: list[Any]
    values: dict[Any, list[list[str]]] = field(default_factory=dict)  # column -> sentences -> values

    @property
    def sentences(self) -> int:
        return len(next(iter(self.values.values()), []))


@dataclass
class TagColumn:
    """The draft of one tag column: its scheme and labels, and why."""

    column: Any
    scheme: str
    scheme_note: str
    labels: list[str]
    labels_note: str
    entities: int


def column_count(path: Path, min_width: int = 2, need_blank: bool = False) -> int | None:
    """The number of fields per line when ``path`` looks like a column file (the module docstring;
    ``min_width``: 1 for a file of words only; ``need_blank``: a file of one sentence, without a
    blank line, is not one), else None."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = [ln.rstrip("\r\n") for _, ln in zip(range(SNIFF_LINES), f)]
    except (OSError, UnicodeDecodeError):
        return None
    widths, blanks, words = set(), 0, 0
    for ln in lines:
        fields = ln.split()
        if not fields:
            blanks += words > 0
            continue
        if fields[0] == DOCSTART:
            continue
        widths.add(len(fields))
        words += 1
    if len(widths) != 1 or min(widths) < min_width or words < 2 or (need_blank and blanks == 0 and words >= len(lines)):
        return None
    return widths.pop()


def tag_list_fields(record: dict[str, Any]) -> list[str]:
    """The fields of a JSON-lines record that hold a list of strings, in record order."""
    return [k for k, v in record.items() if isinstance(v, list) and v and all(isinstance(x, str) for x in v)]


def looks_like_tagged_jsonl(path: Path) -> bool:
    """Whether the first record of a JSON-lines file has two lists of strings of equal length (a
    sentence's words and tags)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            first = next((ln for ln in f if ln.strip()), "")
        record = json.loads(first)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(record, dict):
        return False
    lists = tag_list_fields(record)
    return any(len(record[a]) == len(record[b]) for i, a in enumerate(lists) for b in lists[i + 1:])


def read_tagged_file(role: str, path: Path, fmt: str) -> TaggedFile:
    """Every column of every sentence of a column file (``conll``) or JSON-lines file."""
    out = TaggedFile(role, path, fmt, [])
    if fmt == "conll":
        n = column_count(path, 2 if role == "train" else 1)
        if n is None:
            raise DataError("not a column file (a word per line, the same number of fields on every line, "
                            "blank lines between sentences)", path=str(path))
        out.columns = list(range(n))
        for c in out.columns:
            out.values[c] = [s.tags or [] for s in read_conll(path, word_column=0, tag_column=c)]
        return out
    with open(path, encoding="utf-8-sig") as f:
        first = json.loads(next((ln for ln in f if ln.strip()), "{}"))
    out.columns = tag_list_fields(first) if isinstance(first, dict) else []
    if len(out.columns) < 2:
        raise DataError("the first line has fewer than two lists of strings (words and tags)", path=str(path))
    words = out.columns[0]
    out.values[words] = [s.words for s in read_tagged_jsonl(path, tokens_field=words, tags_field=None)]
    for c in out.columns[1:]:
        out.values[c] = [s.tags or [] for s in read_tagged_jsonl(path, tokens_field=words, tags_field=c)]
    return out


def word_column(train: TaggedFile) -> tuple[Any, str]:
    """(the word column, why): a JSON field named like words (``tokens``, ``words``, ...), else the
    column with the most distinct values (the first of equals)."""
    named = [c for c in train.columns if str(c).lower() in WORD_FIELDS]
    if train.format == "jsonl" and named:
        return named[0], f"the field named '{named[0]}'"
    distinct = {c: len({v for s in train.values[c] for v in s}) for c in train.columns}
    best = max(train.columns, key=lambda c: (distinct[c], -train.columns.index(c)))
    return best, f"the column with the most distinct values ({distinct[best]})"


def _entity_starts(sentences: Sequence[Sequence[str]]) -> tuple[int, int]:
    """(entities starting with I-, entities starting with B-) after O or an entity of another type
    (a ``B-X`` after an ``X`` entity fits both IOB1 and IOB2 and is not counted)."""
    i_starts = b_starts = 0
    for tags in sentences:
        prev = ("O", "")
        for tag in tags:
            cur = parse_tag(tag) or ("O", "")
            if cur[0] in ("B", "I") and not (prev[0] in ("B", "I") and prev[1] == cur[1]):
                i_starts += cur[0] == "I"
                b_starts += cur[0] == "B"
            prev = cur
    return i_starts, b_starts


def guess_scheme(sentences: Sequence[Sequence[str]]) -> tuple[str, str]:
    """(scheme, why) of one column's tags."""
    scheme = detect_scheme(sentences)
    if scheme == PLAIN:
        odd = next(t for s in sentences for t in s if parse_tag(t) is None)
        return scheme, f"tag {odd!r} is not O nor B-/I-/E-/S- plus a type: plain tags"
    if scheme == IOBES:
        return scheme, "E-/S- prefixes occur"
    i_starts, b_starts = _entity_starts(sentences)
    if scheme == IOB1:
        return scheme, f"{i_starts} entities start with I- after O or another type, {b_starts} with B- (IOB1; read into IOB2)"
    return scheme, f"{b_starts} entities start with B- after O or another type, {i_starts} with I-"


def tag_labels(scheme: str, train: Sequence[Sequence[str]], others: Sequence[Sequence[str]]) -> tuple[list[str], str]:
    """(labels, why) of one tag column (the module docstring) from the training sentences' tags
    and those of the other splits."""
    if scheme == PLAIN:
        counts = Counter(t for s in train for t in s)
        labels = sorted(counts, key=lambda t: (-counts[t], t))
        extra = sorted({t for s in others for t in s} - set(labels))
        return labels + extra, "every tag of the files, most frequent in training first"
    types: list[str] = []
    for tags in (*train, *others):
        for tag in tags:
            parsed = parse_tag(tag)
            if parsed is not None and parsed[0] != "O" and parsed[1] not in types:
                types.append(parsed[1])
    prefixes = "BIES" if scheme == IOBES else "BI"
    labels = ["O"] + [f"{p}-{t}" for t in types for p in prefixes]
    read = " (IOB2 tags: an iob1 file is read into IOB2)" if scheme == IOB1 else ""
    return labels, f"O, then the {'/'.join(prefixes)} tags of {len(types)} types in order of appearance{read}"


def tag_column(column: Any, files: list[TaggedFile]) -> TagColumn:
    """The scheme and labels of one tag column over the splits (``files[0]``: training)."""
    train, others = files[0].values[column], [s for f in files[1:] for s in f.values.get(column, [])]
    scheme, scheme_note = guess_scheme(train)
    labels, labels_note = tag_labels(scheme, train, others)
    as_iob2 = [iob1_to_iob2(s) for s in train] if scheme == IOB1 else train
    entities = 0 if scheme == PLAIN else sum(len(spans(s)) for s in as_iob2)
    return TagColumn(column, scheme, scheme_note, labels, labels_note, entities)


def _yaml(value: Any) -> str:
    return str(value) if isinstance(value, int) else json.dumps(value, ensure_ascii=False)


def task_lines(name: str, col: TagColumn, word: Any, word_note: str, label_note: str, files: list[TaggedFile],
               paths: dict[str, str]) -> list[str]:
    """The YAML lines of one drafted tagging task (``paths``: role -> the path written)."""
    fmt = files[0].format
    shape = ("a CoNLL-style column file (a word per line, blank lines between sentences)" if fmt == "conll"
             else "JSON lines with a list of words and a list of tags per line")
    entity = col.scheme != PLAIN
    metrics = ("[f1, precision, recall]  # entity F1 (conlleval: exact span and type), micro over types"
               if entity else "[accuracy]  # token accuracy (plain tags carry no entities)")
    lines = [f"name: {name}", f"type: tagging  # {shape}", "input: words",
             f"scheme: {col.scheme}  # {col.scheme_note}",
             f"labels: [{', '.join(json.dumps(x, ensure_ascii=False) for x in col.labels)}]  # {col.labels_note}",
             f"metrics: {metrics}", "dropout: 0.1", "splits:"]
    for f in files:
        tagged = col.column in f.values
        cols = f"{{text_a: {_yaml(word)}" + (f", label: {_yaml(col.column)}}}" if tagged else "}")
        note = f"  # words: {word_note}; tags: {label_note}" if f is files[0] else ""
        lines += [f"  {f.role}:", f"    role: {f.role}",
                  f"    path: {json.dumps(paths[f.role], ensure_ascii=False)}  # relative to this file's folder",
                  f"    format: {f.format}", f"    columns: {cols}{note}"]
        if not tagged:
            lines.append("    labeled: false  # no tags: predictions only")
    return lines
