"""A smaller encoder cut from a bigger one: keep some of its Transformer layers (for example
MiniLM-L6's layers 0, 2 and 4), drop the others, and save the result as a model folder that
``--encoder`` takes (a distillation student, ``docs/smart-and-distillation.md``)::

    mtdnn shrink-encoder --layers 0,2,4 --output encoders/minilm-l3     # from the default encoder

The embeddings and every kept layer keep their pretrained weights; the config says the new number
of layers; the tokenizer is copied. Works for encoders whose layers are one ``nn.ModuleList`` of
``config.num_hidden_layers`` entries (BERT, RoBERTa, DeBERTa, ELECTRA, MiniLM, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ..errors import ConfigError
from .multitask import load_encoder, load_tokenizer, resolve_encoder_name

log = logging.getLogger(__name__)


def layer_list(encoder: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the encoder's layers and the attribute name of their ``nn.ModuleList``."""
    count = encoder.config.num_hidden_layers
    for _, module in encoder.named_modules():
        for attr, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == count and attr in ("layer", "layers"):
                return module, attr
    raise ConfigError(f"cannot find the {count} layers of {type(encoder).__name__} to cut", field="encoder")


def parse_layers(text: str) -> list[int]:
    """``"0,2,4"`` -> ``[0, 2, 4]``."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--layers takes layer numbers like 0,2,4, not '{text}'", field="layers") from None


def shrink_encoder(source: str, layers: Sequence[int], output: str | Path) -> Path:
    """Save to ``output`` the encoder ``source`` (a name or folder; 'default': the embedded MiniLM)
    with only ``layers`` (0-based, in the order given), and its tokenizer. Returns ``output``."""
    name = resolve_encoder_name(source)
    encoder = load_encoder(name)
    count = encoder.config.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < count]
    if not layers or bad or len(set(layers)) != len(layers):
        raise ConfigError(f"layers {list(layers)}: give distinct layers between 0 and {count - 1} "
                          f"({name} has {count})", field="layers")
    parent, attr = layer_list(encoder)
    kept = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList([kept[i] for i in layers]))
    encoder.config.num_hidden_layers = len(layers)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(str(out), safe_serialization=True)
    load_tokenizer(name).save_pretrained(str(out))
    log.info("saved %s with layers %s of %d to %s", name, ",".join(map(str, layers)), count, out)
    return out
