"""Tag schemes: IOB1, IOB2, IOBES and plain tags; entity spans, conversion, validation, detection.

A tag is ``O`` or ``P-TYPE`` with the prefix ``P`` one of ``B``, ``I``, ``E``, ``S`` and a
non-empty type (the type may itself hold hyphens: ``B-creative-work`` has the type
``creative-work``). Plain tags (part of speech) carry no entities and no prefix rules.

* IOB1 (the original CoNLL-2003 files): ``I-X`` everywhere; ``B-X`` only for an entity that
  directly follows another entity of the same type.
* IOB2: every entity starts with ``B-X`` and goes on with ``I-X``.
* IOBES: ``S-X`` a one-word entity; ``B-X`` ``I-X``... ``E-X`` a longer one.

Entity spans follow conlleval, whatever the scheme: an entity starts at ``B-X``, at ``S-X``, at
an ``I-X``/``E-X`` after ``O``, after ``E-``/``S-`` or after a tag of another type, and at the
first word; it ends before the next start, before ``O``, and after ``E-X``/``S-X``. So an ``I-X``
after ``O`` starts an entity in IOB2 input too (it is a scheme error that ``validate`` reports,
not a lost entity). Spans are ``(type, start_word, end_word_exclusive)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

IOB1 = "iob1"
IOB2 = "iob2"
IOBES = "iobes"
PLAIN = "plain"
SCHEMES = (IOB1, IOB2, IOBES, PLAIN)
ENTITY_SCHEMES = (IOB1, IOB2, IOBES)

Span = tuple[str, int, int]
_PREFIXES = ("B", "I", "E", "S")


def parse_tag(tag: str) -> tuple[str, str] | None:
    """``(prefix, type)`` of an entity tag, ``("O", "")`` for ``O``, None for anything else
    (a plain tag such as ``NNP``, an unknown prefix such as ``X-PER``, a missing type ``B-``)."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in _PREFIXES:
        return tag[0], tag[2:]
    return None


def _split(tag: str, index: int) -> tuple[str, str]:
    parsed = parse_tag(tag)
    if parsed is None:
        raise ValueError(f"tag {tag!r} (word {index}) is not O or B-/I-/E-/S- followed by a type")
    return parsed


def _starts(prev_prefix: str, prev_type: str, prefix: str, type_: str) -> bool:
    """Whether the current tag starts an entity (conlleval's startOfChunk)."""
    if prefix in ("B", "S"):
        return True
    if prefix == "O":
        return False
    return prev_prefix in ("O", "E", "S") or prev_type != type_


def spans(tags: Sequence[str]) -> list[Span]:
    """The entities of one sentence's tags as ``(type, start, end_exclusive)``, in order, by
    conlleval's rules (module docstring). Raises ValueError for a tag that is not an entity tag."""
    out: list[Span] = []
    start, cur_type, prev_prefix = -1, "", "O"
    for i, tag in enumerate(tags):
        prefix, type_ = _split(tag, i)
        if start >= 0 and (prefix == "O" or prev_prefix in ("E", "S")
                           or _starts(prev_prefix, cur_type, prefix, type_)):
            out.append((cur_type, start, i))
            start = -1
        if prefix != "O" and start < 0:
            start, cur_type = i, type_
        prev_prefix = prefix
    if start >= 0:
        out.append((cur_type, start, len(tags)))
    return out


def _span_tags(type_: str, length: int, scheme: str, after_same_type: bool) -> list[str]:
    if scheme == IOBES:
        if length == 1:
            return [f"S-{type_}"]
        return [f"B-{type_}"] + [f"I-{type_}"] * (length - 2) + [f"E-{type_}"]
    first = "B" if scheme == IOB2 or after_same_type else "I"
    return [f"{first}-{type_}"] + [f"I-{type_}"] * (length - 1)


def tags_from_spans(entity_spans: Iterable[Span], length: int, scheme: str) -> list[str]:
    """The tags of ``length`` words holding ``entity_spans`` (sorted, not overlapping) in an
    entity scheme. In IOB1, ``B-X`` marks only an entity that directly follows an ``X`` entity."""
    if scheme not in ENTITY_SCHEMES:
        raise ValueError(f"scheme {scheme!r} has no entities (one of {', '.join(ENTITY_SCHEMES)})")
    tags = ["O"] * length
    prev_end, prev_type = -1, ""
    for type_, start, end in entity_spans:
        if not 0 <= start < end <= length or start < prev_end:
            raise ValueError(f"span {(type_, start, end)} is empty, out of range or overlaps")
        tags[start:end] = _span_tags(type_, end - start, scheme, start == prev_end and type_ == prev_type)
        prev_end, prev_type = end, type_
    return tags


