"""Small fixtures shared by the test suite and the benchmarks: a tiny randomly initialised BERT
with the embedded MiniLM's tokenizer, and dropout-free copies of built-in tasks (runs with
different numbers of processes then compute the same function)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from transformers import AutoTokenizer, BertConfig, BertModel

from .model.multitask import default_encoder_path
from .tasks.schema import parse_task


def tiny_encoder(path: Path, seed: int = 0, dropout: float | None = None) -> Path:
    """Save a 2-layer BERT (hidden size 32) and the default tokenizer to `path`. `dropout=None`
    keeps BERT's default dropout; a number sets the hidden and attention dropout."""
    torch.manual_seed(seed)
    extra = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, **extra)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(str(path))
    AutoTokenizer.from_pretrained(default_encoder_path()).save_pretrained(str(path))
    return path


def dropout_free_tasks(path: Path, sources: tuple[str, ...] = ("rte", "stsb"), pair_head: str = "san") -> Path:
    """Write copies of built-in tasks named `<source>0`, with no head or SAN step dropout, to the
    task file `path`; pair classification tasks get the head ``pair_head`` (SAN by default, so that
    the runs of these copies cover the SAN head)."""
    builtin = Path(__file__).parent / "tasks" / "builtin"
    tasks = []
    for src in sources:
        t = yaml.safe_load((builtin / f"{src}.yaml").read_text())
        t["name"], t["dropout"] = f"{src}0", 0.0
        if "head" not in t and parse_task(t, src).kind.takes_pair_head(t.get("input", "pair")):
            t["head"] = {"kind": pair_head}
        if t.get("head", {}).get("kind") == "san":
            t["head"]["step_dropout"] = 0.0
        tasks.append(t)
    path.write_text(yaml.safe_dump(tasks, sort_keys=False))
    return path
