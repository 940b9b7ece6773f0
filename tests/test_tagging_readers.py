"""Tagged-sentence readers: the real CoNLL-2003 and WNUT-17 files (sentence, token and entity
counts from shared/data/SOURCES.md), small column and JSONL files with their quirks, and the
DataError of each kind of bad input (file, line and field named)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mtdnn.errors import DataError
from mtdnn.tagging.readers import (TaggedSentence, check_tags, read_conll, read_tagged,
                                   read_tagged_jsonl)
from mtdnn.tagging.schemes import IOB1, IOB2, PLAIN, detect_scheme, iob1_to_iob2, spans, validate

# file -> (sentences, tokens, entities per type) from SOURCES.md
CONLL = {
    "eng.train": (14041, 203621, {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}),
    "eng.testa": (3250, 51362, {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}),
    "eng.testb": (3453, 46435, {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617}),
}
WNUT = {"wnut17train.conll": 3394, "emerging.dev.conll": 1009, "emerging.test.annotated": 1287}


def _write(tmp_path: Path, text: str, name: str = "f.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize("name", sorted(CONLL))
def test_conll2003_counts_and_iob1_to_iob2(data_dir, name):
    n_sentences, n_tokens, per_type = CONLL[name]
    ner = read_conll(data_dir / "conll2003" / name, word_column=0, tag_column=3)
    assert len(ner) == n_sentences
    assert sum(len(s) for s in ner) == n_tokens
    tags = [s.tags for s in ner]
    assert detect_scheme(tags) == IOB1
    iob1_spans = [spans(t) for t in tags]
    assert Counter(t for ss in iob1_spans for t, _, _ in ss) == per_type
    iob2 = [iob1_to_iob2(t) for t in tags]
    assert [spans(t) for t in iob2] == iob1_spans  # the conversion keeps every span
    assert all(validate(t, IOB2) == [] for t in iob2)
    assert detect_scheme(iob2) == IOB2
    # the same file gives the POS and the chunk task; the words are the same
    pos = read_conll(data_dir / "conll2003" / name, tag_column=1)
    chunk = read_conll(data_dir / "conll2003" / name, tag_column=2)
    assert [s.words for s in pos] == [s.words for s in ner] == [s.words for s in chunk]
    assert detect_scheme(s.tags for s in pos) == PLAIN
    assert detect_scheme(s.tags for s in chunk) == IOB1


def test_conll2003_lines_and_stray_b_tags(data_dir):
    """eng.train: the first sentence starts on line 3 (after -DOCSTART- and a blank line);
    SOURCES.md names the two B-MISC after O of the original file by line."""
    train = read_conll(data_dir / "conll2003" / "eng.train", tag_column=3)
    assert train[0].line == 3 and train[0].words[:3] == ["EU", "rejects", "German"]
    by_line = {s.line_of(i): (w, s.tags[i]) for s in train for i, w in enumerate(s.words)}
    assert by_line[152428] == ("Atlanta", "B-MISC")
    assert by_line[175436] == ("Urdu-speaking", "B-MISC")
    issues = [(s.line_of(i.index), i.tag) for s in train for i in validate(s.tags, IOB1)]
    assert issues == [(152428, "B-MISC"), (175436, "B-MISC")]


@pytest.mark.parametrize("name", sorted(WNUT))
def test_wnut17_counts(data_dir, name):
    sentences = read_conll(data_dir / "wnut17" / name, tag_column=1)
    assert len(sentences) == WNUT[name]
    tags = [s.tags for s in sentences]
    assert detect_scheme(tags) == IOB2
    assert all(validate(t, IOB2) == [] for t in tags)
    assert {t for ss in tags for t in ss} >= {"B-creative-work", "I-creative-work", "O"}


def test_wnut17_dev_keeps_format_characters_inside_words(data_dir):
    dev = read_conll(data_dir / "wnut17" / "emerging.dev.conll", tag_column=1, sep="\t")
    words = {w for s in dev for w in s.words}
    assert "watched\u200bwas" in words and "Dubbz\ufeff" in words


def test_conll_quirks(tmp_path):
    text = ("\ufeff-DOCSTART- -X- O O\n\n"
            "EU NNP I-NP I-ORG  \r\n"
            "rejects\tVBZ\tI-VP\tO\n"
            " \t\n\n\n"
            "-DOCSTART- -X- -X- O\n"
            "Peter NNP I-NP I-PER\n"
            "-DOCSTART- -X- -X- O\n"
            "Blackburn NNP I-NP I-PER\n\n\n")
    out = read_conll(_write(tmp_path, text), tag_column=3)
    assert [(s.words, s.tags, s.line) for s in out] == [
        (["EU", "rejects"], ["I-ORG", "O"], 3), (["Peter"], ["I-PER"], 9), (["Blackburn"], ["I-PER"], 11)]
    pos = read_conll(_write(tmp_path, text), word_column=0, tag_column=1)
    assert pos[0].tags == ["NNP", "VBZ"]
    words_only = read_conll(_write(tmp_path, text), tag_column=None)
    assert words_only[0].tags is None and words_only[0].words == ["EU", "rejects"]


def test_conll_tab_separator_keeps_spaces(tmp_path):
    out = read_conll(_write(tmp_path, "New York\tB-LOC\nis\tO\n"), tag_column=1, sep="\t")
    assert out[0].words == ["New York", "is"]


def _error(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return info.value


def test_conll_errors(tmp_path):
    err = _error(read_conll, _write(tmp_path, "EU NNP I-NP I-ORG\nrejects VBZ\n"), tag_column=3)
    assert err.line == 2 and err.field == "column 3" and "2 column(s)" in str(err)
    assert str(err).startswith(str(tmp_path / "f.txt") + ":2, field 'column 3': ")
    err = _error(read_conll, _write(tmp_path, "\n\n-DOCSTART- -X- O O\n\n"))
    assert "no sentence" in str(err) and err.line is None
    err = _error(read_conll, tmp_path / "absent.txt")
    assert "not found" in str(err)
    err = _error(read_conll, _write(tmp_path, "a\tO\n\tO\n"), tag_column=1, sep="\t")
    assert err.line == 2 and err.field == "column 0"
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 O\n".encode("latin-1"))
    err = _error(read_conll, tmp_path / "latin1.txt")
    assert err.line == 1 and "not UTF-8" in str(err)


def _jsonl(tmp_path: Path, rows: list[object]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    return _write(tmp_path, "\n".join(lines) + "\n", "f.jsonl")


def test_jsonl(tmp_path):
    path = _jsonl(tmp_path, [{"tokens": ["Zürich", "is"], "tags": ["B-LOC", "O"]}, "",
                             {"tokens": ["Hi"], "tags": ["O"], "id": 7}])
    out = read_tagged_jsonl(path)
    assert [(s.words, s.tags, s.line) for s in out] == [(["Zürich", "is"], ["B-LOC", "O"], 1),
                                                        (["Hi"], ["O"], 3)]
    assert out[0].line_of(1) == 1
    named = _jsonl(tmp_path, [{"words": ["a", "b"], "ner": ["O", "B-X"]}])
    assert read_tagged(named, "jsonl", tokens_field="words", tags_field="ner")[0].tags == ["O", "B-X"]
    assert read_tagged_jsonl(named, tokens_field="words", tags_field=None)[0].tags is None


@pytest.mark.parametrize("rows, line, field, words", [
    ([{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b"], "tags": ["O"]}], 2, "tags", "1 tags for 2 words"),
    ([{"tokens": [], "tags": []}], 1, "tokens", "empty sentence"),
    ([{"tokens": ["a"]}], 1, "tags", "missing"),
    ([{"tokens": "a b", "tags": ["O", "O"]}], 1, "tokens", "not a list of strings"),
    ([{"tokens": ["a", 1], "tags": ["O", "O"]}], 1, "tokens", "not a list of strings"),
    (["{not json"], 1, None, "not valid JSON"),
    (["[1, 2]"], 1, None, "not a JSON object"),
    (["", "  "], None, None, "no sentence"),
])
def test_jsonl_errors(tmp_path, rows, line, field, words):
    err = _error(read_tagged_jsonl, _jsonl(tmp_path, rows))
    assert (err.line, err.field) == (line, field)
    assert words in str(err) and "\n" not in str(err)


def test_read_tagged_unknown_format(tmp_path):
    assert "unknown tagged-file format" in str(_error(read_tagged, tmp_path / "x", "csv"))


def test_check_tags(tmp_path):
    conll = [TaggedSentence(["EU", "rejects"], ["I-ORG", "O"], 3),
             TaggedSentence(["Peter", "Blackburn"], ["I-PER", "I-PRS"], 6)]
    check_tags(conll[:1], ["O", "I-ORG", "I-PER"], "eng.train")
    err = _error(check_tags, conll, ["O", "I-ORG", "I-PER"], "eng.train", field="column 3")
    assert (err.path, err.line, err.field) == ("eng.train", 7, "column 3")
    assert "'I-PRS'" in str(err) and "'Blackburn'" in str(err) and "I-PER" in str(err)
    jsonl = [TaggedSentence(["a", "b"], ["O", "B-X"], 4, words_on_lines=False)]
    err = _error(check_tags, jsonl, ["O"], "f.jsonl")
    assert (err.line, err.field) == (4, "tags")
    check_tags([TaggedSentence(["a"], None, 1)], ["O"], "f")  # untagged: nothing to check
