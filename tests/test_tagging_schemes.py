"""Tag schemes: conlleval's entity spans (hand-computed and against seqeval on random
sequences), conversions between IOB1, IOB2 and IOBES, validation and scheme detection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtdnn.tagging.schemes import (IOB1, IOB2, IOBES, PLAIN, SchemeIssue, convert, detect_scheme,
                                   iob1_to_iob2, iob2_to_iobes, iobes_to_iob2, parse_tag, spans,
                                   tags_from_spans, validate)


@pytest.mark.parametrize("tags, expected", [
    ([], []),
    (["O", "O"], []),
    # IOB1: I- starts an entity; B- only between two adjacent entities of one type
    (["I-PER", "I-PER", "O", "I-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    (["I-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
    (["I-PER", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),
    # IOB2 input with an I- after O or after another type: a new entity, as conlleval counts it
    (["O", "I-MISC", "I-MISC"], [("MISC", 1, 3)]),
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
    (["B-PER", "B-PER", "I-PER", "O"], [("PER", 0, 1), ("PER", 1, 3)]),
    # IOBES
    (["S-PER", "S-PER", "B-LOC", "E-LOC", "E-LOC"],
     [("PER", 0, 1), ("PER", 1, 2), ("LOC", 2, 4), ("LOC", 4, 5)]),
    (["B-ORG", "I-ORG", "E-ORG", "I-ORG"], [("ORG", 0, 3), ("ORG", 3, 4)]),
    # a type holding hyphens (WNUT-17)
    (["B-creative-work", "I-creative-work", "B-person"], [("creative-work", 0, 2), ("person", 2, 3)]),
])
def test_spans_hand_computed(tags, expected):
    assert spans(tags) == expected


@pytest.mark.parametrize("bad", ["X-PER", "B-", "PER", "b-PER", "I_PER", ""])
def test_spans_rejects_non_entity_tags(bad):
    with pytest.raises(ValueError, match="word 1"):
        spans(["O", bad])


def test_parse_tag():
    assert parse_tag("O") == ("O", "")
    assert parse_tag("B-creative-work") == ("B", "creative-work")
    assert parse_tag("NNP") is None and parse_tag("B-") is None and parse_tag("-X-") is None


TAGS = st.lists(st.sampled_from(["O", "B-A", "I-A", "B-B", "I-B", "E-A", "S-A", "E-B", "S-B"]),
                max_size=12)


@settings(max_examples=400, deadline=None)
@given(TAGS)
def test_spans_equal_seqeval_default_mode(tags):
    from seqeval.metrics.sequence_labeling import get_entities

    expected = [(t, s, e + 1) for t, s, e in get_entities(list(tags))]
    assert spans(tags) == expected


@settings(max_examples=300, deadline=None)
@given(TAGS)
def test_conversions_preserve_spans(tags):
    for scheme in (IOB1, IOB2, IOBES):
        out = convert(tags, scheme)
        assert spans(out) == spans(tags)
        assert validate(out, scheme) == []


def test_iob1_to_iob2_hand_computed():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "B-MISC", "O"]
    assert iob1_to_iob2(iob1) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "B-MISC", "O"]


def test_iob2_iobes_round_trip_hand_computed():
    iob2 = ["B-PER", "I-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG"]
    iobes = ["B-PER", "I-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG", "E-ORG"]
    assert iob2_to_iobes(iob2) == iobes
    assert iobes_to_iob2(iobes) == iob2


def test_tags_from_spans_iob1_uses_b_only_after_same_type():
    out = tags_from_spans([("PER", 0, 2), ("PER", 2, 3), ("LOC", 3, 4)], 5, IOB1)
    assert out == ["I-PER", "I-PER", "B-PER", "I-LOC", "O"]


def test_tags_from_spans_rejects_bad_spans():
    with pytest.raises(ValueError):
        tags_from_spans([("PER", 0, 2), ("LOC", 1, 3)], 4, IOB2)  # overlap
    with pytest.raises(ValueError):
        tags_from_spans([("PER", 2, 5)], 4, IOB2)
    with pytest.raises(ValueError, match="no entities"):
        convert(["O"], PLAIN)


def _where(issues: list[SchemeIssue]) -> list[int]:
    return [i.index for i in issues]


def test_validate_iob2():
    assert validate(["B-PER", "I-PER", "O", "B-LOC"], IOB2) == []
    issues = validate(["O", "I-PER", "B-PER", "I-LOC", "S-ORG"], IOB2)
    assert _where(issues) == [1, 3, 4]
    assert "IOB2 needs B-PER" in issues[0].message and "after O" in issues[0].message
    assert "after B-PER" in issues[1].message
    assert "S-" in issues[2].message
    assert str(issues[0]).startswith("word 1 tag 'I-PER'")
    assert _where(validate(["I-PER"], IOB2)) == [0]


def test_validate_iob1():
    assert validate(["I-PER", "B-PER", "O", "I-LOC", "I-ORG"], IOB1) == []
    assert _where(validate(["O", "B-MISC", "I-PER", "B-LOC"], IOB1)) == [1, 3]


def test_validate_iobes():
    assert validate(["B-PER", "I-PER", "E-PER", "S-LOC", "O"], IOBES) == []
    assert _where(validate(["B-PER", "O"], IOBES)) == [1]
    assert _where(validate(["B-PER", "E-PER", "E-PER"], IOBES)) == [2]
    assert _where(validate(["S-PER", "I-PER", "E-PER"], IOBES)) == [1]
    assert _where(validate(["O", "B-PER"], IOBES)) == [1]  # left open at the end
    assert _where(validate(["B-PER", "I-LOC", "E-LOC"], IOBES)) == [1]


def test_validate_unknown_tags_and_plain():
    issues = validate(["O", "X-PER", "PER", "B-"], IOB2)
    assert _where(issues) == [1, 2, 3]
    assert all("not O nor" in i.message for i in issues)
    assert validate(["NNP", "VBZ", "."], PLAIN) == []
    with pytest.raises(ValueError, match="unknown scheme"):
        validate(["O"], "bio")


def test_detect_scheme():
    assert detect_scheme([["I-PER", "O"], ["I-LOC", "B-LOC"]]) == IOB1
    assert detect_scheme([["B-PER", "I-PER"], ["O", "B-LOC"]]) == IOB2
    assert detect_scheme([["B-PER", "E-PER"], ["S-LOC"]]) == IOBES
    assert detect_scheme([["NNP", "VBZ"], ["O"]]) == PLAIN
    assert detect_scheme([["O", "O"]]) == IOB2
    # IOB1 with a stray B- after O (as in eng.train) stays IOB1
    assert detect_scheme([["O", "B-MISC"], ["I-PER"], ["I-LOC", "O", "I-ORG"]]) == IOB1
