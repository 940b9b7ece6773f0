"""Tiny encoders of each family a GLUE user picks, for the encoder-family matrix (docs/encoders.md).

Each family is a 2-layer, hidden-32 model with random weights built from its own config class,
saved together with a tokenizer of its own kind, trained here with the ``tokenizers`` library on a
few hundred lines of real GLUE text:

- WordPiece with ``[CLS] A [SEP] B [SEP]`` and token type ids: BERT, ELECTRA; DistilBERT without
  token type ids (like its real tokenizer);
- byte-level BPE: RoBERTa (``<s> A </s></s> B </s>``, no token type ids), ModernBERT
  (``[CLS] A [SEP] B [SEP]``, no token type ids);
- SentencePiece-style Unigram (Metaspace): ALBERT (token type ids, type_vocab_size 2), XLM-R (RoBERTa
  layout, no token type ids), DeBERTa-v3 (token type ids, but type_vocab_size 0: the model has no
  room for them).

The tokenizer is wrapped as a ``PreTrainedTokenizerFast`` with the family's special tokens and
saved with ``save_pretrained``, so ``AutoTokenizer`` loads it from the model folder as it would a
hub checkpoint's.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

TokenizerKind = Literal["wordpiece", "bpe", "unigram"]
Layout = Literal["cls_sep", "roberta"]

VOCAB = 600
MAX_POSITIONS = 128  # absolute position embeddings of the tiny models (RoBERTa layouts: + pad + 1)
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@dataclass(frozen=True)
class Family:
    """One encoder family: its config class, tokenizer kind, special tokens and their layout."""

    name: str
    config_class: str
    tokenizer: TokenizerKind
    layout: Layout
    type_ids: bool                       # the family's tokenizer returns token type ids
    specials: tuple[str, ...]            # in id order: ids 0, 1, ... (the model config's pad id follows)
    roles: dict[str, str]                # cls/sep/pad/unk/mask token of the wrapper
    lowercase: bool = False
    config: dict[str, Any] = field(default_factory=dict)   # family-specific config values

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "token_type_ids", "attention_mask"] if self.type_ids else ["input_ids", "attention_mask"]


_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_BERT_ROLES = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
_ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
_ROBERTA_ROLES = dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                      unk_token="<unk>", mask_token="<mask>")

FAMILIES: tuple[Family, ...] = (
    Family("bert", "BertConfig", "wordpiece", "cls_sep", True, _BERT_SPECIALS, _BERT_ROLES, lowercase=True,
           config=dict(max_position_embeddings=MAX_POSITIONS)),
    Family("roberta", "RobertaConfig", "bpe", "roberta", False, _ROBERTA_SPECIALS, _ROBERTA_ROLES,
           config=dict(max_position_embeddings=MAX_POSITIONS + 2, type_vocab_size=1, bos_token_id=0,
                       eos_token_id=2)),
    Family("distilbert", "DistilBertConfig", "wordpiece", "cls_sep", False, _BERT_SPECIALS, _BERT_ROLES,
           lowercase=True, config=dict(max_position_embeddings=MAX_POSITIONS, dim=32, n_layers=2, n_heads=2,
                                       hidden_dim=64)),
    Family("electra", "ElectraConfig", "wordpiece", "cls_sep", True, _BERT_SPECIALS, _BERT_ROLES, lowercase=True,
           config=dict(max_position_embeddings=MAX_POSITIONS, embedding_size=16)),
    Family("albert", "AlbertConfig", "unigram", "cls_sep", True, ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"),
           dict(pad_token="<pad>", unk_token="<unk>", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"),
           lowercase=True, config=dict(max_position_embeddings=MAX_POSITIONS, embedding_size=16,
                                       bos_token_id=2, eos_token_id=3)),
    Family("xlm-roberta", "XLMRobertaConfig", "unigram", "roberta", False, _ROBERTA_SPECIALS, _ROBERTA_ROLES,
           config=dict(max_position_embeddings=MAX_POSITIONS + 2, type_vocab_size=1, bos_token_id=0,
                       eos_token_id=2)),
    # DeBERTa-v3's settings: relative positions only (no absolute position embeddings), no token
    # type embeddings although its tokenizer returns token type ids
    Family("deberta-v3", "DebertaV2Config", "unigram", "cls_sep", True, _BERT_SPECIALS, _BERT_ROLES,
           config=dict(max_position_embeddings=MAX_POSITIONS, type_vocab_size=0, position_biased_input=False,
                       relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
                       position_buckets=32, norm_rel_ebd="layer_norm", share_att_key=True)),
    Family("modernbert", "ModernBertConfig", "bpe", "cls_sep", False, _BERT_SPECIALS, _BERT_ROLES,
           config=dict(max_position_embeddings=MAX_POSITIONS, global_attn_every_n_layers=2, local_attention=16)),
)


def family(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


def missing_reason(fam: Family) -> str | None:
    """Why the installed transformers cannot build ``fam`` (None: it can)."""
    import transformers

    if not hasattr(transformers, fam.config_class):
        return f"transformers {transformers.__version__} has no {fam.config_class}"
    return None


def glue_lines(data_dir: Path, n: int = 400) -> list[str]:
    """The first ``n`` sentences of the RTE and STS-B training files (real text for the tokenizers)."""
    lines: list[str] = []
    for rel, cols in (("glue/RTE/train.tsv", ("sentence1", "sentence2")),
                      ("glue/STS-B/train.tsv", ("sentence1", "sentence2"))):
        with open(data_dir / rel, encoding="utf-8", newline="") as f:
            for i, row in enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
                if i >= n // 4:
                    break
                lines += [row[c] for c in cols]
    return lines


def _backend(fam: Family, lines: list[str]):
    """The ``tokenizers`` tokenizer of the family's kind, trained on ``lines``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = list(fam.specials)
    unk = fam.roles["unk_token"]
    if fam.tokenizer == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=unk))
        tok.normalizer = normalizers.BertNormalizer(lowercase=fam.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False)
    elif fam.tokenizer == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if fam.lowercase else [])
        tok.normalizer = normalizers.Sequence(steps)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=specials, unk_token=unk,
                                          show_progress=False)
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = _post_processor(fam, tok)
    return tok


