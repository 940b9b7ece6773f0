"""What goes into an encoder (model/encoders.py): the attention implementation, token type
ids only where the model has room for them, a tokenizer/model mismatch as a one-line error found at
setup time, and the position limit of each kind of position embedding. Two failures this
guards against: a DeBERTa-v3 encoder could not be loaded (SDPA asked for), and a RoBERTa model given a
tokenizer that emits token type ids died with an IndexError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtdnn.cli import main
from mtdnn.errors import ConfigError
from mtdnn.model.encoders import check_token_fit, position_limit, token_type_slots
from mtdnn.model.multitask import MultiTaskModel, default_encoder_path, encoder_from_config, load_encoder
from mtdnn.records import TokenizedSplit
from mtdnn.tasks.registry import builtin_tasks
from checks import one_error_line

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _save(model_cls, config, folder: Path, tokenizer: str | None = None) -> Path:
    """Save a random tiny model (and, if given, a copy of a tokenizer) to ``folder``."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    model_cls(config).save_pretrained(str(folder))
    if tokenizer:
        AutoTokenizer.from_pretrained(tokenizer).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def roberta_with_bert_tokenizer(tmp_path_factory) -> Path:
    """RoBERTa (one token type, positions after the padding index) with the MiniLM WordPiece tokenizer,
    which returns token type ids 0/1 for pairs; same vocabulary size, so only the type ids mismatch."""
    from transformers import RobertaConfig, RobertaModel

    cfg = RobertaConfig(vocab_size=30522, type_vocab_size=1, max_position_embeddings=130, pad_token_id=0, **TINY)
    return _save(RobertaModel, cfg, tmp_path_factory.mktemp("roberta-bert-tok"), default_encoder_path())


def _argv(encoder: Path, data_dir, out: Path, cache: str, *extra: str) -> list[str]:
    return ["train", "--tasks", "rte,stsb", "--encoder", str(encoder), "--data-dir", str(Path(data_dir).resolve()),
            "--output-dir", str(out), "--epochs", "1", "--batch-size", "8", "--max-train-examples", "16",
            "--max-eval-examples", "8", "--max-seq-len", "64", "--threads", "1", "--no-progress", "--no-hub",
            "--no-predict-test", "--cache-dir", cache, *extra]


def test_deberta_v3_loads_with_eager_attention(tmp_path, caplog):
    from transformers import DebertaV2Config, DebertaV2Model

    cfg = DebertaV2Config(vocab_size=100, type_vocab_size=0, position_biased_input=False, relative_attention=True,
                          pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_buckets=16, **TINY)
    folder = _save(DebertaV2Model, cfg, tmp_path / "deberta")
    with caplog.at_level("INFO"):
        enc = load_encoder(str(folder))
    assert enc.config._attn_implementation == "eager"
    assert "eager attention (DebertaV2Model has no SDPA attention)" in caplog.text
    assert encoder_from_config(folder).config._attn_implementation == "eager"  # reloading a run
    assert position_limit(enc) is None  # relative positions only: no fixed limit
    assert token_type_slots(enc) == 0


def test_bert_keeps_sdpa(tiny_encoder):
    assert load_encoder(tiny_encoder).config._attn_implementation == "sdpa"
    assert encoder_from_config(tiny_encoder).config._attn_implementation == "sdpa"


