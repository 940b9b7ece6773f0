"""Last-layer [CLS] pruning (model/cls_only.py): for heads that read only [CLS], the pruned last
layer gives the full layer's [CLS] output and gradients up to rounding, draws the same dropout
random numbers, is used only for such heads, and leaves encoders it cannot reproduce alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mtdnn.cli import main
from mtdnn.data.batching import collate
from mtdnn.data.pipeline import load_task_data
from mtdnn.model import cls_only
from mtdnn.model.multitask import MultiTaskModel, load_encoder, load_tokenizer
from mtdnn.tasks.registry import TaskRegistry
from toy_tasks import train_argv, write_toy_data


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (5, 11), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[3, 2:] = 0  # [CLS] and one token
    return ids, mask


@pytest.mark.parametrize("train", [False, True])
def test_pruned_last_layer_reproduces_cls_output_gradients_and_random_stream(tiny_encoder, train):
    enc = load_encoder(tiny_encoder)  # BERT's default dropout 0.1: train mode draws masks
    fwd = cls_only.install(enc)
    assert fwd is not None
    enc.train(train)
    ids, mask = _batch()
    results = []
    for on in (False, True):
        torch.manual_seed(7)
        with cls_only.cls_only(fwd, on):
            hidden = enc(input_ids=ids, attention_mask=mask).last_hidden_state
        assert hidden.shape[1] == (1 if on else ids.shape[1])
        enc.zero_grad(set_to_none=True)
        (hidden[:, 0] * torch.linspace(-1, 1, hidden.shape[-1])).sum().backward()
        grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
        results.append((hidden[:, 0].detach(), grads, torch.rand(4)))  # the next random numbers
    (full, g_full, next_full), (pruned, g_pruned, next_pruned) = results
    torch.testing.assert_close(pruned, full, rtol=1e-5, atol=1e-6)
    assert g_full.keys() == g_pruned.keys()
    for name in g_full:
        torch.testing.assert_close(g_pruned[name], g_full[name], rtol=1e-4, atol=1e-6, msg=name)
    assert torch.equal(next_full, next_pruned), "the pruned layer must draw the same random numbers"
    assert not fwd.on  # switched off again after the block


def test_only_heads_that_read_cls_get_the_pruned_layer(tiny_encoder, data_dir, tmp_path):
    tasks = TaskRegistry().resolve(["mrpc", "stsb"], pair_head="san")  # SAN head (all tokens), linear regression head
    tok = load_tokenizer(tiny_encoder)
    data = load_task_data(tasks, tok, data_dir=data_dir, max_len=48, cache_dir=tmp_path, max_train_examples=6,
                          max_eval_examples=6, with_tests=False)
    model = MultiTaskModel(load_encoder(tiny_encoder), tasks)
    seen: list[int] = []
    model.encoder.register_forward_hook(lambda m, a, out: seen.append(out.last_hidden_state.shape[1]))
    batches = {t.name: collate(data[t.name].train, np.arange(6), tok.pad_token_id) for t in tasks}
    model.eval()
    with torch.no_grad():
        before = {name: model(name, b) for name, b in batches.items()}
        assert model.enable_cls_only()  # (its own check runs the encoder a few times)
        del seen[2:]
        after = {name: model(name, b) for name, b in batches.items()}
    width = {name: b["input_ids"].shape[1] for name, b in batches.items()}
    assert seen == [width["mrpc"], width["stsb"], width["mrpc"], 1]  # only stsb's linear head is pruned
    for name in batches:
        torch.testing.assert_close(after[name], before[name], rtol=1e-5, atol=1e-6)


def test_encoder_it_cannot_reproduce_is_left_alone(tiny_encoder):
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig(vocab_size=200, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    assert cls_only.install(DistilBertModel(cfg)) is None  # other layer structure
    enc = load_encoder(tiny_encoder)
    original = type(enc.encoder.layer[-1].output).forward
    try:  # a BERT-shaped layer that computes something else (no residual in the last block)
        type(enc.encoder.layer[-1].output).forward = lambda self, h, x: self.LayerNorm(self.dense(h))
        assert cls_only.install(enc) is None
        assert "forward" not in vars(enc.encoder.layer[-1])
    finally:
        type(enc.encoder.layer[-1].output).forward = original


def test_training_run_is_the_same_with_and_without_pruning(tmp_path, tiny_encoder, cache_dir):
    """A whole run (SAN pair task + linear regression task, dropout on) gives the same weights,
    dev metrics and losses with the pruned last layer as without it."""
    task_file, data_dir = write_toy_data(tmp_path)
    runs = {}
    for flag in ([], ["--no-cls-only-last-layer"]):
        out = tmp_path / ("plain" if flag else "pruned")
        assert main(train_argv(task_file, data_dir, tiny_encoder, cache_dir, out, *flag)) == 0
        runs[bool(flag)] = out
    a, b = runs[False], runs[True]
    final = sorted(p.name for p in (a / "checkpoints").glob("epoch-*.safetensors"))[-1]
    wa, wb = load_file(str(a / "checkpoints" / final)), load_file(str(b / "checkpoints" / final))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    assert ma and ma.keys() == mb.keys()
    for task in ma:
        assert ma[task] and ma[task].keys() == mb[task].keys()
        for split in ma[task]:
            for metric, value in ma[task][split].items():
                # percent; 8 dev rows: float rounding moves Pearson in the 3rd decimal
                assert mb[task][split][metric] == pytest.approx(value, abs=0.01), (task, split, metric)