def _post_processor(fam: Family, tok):
    from tokenizers import processors

    cls, sep = fam.roles["cls_token"], fam.roles["sep_token"]
    ids = [(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))]
    if fam.layout == "roberta":  # <s> A </s></s> B </s>, every token type 0
        return processors.TemplateProcessing(single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} {sep} $B {sep}",
                                             special_tokens=ids)
    return processors.TemplateProcessing(single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
                                         special_tokens=ids)


def build_tokenizer(fam: Family, lines: list[str], folder: Path):
    """Train the family's tokenizer on ``lines`` and save it to ``folder``; returns the wrapper."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(tokenizer_object=_backend(fam, lines), model_input_names=fam.input_names,
                                      model_max_length=MAX_POSITIONS, **fam.roles)
    wrapped.save_pretrained(str(folder))
    return wrapped


def build_model(fam: Family, tokenizer, folder: Path, seed: int = 0, dropout_free: bool = False) -> Path:
    """Save a randomly initialised tiny model of the family, sized to ``tokenizer``, to ``folder``;
    ``dropout_free``: every dropout rate of the config set to 0."""
    import torch
    import transformers
    from transformers import AutoModel

    values: dict[str, Any] = {} if fam.config_class == "DistilBertConfig" else dict(TINY)
    values.update(fam.config, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if fam.config_class == "ModernBertConfig":
        ids = dict(cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id)
        values.update(ids, bos_token_id=ids["cls_token_id"], eos_token_id=ids["sep_token_id"])
    cfg = getattr(transformers, fam.config_class)(**values)
    if dropout_free:
        for key, value in cfg.to_dict().items():
            if "dropout" in key and isinstance(value, float):
                setattr(cfg, key, 0.0)
    torch.manual_seed(seed)
    AutoModel.from_config(cfg).save_pretrained(str(folder))
    return folder


def build_encoder(fam: Family, lines: list[str], folder: Path, seed: int = 0, dropout_free: bool = False) -> Path:
    """A tiny encoder of the family with its own tokenizer, in ``folder`` (a model folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    return build_model(fam, build_tokenizer(fam, lines, folder), folder, seed, dropout_free)


def write_ranking_task(root: Path, data_dir: Path, train_groups: int = 12, dev_groups: int = 8) -> Path:
    """A ranking task ``rank`` on real text: each question is an STS-B first sentence, its answer
    candidates the pair's own second sentence (``pos``) and the next two pairs' (``neg``). Writes
    ``root/rank_{train,dev}.tsv`` and returns the task file ``root/rank.yaml``."""
    root.mkdir(parents=True, exist_ok=True)
    for split, groups in (("train", train_groups), ("dev", dev_groups)):
        with open(data_dir / f"glue/STS-B/{split}.tsv", encoding="utf-8", newline="") as f:
            pairs = [(r["sentence1"], r["sentence2"]) for _, r in
                     zip(range(3 * groups), csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))]
        rows = [f"{pairs[3 * g][0]}\t{pairs[3 * g + k][1]}\t{'pos' if k == 0 else 'neg'}"
                for g in range(groups) for k in range(3)]
        (root / f"rank_{split}.tsv").write_text("question\tanswer\tlabel\n" + "\n".join(rows) + "\n",
                                                encoding="utf-8")
    columns = "{text_a: question, text_b: answer, label: label}"
    (root / "rank.yaml").write_text(
        "- name: rank\n  type: ranking\n  input: ranking\n  labels: [pos, neg]\n  metrics: [accuracy]\n"
        "  splits:\n"
        f"    train: {{path: {root / 'rank_train.tsv'}, role: train, columns: {columns}}}\n"
        f"    dev: {{path: {root / 'rank_dev.tsv'}, role: dev, columns: {columns}}}\n", encoding="utf-8")
    return root / "rank.yaml"
