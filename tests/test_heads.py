"""Heads on a tiny encoder (shapes, gradients) and the SAN answer module against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtdnn.data.batching import collate
from mtdnn.data.readers import read_split
from mtdnn.data.tokenized import tokenize_split
from mtdnn.model import heads as heads_mod
from mtdnn.model.heads import LinearHead, SANHead, step_keep_mask
from mtdnn.model.multitask import MultiTaskModel, load_encoder, load_tokenizer
from mtdnn.records import RawSplit
from mtdnn.tasks.registry import TaskRegistry, builtin_tasks
from mtdnn.tasks.schema import parse_task


# ------------------------------------------------------------------ heads on a tiny encoder
@pytest.fixture(scope="module")
def tasks():
    b = builtin_tasks()
    pairs = {t.name: t for t in TaskRegistry().resolve(["rte", "mnli", "ax"], pair_head="san")}  # SAN heads
    return {"cola": b["cola"], "stsb": b["stsb"], "qnli_rank": b["qnli_rank"], **pairs}


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return load_tokenizer(tiny_encoder)


def _batch(task, raw, tokenizer):
    tok = tokenize_split(task, raw, tokenizer, max_len=48, cache_dir=None)
    return collate(tok, np.arange(len(tok)), tokenizer.pad_token_id)


def _rows(task, data_dir, split, n):
    raw = read_split(task, split, data_dir, allow_hub=False)
    return raw.select(list(range(n)))


def _ranking_raw():
    # two questions with 3 and 2 candidates, interleaved in the file
    return RawSplit("qnli_rank", "dev", "<test>", ids=[str(i) for i in range(5)],
                    text_a=["Who wrote it?", "Where is it?", "Who wrote it?", "Where is it?", "Who wrote it?"],
                    text_b=["Tolstoy wrote it.", "It is in Paris.", "It is long.", "It rains.", "Nobody knows."],
                    labels=["entailment", "entailment", "not_entailment", "not_entailment", "not_entailment"],
                    lines=[1, 2, 3, 4, 5])


def _check_grads(model, head_name, ranking=False):
    head_params = list(model.heads[head_name].named_parameters())
    assert head_params
    for name, p in head_params:
        assert p.grad is not None, f"head param {name} has no grad"
        if ranking and name == "proj.bias":
            # softmax within a group is shift-invariant: a shared bias gets exactly zero gradient
            assert torch.all(p.grad == 0)
            continue
        assert p.grad.abs().sum() > 0, f"head param {name} has a zero grad"
    enc = model.encoder
    assert enc.embeddings.word_embeddings.weight.grad is not None
    assert enc.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert enc.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert enc.encoder.layer[-1].output.dense.weight.grad.abs().sum() > 0
    no_grad = [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"encoder params without grad: {no_grad[:5]}"
    # the other heads took no part
    for other, h in model.heads.items():
        if other != head_name:
            assert all(p.grad is None for p in h.parameters()), other


@pytest.mark.parametrize("task_name,split,kind,out_shape", [
    ("cola", "dev", LinearHead, (6, 2)),        # single-sentence classification
    ("stsb", "dev", LinearHead, (6, 1)),        # regression
    ("qnli_rank", None, LinearHead, (5, 1)),    # ranking
    ("rte", "dev", SANHead, (6, 2)),            # pair classification with SAN
])
def test_head_forward_backward(tiny_encoder, tokenizer, tasks, data_dir, task_name, split, kind, out_shape):
    torch.manual_seed(0)
    task = tasks[task_name]
    model = MultiTaskModel(load_encoder(tiny_encoder), [tasks["cola"], tasks["stsb"], tasks["qnli_rank"], tasks["rte"]])
    assert isinstance(model.heads[task_name], kind)
    raw = _ranking_raw() if split is None else _rows(task, data_dir, split, 6)
    batch = _batch(task, raw, tokenizer)
    model.train()
    out = model(task_name, batch)
    assert out.shape == out_shape
    assert torch.isfinite(out).all()
    if kind is SANHead:  # log of averaged probabilities: rows sum to 1 after exp
        assert torch.allclose(out.exp().sum(-1), torch.ones(out_shape[0]), atol=1e-5)
    model.zero_grad(set_to_none=True)
    loss = model.loss(task_name, batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    _check_grads(model, task_name, ranking=task.type == "ranking")


def test_head_from_routes_to_other_task(tiny_encoder, tokenizer, tasks, data_dir):
    model = MultiTaskModel(load_encoder(tiny_encoder), [tasks["mnli"], tasks["ax"]])
    assert set(model.heads) == {"mnli"}
    assert model.head_name("ax") == "mnli"
    batch = _batch(tasks["ax"], _rows(tasks["ax"], data_dir, "test", 3), tokenizer)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model("ax", batch), model("mnli", batch))
        assert model("ax", batch).shape == (3, 3)


def test_build_head_uses_task_settings():
    t = parse_task({"name": "x", "type": "classification", "labels": ["a", "b", "c"], "dropout": 0.25,
                    "head": {"kind": "san", "steps": 3, "step_dropout": 0.2},
                    "splits": {"train": {"role": "train", "path": "x.tsv",
                                         "columns": {"text_a": 0, "text_b": 1, "label": 2}}}}, "t")
    h = t.kind.build_head(t, 16)
    assert isinstance(h, SANHead)
    assert (h.steps, h.step_dropout, h.dropout.p) == (3, 0.2, 0.25)
    assert h.w3.out_features == 3 and h.w3.in_features == 64
    linear = t.model_copy(update={"head": t.head.model_copy(update={"kind": "linear"})})
    lin = linear.kind.build_head(linear, 16)
    assert isinstance(lin, LinearHead) and lin.proj.out_features == 3 and lin.dropout.p == 0.25


def test_linear_head_is_linear_on_cls():
    torch.manual_seed(0)
    h = LinearHead(8, 3, dropout=0.0)
    hs = torch.randn(2, 5, 8)
    out = h(hs, {})
    expected = hs[:, 0] @ h.proj.weight.T + h.proj.bias
    assert torch.allclose(out, expected, atol=1e-6)


# ------------------------------------------------------------------ SAN by hand
def _san_inputs(seed=0, hidden=6):
    g = torch.Generator().manual_seed(seed)
    # row 0: [CLS] p p p [SEP] h h [SEP] pad ; row 1: [CLS] p p [SEP] h h h h [SEP]
    seg = torch.tensor([[2, 0, 0, 0, 2, 1, 1, 2, -1],
                        [2, 0, 0, 2, 1, 1, 1, 1, 2]])
    mask = (seg != -1).long()
    hs = torch.randn(2, 9, hidden, generator=g, dtype=torch.float64)
    return hs, {"seg": seg, "attention_mask": mask}


def _hand_gru(cell, x, h):
    """torch.nn.GRUCell written out: r, z, n gates in weight order."""
    Wi, Wh, bi, bh = cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
    H = h.shape[-1]
    gi = Wi @ x + bi
    gh = Wh @ h + bh
    r = torch.sigmoid(gi[:H] + gh[:H])
    z = torch.sigmoid(gi[H:2 * H] + gh[H:2 * H])
    n = torch.tanh(gi[2 * H:] + r * gh[2 * H:])
    return (1 - z) * n + z * h


def _hand_san_probs(head, hs, seg, steps):
    """Per example, per step: P^k from the paper's formulas with explicit token selection."""
    w1 = head.w1.weight[0]                 # (H,)
    W2 = head.w2.weight.T                  # beta_j ∝ exp(s W2 M^p_j): w2(s) = s @ w2.weight.T
    W3, b3 = head.w3.weight, head.w3.bias
    out = []
    for b in range(hs.shape[0]):
        Mp = hs[b][seg[b] == 0]            # premise tokens
        Mh = hs[b][seg[b] == 1]            # hypothesis tokens
        alpha = torch.softmax(Mh @ w1, dim=0)
        s = (alpha[:, None] * Mh).sum(0)
        probs = []
        for _ in range(steps):
            beta = torch.softmax((s @ W2) @ Mp.T, dim=0)
            x = (beta[:, None] * Mp).sum(0)
            feats = torch.cat([s, x, (s - x).abs(), s * x])
            probs.append(torch.softmax(W3 @ feats + b3, dim=0))
            s = _hand_gru(head.gru, x, s)
        out.append(torch.stack(probs))
    return torch.stack(out)                # (B, K, C)


