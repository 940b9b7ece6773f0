"""Raw-text words with character offsets and entities from per-word tags, on hand-computed
offsets (Unicode: accents, combining marks, CJK, emoji, zero-width space; repeated words), and the
words against those of a WordPiece tokenizer (BERT's pre-tokenizer)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mtdnn.tagging.entities import Word, split_words, tags_and_scores, tags_to_entities


def test_split_words_hand_computed():
    text = "Ça va? 東京 e\u0301te\u0301 O'Neill's co-op 🙂 x\u200by"
    assert split_words(text) == [
        Word("Ça", 0, 2), Word("va", 3, 5), Word("?", 5, 6), Word("東", 7, 8), Word("京", 8, 9),
        Word("e\u0301te\u0301", 10, 15), Word("O", 16, 17), Word("'", 17, 18), Word("Neill", 18, 23),
        Word("'", 23, 24), Word("s", 24, 25), Word("co", 26, 28), Word("-", 28, 29), Word("op", 29, 31),
        Word("🙂", 32, 33), Word("x\u200by", 34, 37)]


@pytest.mark.parametrize("text, words", [
    ("U.S. end-", ["U", ".", "S", ".", "end", "-"]),
    ("'quoted' -- don’t", ["'", "quoted", "'", "-", "-", "don", "’", "t"]),
    ("❤\ufe0f!", ["❤\ufe0f", "!"]),
    ("\ufeff  \t\n", []),
    ("$3,000", ["$", "3", ",", "000"]),
    ("€5 a+b=c x\u00ady \u200bz\u200b", ["€5", "a", "+", "b", "=", "c", "x\u00ady", "z"]),
    ("かなカナ漢字", ["かなカナ", "漢", "字"]),
    ("a\x85b\x1cc d\u2028e", ["a\x85b\x1cc", "d", "e"]),
])
def test_split_words_rules(text, words):
    assert [w.word for w in split_words(text)] == words


@given(st.text(max_size=40))
def test_split_words_offsets_point_into_the_text(text):
    words = split_words(text)
    assert all(text[w.start:w.end] == w.word and w.word for w in words)
    assert all(a.end <= b.start for a, b in zip(words, words[1:]))


def test_entities_with_repeated_words():
    text = "Peter Blackburn visited Zürich, then Zürich again."
    words = split_words(text)
    assert [(w.word, w.start, w.end) for w in words] == [
        ("Peter", 0, 5), ("Blackburn", 6, 15), ("visited", 16, 23), ("Zürich", 24, 30), (",", 30, 31),
        ("then", 32, 36), ("Zürich", 37, 43), ("again", 44, 49), (".", 49, 50)]
    tags = ["B-PER", "I-PER", "O", "B-LOC", "O", "O", "B-LOC", "O", "O"]
    scores = [0.9, 0.7, 0.99, 0.6, 0.9, 0.9, 0.8, 0.9, 0.9]
    entities = tags_to_entities(text, words, tags, scores)
    assert entities == [
        {"type": "PER", "start": 0, "end": 15, "text": "Peter Blackburn", "score": pytest.approx(0.8)},
        {"type": "LOC", "start": 24, "end": 30, "text": "Zürich", "score": pytest.approx(0.6)},
        {"type": "LOC", "start": 37, "end": 43, "text": "Zürich", "score": pytest.approx(0.8)}]
    assert tags_to_entities(text, words, tags)[0]["score"] is None


def test_entities_keep_the_original_inner_text():
    text = "Go to  Nueva\u00a0York\u200b City now"
    words = split_words(text)
    assert [w.word for w in words] == ["Go", "to", "Nueva", "York", "City", "now"]
    tags = ["O", "O", "I-LOC", "I-LOC", "I-LOC", "O"]  # IOB1 input: I- after O starts the entity
    (entity,) = tags_to_entities(text, words, tags)
    assert (entity["start"], entity["end"]) == (7, 23)
    assert entity["text"] == "Nueva\u00a0York\u200b City" == text[7:23]


def test_entities_of_unicode_words():
    text = "東京とe\u0301te\u0301 🙂 Ærø"
    words = split_words(text)
    assert [(w.word, w.start, w.end) for w in words] == [
        ("東", 0, 1), ("京", 1, 2), ("とe\u0301te\u0301", 2, 8), ("🙂", 9, 10), ("Ærø", 11, 14)]
    entities = tags_to_entities(text, words, ["B-LOC", "E-LOC", "O", "O", "S-LOC"], [0.5, 0.75, 1.0, 1.0, 0.25])
    assert [(e["text"], e["start"], e["end"], e["score"]) for e in entities] == [
        ("東京", 0, 2, 0.625), ("Ærø", 11, 14, 0.25)]


def test_entities_errors():
    text = "a b"
    words = split_words(text)
    with pytest.raises(ValueError, match="2 words, 1 tags"):
        tags_to_entities(text, words, ["O"])
    with pytest.raises(ValueError, match="2 tags, 3 scores"):
        tags_to_entities(text, words, ["O"] * 2, [0.5] * 3)
    with pytest.raises(ValueError, match="word 1 'b' is not at 1:2"):
        tags_to_entities(text, [Word("a", 0, 1), Word("b", 1, 2)], ["O", "O"])


def test_tags_and_scores():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    tags, scores = tags_and_scores(probs, ["O", "B-PER", "I-PER"])
    assert tags == ["B-PER", "O"] and scores == pytest.approx([0.7, 0.6])
    assert tags_and_scores([[1.0]], ["O"]) == (["O"], [1.0])
    with pytest.raises(ValueError, match="for 2 labels"):
        tags_and_scores(probs, ["O", "B-PER"])


def test_words_are_those_of_a_wordpiece_tokenizer():
    """Each word of the splitter is one word of BERT's pre-tokenizer (the tokens from a token
    without ``##`` up to the next one), with the same character span, on mixed text."""
    from transformers import AutoTokenizer

    from mtdnn.model.multitask import default_encoder_path

    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    text = ("Dr. O'Neill (co-founder of U.S.-based Acme™, née Smith) paid $3,000.50 — €20 — "
            "in 東京 on 2024/05/01 ;-) x\u200by naïve \ufeffZürich!")
    enc = tok(text, add_special_tokens=False)
    spans: dict[int, list[int]] = {}
    for t, w in enumerate(enc.word_ids()):
        s, e = enc.token_to_chars(t)
        spans.setdefault(w, [s, e])[1] = e
    assert [(w.start, w.end) for w in split_words(text)] == [tuple(v) for v in spans.values()]
