"""What mtdnn needs to know about an encoder family beyond "a Hugging Face encoder".

- ``attention_implementation``: the fastest attention the model class implements, SDPA where it
  has it, else eager (DeBERTa-v2/v3 has no SDPA path; asking for it makes loading fail).
- ``token_type_slots`` / ``passes_token_types``: whether the model takes token type ids and how
  many it has room for. BERT, ELECTRA and ALBERT have 2; RoBERTa and XLM-R one (the ids would
  only ever be 0), DeBERTa-v3 none (``type_vocab_size`` 0), DistilBERT and ModernBERT take none at
  all. Type ids are passed only to a model with room for a second segment; otherwise the
  tokenizer's ids are dropped (said once in the log), as the family's own tokenizer would not emit them.
- ``position_limit``: the longest input the model's position embeddings cover: the table's size,
  less RoBERTa's offset (its positions start after the padding index: 514 rows hold 512 tokens);
  no limit for relative positions only (DeBERTa-v3); else the config's ``max_position_embeddings``.
- ``check_token_fit``: a tokenizer/model mismatch (token ids beyond the vocabulary, type ids beyond
  ``type_vocab_size``) found on the tokenised data at setup time, as a one-line ``ConfigError``
  naming both, instead of an ``IndexError`` from the embedding layer in the first step.
"""

from __future__ import annotations

import inspect
import logging
from typing import Iterable

import numpy as np
from torch import nn
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from ..errors import ConfigError
from ..records import TokenizedSplit

log = logging.getLogger(__name__)

SDPA, EAGER = "sdpa", "eager"


def model_class(config) -> type | None:
    """The ``AutoModel`` class of ``config`` (None where transformers does not map it)."""
    try:
        return MODEL_MAPPING[type(config)]
    except (KeyError, ValueError):
        return None


def attention_implementation(config) -> str | None:
    """SDPA where the model class implements it, else eager; None (transformers' own choice, also
    SDPA where available) for a class transformers does not map or that decides per instance."""
    supports = getattr(model_class(config), "_supports_sdpa", None)
    if not isinstance(supports, bool):
        return None
    return SDPA if supports else EAGER


def describe_attention(encoder: nn.Module, name: str) -> str:
    """The log line saying which attention the loaded encoder runs, and why not SDPA."""
    used = getattr(encoder.config, "_attn_implementation", None) or "default"
    reason = "" if used == SDPA else f" ({type(encoder).__name__} has no SDPA attention)"
    return f"encoder {name} ({type(encoder).__name__}): {used} attention{reason}"


def _forward_takes(encoder: nn.Module, arg: str) -> bool:
    try:
        return arg in inspect.signature(encoder.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - a forward without a signature
        return False


def token_type_slots(encoder: nn.Module) -> int:
    """How many token types the encoder has embeddings for (0: it takes no token type ids)."""
    if not _forward_takes(encoder, "token_type_ids"):
        return 0
    return int(getattr(encoder.config, "type_vocab_size", 0) or 0)


def passes_token_types(encoder: nn.Module) -> bool:
    """Whether token type ids go to the encoder: only where it has room for a second segment."""
    return token_type_slots(encoder) >= 2


def position_limit(encoder: nn.Module) -> int | None:
    """The longest input (in tokens) the encoder's positions cover; None: no fixed limit."""
    table = getattr(getattr(encoder, "embeddings", None), "position_embeddings", None)
    if isinstance(table, nn.Embedding):
        pad = table.padding_idx
        return table.num_embeddings - (pad + 1 if pad is not None else 0)
    config = encoder.config
    if getattr(config, "relative_attention", False) and not getattr(config, "position_biased_input", True):
        return None
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if limit is not None else None


def vocab_rows(encoder: nn.Module) -> int:
    return int(encoder.get_input_embeddings().num_embeddings)


def _largest(splits: Iterable[tuple[str, TokenizedSplit]], field: str) -> tuple[int, str] | None:
    """The largest value of ``field`` over the splits, with the ``task/split`` holding it."""
    best: tuple[int, str] | None = None
    for where, split in splits:
        values = getattr(split, field)
        if values is not None and len(values):
            top = int(np.max(values))
            if best is None or top > best[0]:
                best = (top, where)
    return best


def check_token_fit(encoder: nn.Module, splits: dict[str, TokenizedSplit], tokenizer_name: str,
                    encoder_name: str, token_types: bool | None = None, announce: bool = True) -> None:
    """Raise a one-line ``ConfigError`` naming the tokenizer and the encoder where the tokenised
    ``splits`` (``"task/split"`` -> split) hold ids the encoder has no embedding for; say in the
    log where the tokenizer's token type ids are not passed. ``token_types``: whether the model
    passes them (``MultiTaskModel.token_types``; default: decided from ``encoder``, which must
    then be the plain Hugging Face encoder, not a wrapper). ``announce``: the dropped type ids are
    said at INFO level (setting up a run), else at DEBUG (every prediction of a loaded run)."""
    items = list(splits.items())
    cls = type(encoder).__name__
    top = _largest(items, "ids")
    rows = vocab_rows(encoder)
    if top is not None and top[0] >= rows:
        raise ConfigError(f"the tokenizer '{tokenizer_name}' gives token id {top[0]} ({top[1]}) but the encoder "
                          f"'{encoder_name}' ({cls}) has {rows} token embeddings: the tokenizer does not belong "
                          "to this encoder", field="encoder")
    types = _largest(items, "type_ids")
    if types is None:
        return
    if not (passes_token_types(encoder) if token_types is None else token_types):
        if types[0] > 0:
            log.log(logging.INFO if announce else logging.DEBUG, "%s takes no token type ids (type_vocab_size "
                    "%s): the tokenizer's are not passed", cls, getattr(encoder.config, "type_vocab_size", "none"))
        return
    slots = int(getattr(encoder.config, "type_vocab_size", 0) or 0)
    if types[0] >= slots:
        raise ConfigError(f"the tokenizer '{tokenizer_name}' gives token type id {types[0]} ({types[1]}) but the "
                          f"encoder '{encoder_name}' ({cls}) has {slots} token types: the tokenizer does not "
                          "belong to this encoder", field="encoder")


def named_splits(data: dict) -> dict[str, TokenizedSplit]:
    """``"task/split"`` -> tokenised split, over a ``load_task_data`` result."""
    out: dict[str, TokenizedSplit] = {}
    for name, td in data.items():
        if td.train is not None:
            out[f"{name}/train"] = td.train
        out.update({f"{name}/{s}": split for s, split in {**td.evals, **td.tests}.items()})
    return out