def test_san_one_step_equals_hand_computation():
    torch.manual_seed(1)
    head = SANHead(6, 3, steps=1, step_dropout=0.0, dropout=0.0).double()
    hs, batch = _san_inputs()
    head.train()  # dropouts are 0, so train mode must not change anything
    with torch.no_grad():
        out = head(hs, batch)
        P = _hand_san_probs(head, hs, batch["seg"], 1)[:, 0]
    assert out.shape == (2, 3)
    assert torch.allclose(out.double(), P.log(), atol=1e-5)
    # the module's output is a log-probability: cross-entropy on it is -log P[label]
    labels = torch.tensor([2, 0])
    ce = F.cross_entropy(out.float(), labels)
    assert math.isclose(ce.item(), -(P[0, 2].log() + P[1, 0].log()).item() / 2, rel_tol=1e-5)


def test_san_one_step_ignores_special_and_pad_tokens():
    torch.manual_seed(1)
    head = SANHead(6, 3, steps=1, step_dropout=0.0, dropout=0.0).double().eval()
    hs, batch = _san_inputs()
    hs2 = hs.clone()
    special = (batch["seg"] == 2) | (batch["seg"] == -1)
    hs2[special] = torch.randn(int(special.sum()), 6, dtype=torch.float64) * 10
    with torch.no_grad():
        assert torch.allclose(head(hs, batch), head(hs2, batch), atol=1e-6)