def test_roberta_with_a_tokenizer_emitting_token_types_trains(roberta_with_bert_tokenizer, data_dir, cache_dir,
                                                             tmp_path, caplog):
    enc = load_encoder(str(roberta_with_bert_tokenizer))
    model = MultiTaskModel(enc, [builtin_tasks()["rte"]]).eval()
    assert model.token_types is False
    ids = torch.tensor([[0, 5, 6, 2, 7, 8, 2]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "token_type_ids": torch.tensor([[0, 0, 0, 0, 1, 1, 1]])}
    with torch.no_grad():  # the type ids are not passed: the output is that of the model without them
        want = enc(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        assert torch.equal(model.encode(batch), want)
    with caplog.at_level("INFO"):
        assert main(_argv(roberta_with_bert_tokenizer, data_dir, tmp_path / "run", cache_dir)) == 0
    assert "RobertaModel takes no token type ids (type_vocab_size 1): the tokenizer's are not passed" in caplog.text
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_roberta_position_limit_is_the_table_less_its_offset(roberta_with_bert_tokenizer, data_dir, cache_dir,
                                                             tmp_path, capsys):
    """130 position embeddings, positions counted from the padding index (0 here) + 1, hold 129
    tokens: 130 is refused at setup (before, it passed the check and the first input of 130 tokens
    died with an IndexError)."""
    assert position_limit(load_encoder(str(roberta_with_bert_tokenizer))) == 129
    argv = _argv(roberta_with_bert_tokenizer, data_dir, tmp_path / "run", cache_dir)
    argv[argv.index("--max-seq-len") + 1] = "130"
    assert main(argv) == 2
    assert "field 'max_seq_len': 130 is above the encoder's limit of 129 positions" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_position_limits(tiny_encoder):
    from transformers import (DistilBertConfig, DistilBertModel, ModernBertConfig, ModernBertModel, RobertaConfig,
                              RobertaModel)

    assert position_limit(load_encoder(tiny_encoder)) == 512  # BERT: the whole table
    roberta = RobertaModel(RobertaConfig(vocab_size=50, max_position_embeddings=514, pad_token_id=1, **TINY))
    assert position_limit(roberta) == 512  # roberta-base's 514 rows: positions 2..513
    distil = DistilBertModel(DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                                              max_position_embeddings=96))
    assert position_limit(distil) == 96
    modern = ModernBertModel(ModernBertConfig(vocab_size=50, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                              cls_token_id=1, sep_token_id=2, max_position_embeddings=80, **TINY))
    assert position_limit(modern) == 80  # rotary: the config's trained length


def test_tokenizer_beyond_the_vocabulary_is_a_one_line_error(tmp_path, data_dir, cache_dir, capsys):
    """A 600-token model given a 30522-token tokenizer: found on the tokenised data at setup time,
    naming both, and nothing is written."""
    from transformers import BertConfig, BertModel

    folder = _save(BertModel, BertConfig(vocab_size=600, **TINY), tmp_path / "small-vocab", default_encoder_path())
    assert main(_argv(folder, data_dir, tmp_path / "run", cache_dir)) == 2
    line = one_error_line(capsys)
    assert "field 'encoder'" in line and f"the tokenizer '{folder}'" in line and f"the encoder '{folder}'" in line
    assert "(BertModel) has 600 token embeddings" in line and "does not belong to this encoder" in line
    assert not (tmp_path / "run").exists()


def _split(ids: list[int], type_ids: list[int] | None) -> TokenizedSplit:
    n = len(ids)
    return TokenizedSplit("t", "dev", np.asarray(ids, np.int32), None if type_ids is None else
                          np.asarray(type_ids, np.int8), np.full(n, 2, np.int8), np.asarray([0, n], np.int64),
                          np.zeros(1, np.int64), np.zeros(1, np.int64), ["0"])


def test_type_ids_beyond_the_models_token_types():
    from transformers import BertConfig, BertModel

    two = BertModel(BertConfig(vocab_size=50, type_vocab_size=2, **TINY))
    check_token_fit(two, {"t/dev": _split([1, 49], [0, 1])}, "tok", "enc")  # ids 0..49, types 0..1 fit
    with pytest.raises(ConfigError, match=r"token type id 2 \(t/dev\) but the encoder 'enc' \(BertModel\) has 2 "
                                          r"token types"):
        check_token_fit(two, {"t/dev": _split([1, 2, 3], [0, 1, 2])}, "tok", "enc")
    with pytest.raises(ConfigError, match=r"the tokenizer 'tok' gives token id 50 \(t/other\)"):
        check_token_fit(two, {"t/dev": _split([1, 2], None), "t/other": _split([50], None)}, "tok", "enc")
    three = BertModel(BertConfig(vocab_size=50, type_vocab_size=3, **TINY))
    check_token_fit(three, {"t/dev": _split([1, 2, 3], [0, 1, 2])}, "tok", "enc")
    # a model without room for type ids: the tokenizer's are dropped, not an error
    one = BertModel(BertConfig(vocab_size=50, type_vocab_size=1, **TINY))
    check_token_fit(one, {"t/dev": _split([1, 2, 3], [0, 1, 2])}, "tok", "enc")
