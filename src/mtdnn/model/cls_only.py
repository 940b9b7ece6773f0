"""Last-layer pruning for heads that read only the [CLS] vector.

A linear or regression head reads position 0 of the encoder's last layer and nothing else, so in
that layer only the [CLS] query, its attention output and its feed-forward block are needed; the
keys and values still come from every position. For a BERT-style layer this skips about 5/6 of the
last layer's work (MiniLM-L6: ~14% of the encoder's FLOPs, forward and backward).

What is computed stays the same: the [CLS] output equals the full layer's up to float rounding,
and the dropout masks are drawn for the full-size tensors (then sliced), so the random stream, and
with it every later dropout mask, is the one of the unpruned run. `install` checks this on the
encoder it is given (eval and train mode, with padding) and leaves the encoder alone where the
check fails or the layer is not BERT-shaped (the pruned path is only ever a faster copy of it).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
from torch import nn

log = logging.getLogger(__name__)

_REQUIRED = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.self.dropout",
             "attention.output.dense", "attention.output.LayerNorm", "attention.output.dropout",
             "intermediate.dense", "output.dense", "output.LayerNorm", "output.dropout")


def _last_layer(encoder: nn.Module) -> nn.Module | None:
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    layer = layers[-1]
    for path in _REQUIRED:
        obj = layer
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            return None
    return layer


def _keep_mask(full_shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """The scaled keep-mask F.dropout would draw for a tensor of full_shape (same generator calls)."""
    noise = torch.empty(full_shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p)
    return noise.div_(1 - p)


def _dropout_row0(x: torch.Tensor, drop: nn.Module, full_shape: tuple[int, ...]) -> torch.Tensor:
    """``drop`` applied to the full tensor, position 0 kept: the same numbers for x (= position 0)."""
    if not drop.training or drop.p == 0:
        return x
    return x * _keep_mask(full_shape, drop.p, x)[:, :1]


def cls_only_forward(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The last layer's output at position 0 only: shape (batch, 1, hidden)."""
    att = layer.attention.self
    b, n, _ = hidden.shape
    heads, size = att.num_attention_heads, att.attention_head_size
    x0 = hidden[:, :1]
    q = att.query(x0).view(b, 1, heads, size).transpose(1, 2)
    k = att.key(hidden).view(b, n, heads, size).transpose(1, 2)
    v = att.value(hidden).view(b, n, heads, size).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-1, -2)) * getattr(att, "scaling", size ** -0.5)
    if mask is not None:
        if mask.dim() == 2:  # (batch, keys) padding mask
            mask = mask[:, None, None, :].bool()
        elif mask.shape[-2] != 1:
            mask = mask[..., :1, :]
        scores = (scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool
                  else scores + mask.to(scores.dtype))
    probs = torch.softmax(scores, dim=-1)
    if att.training and att.dropout.p > 0:  # the attention dropout of the full (b, heads, n, n) matrix
        probs = probs * _keep_mask((b, heads, n, n), att.dropout.p, probs)[:, :, :1]
    ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, 1, heads * size)
    out = layer.attention.output
    a = out.LayerNorm(_dropout_row0(out.dense(ctx), out.dropout, (b, n, out.dense.out_features)) + x0)
    ff = layer.output
    h = layer.intermediate(a)
    return ff.LayerNorm(_dropout_row0(ff.dense(h), ff.dropout, (b, n, ff.dense.out_features)) + a)


class LastLayerForward:
    """Instance-level forward of the last layer: the pruned path while the flag is on, else the
    class's own forward (so parameter names, hooks and state dicts are untouched)."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.on = False

    def __call__(self, hidden_states, attention_mask=None, *args, **kwargs):
        layer = self.layer
        # HF passes encoder_hidden_states positionally (None for an encoder); anything cross-attention
        # or cache related takes the full path
        if self.on and not getattr(layer, "gradient_checkpointing", False) and all(a is None for a in args) and \
                all(kwargs.get(k) is None for k in ("encoder_hidden_states", "encoder_attention_mask", "cache",
                                                   "past_key_values", "past_key_value")):
            return cls_only_forward(layer, hidden_states, attention_mask)
        return type(layer).forward(layer, hidden_states, attention_mask, *args, **kwargs)


def _agrees(encoder: nn.Module, fwd: LastLayerForward) -> bool:
    """Full vs pruned [CLS] output of the encoder on a small random padded batch, in eval and in
    train mode (same seed): equal up to rounding, or the pruning is not used."""
    param = next(encoder.parameters())
    vocab = getattr(encoder.config, "vocab_size", 100)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(6, min(vocab, 1000)), (3, 9), generator=gen).to(param.device)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    was_training = encoder.training
    # the check reseeds; fork_rng restores the CPU generator and, for a model on a GPU, the CUDA ones
    # (torch.manual_seed reseeds those too), so a run's random stream does not depend on the check
    cuda = list(range(torch.cuda.device_count())) if param.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        try:
            for train in (False, True):
                encoder.train(train)
                outs = []
                for on in (False, True):
                    fwd.on = on
                    torch.manual_seed(1234)
                    with torch.no_grad():
                        outs.append(encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0].float())
                fwd.on = False
                if outs[1].shape != outs[0].shape or not torch.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5):
                    return False
            return True
        except Exception as e:  # any architecture surprise: keep the plain layer
            log.debug("cls-only check failed: %s", e)
            return False
        finally:
            fwd.on = False
            encoder.train(was_training)


def install(encoder: nn.Module) -> LastLayerForward | None:
    """Give the encoder's last layer the pruned path (off until switched on by `cls_only`), if the
    layer is BERT-shaped and the pruned path reproduces it; None otherwise."""
    layer = _last_layer(encoder)
    config = getattr(encoder, "config", None)
    if layer is None or config is None or getattr(config, "is_decoder", False) or \
            getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        log.info("last-layer [CLS] pruning not used: %s's layers are not BERT-shaped (self-attention with "
                 "absolute positions)", type(encoder).__name__)
        return None
    fwd = LastLayerForward(layer)
    layer.forward = fwd
    if not _agrees(encoder, fwd):
        del layer.forward
        log.info("last-layer [CLS] pruning not used: %s's last layer is not reproduced by it", type(layer).__name__)
        return None
    return fwd


@contextmanager
def cls_only(fwd: LastLayerForward | None, on: bool):
    """Within the block, the encoder's last layer computes position 0 only (when installed and on)."""
    if fwd is None or not on:
        yield
        return
    fwd.on = True
    try:
        yield
    finally:
        fwd.on = False