def convert(tags: Sequence[str], target: str) -> list[str]:
    """The same entities (``spans(tags)``, read by conlleval's rules from any entity scheme)
    written in the ``target`` scheme. Spans are preserved by construction."""
    return tags_from_spans(spans(tags), len(tags), target)


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 -> IOB2: every ``I-X`` that starts an entity becomes ``B-X``."""
    return convert(tags, IOB2)


def iob2_to_iobes(tags: Sequence[str]) -> list[str]:
    """IOB2 -> IOBES: one-word entities become ``S-X``, the last word of longer ones ``E-X``."""
    return convert(tags, IOBES)


def iobes_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOBES -> IOB2: ``S-X`` becomes ``B-X``, ``E-X`` becomes ``I-X``."""
    return convert(tags, IOB2)


@dataclass(frozen=True)
class SchemeIssue:
    """One scheme error: the word index, its tag, and what is wrong."""

    index: int
    tag: str
    message: str

    def __str__(self) -> str:
        return f"word {self.index} tag {self.tag!r}: {self.message}"


def _bio_issue(scheme: str, prev: tuple[str, str], cur: tuple[str, str]) -> str | None:
    (pp, pt), (p, t) = prev, cur
    if p in ("E", "S"):
        return f"prefix {p}- is not part of {scheme.upper()}"
    continues = pp in ("B", "I") and pt == t
    if scheme == IOB2 and p == "I" and not continues:
        return f"I-{t} starts an entity (after {'O' if pp == 'O' else pp + '-' + pt}); IOB2 needs B-{t}"
    if scheme == IOB1 and p == "B" and not continues:
        return f"B-{t} does not follow an entity of type {t}; IOB1 starts entities with I-{t}"
    return None


def _iobes_issue(prev: tuple[str, str], cur: tuple[str, str]) -> str | None:
    (pp, pt), (p, t) = prev, cur
    open_ = pp in ("B", "I")
    if open_ and not (p in ("I", "E") and t == pt):
        return f"{pp}-{pt} is not followed by I-{pt} or E-{pt}"
    if not open_ and p in ("I", "E"):
        return f"{p}-{t} does not continue a B-{t} or I-{t}"
    return None


def validate(tags: Sequence[str], scheme: str) -> list[SchemeIssue]:
    """Every scheme error of one sentence: unknown tags (not ``O`` nor ``P-TYPE``), prefixes
    the scheme does not use, ``I-X`` starting an entity in IOB2, ``B-X`` not after an ``X``
    entity in IOB1, broken ``B``/``I``/``E`` runs in IOBES (reported at the word that breaks
    them, or at the last word for a run left open). Plain tags have no errors."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    if scheme == PLAIN:
        return []
    issues: list[SchemeIssue] = []
    prev = ("O", "")
    for i, tag in enumerate(tags):
        cur = parse_tag(tag)
        if cur is None:
            issues.append(SchemeIssue(i, tag, "not O nor a B-/I-/E-/S- prefix followed by a type"))
            prev = ("O", "")
            continue
        message = _iobes_issue(prev, cur) if scheme == IOBES else _bio_issue(scheme, prev, cur)
        if message:
            issues.append(SchemeIssue(i, tag, message))
        prev = cur
    if scheme == IOBES and tags and prev[0] in ("B", "I"):
        issues.append(SchemeIssue(len(tags) - 1, tags[-1], f"the sentence ends inside a {prev[1]} entity"))
    return issues


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """The scheme of a file's tag sequences.

    ``plain`` when any tag is not an entity tag; ``iobes`` when any ``E-``/``S-`` prefix occurs;
    otherwise IOB1 or IOB2 by which start is more common: an entity starting with ``I-X``
    (possible only in IOB1) or with ``B-X`` at an entity start that does not follow an ``X``
    entity (possible only in IOB2). The original CoNLL-2003 files hold two ``B-MISC`` after
    ``O`` among thousands of ``I-`` starts and are IOB1. Ties (no entity at all) give ``iob2``.
    """
    i_starts = b_starts = 0
    iobes = False
    for tags in sequences:
        prev = ("O", "")
        for tag in tags:
            cur = parse_tag(tag)
            if cur is None:
                return PLAIN
            iobes = iobes or cur[0] in ("E", "S")
            if cur[0] in ("B", "I") and not (prev[0] in ("B", "I") and prev[1] == cur[1]):
                i_starts += cur[0] == "I"
                b_starts += cur[0] == "B"
            prev = cur
    if iobes:
        return IOBES
    return IOB1 if i_starts > b_starts else IOB2