def test_san_two_steps_average_probabilities():
    torch.manual_seed(2)
    head = SANHead(6, 3, steps=2, step_dropout=0.0, dropout=0.0).double()
    hs, batch = _san_inputs(seed=3)
    with torch.no_grad():
        out = head(hs, batch)
        P = _hand_san_probs(head, hs, batch["seg"], 2)
    expected = P.mean(dim=1).log()
    assert torch.allclose(out.double(), expected, atol=1e-5)
    # averaging probabilities is not averaging log-probabilities: the two steps really differ
    assert not torch.allclose(P[:, 0], P[:, 1], atol=1e-3)
    assert not torch.allclose(out.double(), P.log().mean(dim=1), atol=1e-4)


def test_san_step_dropout_averages_kept_steps(monkeypatch):
    torch.manual_seed(3)
    head = SANHead(6, 2, steps=3, step_dropout=0.5, dropout=0.0).double()
    hs, batch = _san_inputs(seed=4)
    keep = torch.tensor([[True, False, True], [False, True, False]])
    monkeypatch.setattr(heads_mod, "step_keep_mask", lambda *a, **k: keep)
    with torch.no_grad():
        P = _hand_san_probs(head, hs, batch["seg"], 3)
        head.train()
        out = head(hs, batch)
        head.eval()  # inference: every step, no dropping
        out_eval = head(hs, batch)
    expected = torch.stack([(P[0, 0] + P[0, 2]) / 2, P[1, 1]]).log()
    assert torch.allclose(out.double(), expected, atol=1e-5)
    assert torch.allclose(out_eval.double(), P.mean(1).log(), atol=1e-5)


def test_step_keep_mask_never_drops_every_step():
    g = torch.Generator().manual_seed(0)
    keep = step_keep_mask(20000, 5, 0.99, generator=g)
    assert keep.shape == (20000, 5) and keep.dtype == torch.bool
    assert keep.any(dim=1).all()
    # nearly every row lost all 5 steps (p = 0.95) and got exactly one back
    assert (keep.sum(1) == 1).float().mean() > 0.99


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_step_keep_mask_drop_rate(rate):
    g = torch.Generator().manual_seed(1)
    keep = step_keep_mask(20000, 5, rate, generator=g)
    dropped = 1 - keep.float().mean().item()
    assert abs(dropped - rate) < 0.01
    assert keep.any(dim=1).all()


def test_step_keep_mask_rate_zero_keeps_all():
    assert step_keep_mask(50, 5, 0.0).all()
