"""The speed options compute what the plain code computes (up to float rounding): length-sorted
evaluation batches of any size, dynamic padding, DataLoader workers, the fused AdamW kernel."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import mtdnn
from mtdnn.data.batching import Batch, collate, epoch_schedule
from mtdnn.data.loader import schedule_loader
from mtdnn.data.pipeline import load_task_data
from mtdnn.evaluation import predict
from mtdnn.model.multitask import MultiTaskModel, load_encoder, load_tokenizer
from mtdnn.run_dir import load_weights
from mtdnn.tasks.registry import TaskRegistry
from mtdnn.training.optim import build_optimizer


@pytest.fixture(scope="module")
def mrpc(tiny_encoder, data_dir, tmp_path_factory):
    """A tiny-encoder model with MRPC (SAN head) and STS-B (linear, regression), and 48 dev rows each."""
    tasks = TaskRegistry().resolve(["mrpc", "stsb"], pair_head="san")
    tok = load_tokenizer(tiny_encoder)
    data = load_task_data(tasks, tok, data_dir=data_dir, max_len=64, cache_dir=tmp_path_factory.mktemp("c"),
                          max_train_examples=40, max_eval_examples=48, with_tests=False)
    torch.manual_seed(0)
    model = MultiTaskModel(load_encoder(tiny_encoder), tasks)
    return tasks, data, model, tok.pad_token_id


@pytest.mark.parametrize("task_i", [0, 1])
def test_eval_predictions_do_not_depend_on_batch_size_or_order(mrpc, task_i):
    tasks, data, model, pad = mrpc
    task = tasks[task_i]
    split = data[task.name].evals["dev"]
    cpu = torch.device("cpu")
    runs = {bs: predict(model, task, split, batch_size=bs, device=cpu, pad_id=pad) for bs in (1, 5, 128)}
    # reference: each row alone, unpadded, in file order, outside inference mode
    model.eval()
    with torch.no_grad():
        ref = []
        for i in range(len(split)):
            out = model(task.name, collate(split, np.array([i]), pad)).float()
            ref.append(torch.softmax(out, -1)[0] if task.type == "classification" else out.reshape(-1)[0])
    ref = torch.stack(ref).numpy()
    for bs, p in runs.items():
        np.testing.assert_allclose(p.outputs, ref, rtol=1e-4, atol=1e-5, err_msg=f"eval batch size {bs}")
        if task.type == "classification":  # the same decisions
            np.testing.assert_array_equal(p.preds, runs[1].preds)


def test_dynamic_padding_does_not_change_loss_or_gradients(mrpc):
    """A batch padded to its longest row (dynamic padding, length grouping) gives the loss and the
    gradients of the same rows padded to a fixed length."""
    tasks, data, model, pad = mrpc
    model.eval()  # dropout masks depend on the tensor shapes: compare without dropout
    for task in tasks:
        split = data[task.name].train
        rows = np.arange(8)
        results = []
        for width in (None, 64):
            batch = collate(split, rows, pad, pad_to_multiple_of=width)
            model.zero_grad(set_to_none=True)
            loss = model.loss(task.name, batch)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            results.append((loss.detach(), grads))
        (l1, g1), (l2, g2) = results
        assert collate(split, rows, pad)["input_ids"].shape[1] < 64
        torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
        assert g1.keys() == g2.keys()
        for n in g1:
            torch.testing.assert_close(g1[n], g2[n], rtol=1e-4, atol=1e-6, msg=n)
    model.zero_grad(set_to_none=True)


def test_schedule_loader_with_workers_gives_the_inline_batches(mrpc):
    tasks, data, model, pad = mrpc
    splits = {t.name: data[t.name].train for t in tasks}
    schedule = epoch_schedule(splits, 8, seed=1, epoch=1)
    inline = list(schedule_loader(splits, schedule, pad, num_workers=0))
    workers = list(schedule_loader(splits, schedule, pad, num_workers=2, device=torch.device("cpu")))
    assert len(inline) == len(workers) == len(schedule)
    for b, x, y in zip(schedule, inline, workers):
        ref = collate(splits[b.task], b.indices, pad)
        assert x.keys() == y.keys() == ref.keys()
        for k in ref:
            assert torch.equal(x[k], ref[k]) and torch.equal(y[k], ref[k]), k
    half = list(schedule_loader(splits, [Batch(b.task, b.indices[::2]) for b in schedule], pad, num_workers=1))
    first = schedule[0]
    assert torch.equal(half[0]["labels"], torch.from_numpy(splits[first.task].labels[first.indices[::2]]))


def test_training_with_dataloader_workers_gives_the_same_weights(tiny_encoder, data_dir, tmp_path):
    def run(workers: int) -> dict[str, torch.Tensor]:
        cfg = mtdnn.make_config(overrides=dict(
            tasks="mrpc,stsb", encoder=tiny_encoder, data_dir=str(Path(data_dir).resolve()),
            cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / f"w{workers}"), progress=False,
            max_train_examples=40, max_eval_examples=16, max_seq_len=48, epochs=2, batch_size=8, threads=1,
            optimizer="adamw", predict_test=False, num_workers=workers, seed=7))
        run_dir = Path(mtdnn.train(cfg))
        return load_weights(run_dir / "checkpoints" / "epoch-2.safetensors")

    w0, w1 = run(0), run(1)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k


def test_fused_adamw_matches_the_reference_update(mrpc):
    """The fused AdamW kernel (used on CPU and CUDA) makes the for-loop implementation's updates."""
    tasks, _, model, _ = mrpc
    cfg = mtdnn.make_config(overrides=dict(tasks="mrpc", optimizer="adamw", lr=1e-3, weight_decay=0.01))
    fused_model = copy.deepcopy(model)
    ref_model = copy.deepcopy(model)
    fused = build_optimizer(fused_model, cfg, torch.device("cpu"))
    assert fused.defaults.get("fused") is True
    groups = [{"params": [p for p in ref_model.parameters() if p.ndim >= 2], "weight_decay": 0.01},
              {"params": [p for p in ref_model.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    ref = torch.optim.AdamW(groups, lr=1e-3, foreach=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for pf, pr in zip(fused_model.parameters(), ref_model.parameters()):
            grad = torch.randn(pf.shape, generator=g) * 0.1
            pf.grad, pr.grad = grad.clone(), grad.clone()
        fused.step()
        ref.step()
    for (n, pf), pr in zip(fused_model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(pf, pr, rtol=1e-5, atol=1e-6, msg=n)


def test_eval_batches_cover_every_row_once_and_pad_less(mrpc):
    from mtdnn.data.batching import eval_order

    tasks, data, _, _ = mrpc
    split = data["mrpc"].train
    lengths = split.lengths

    def padded(batches):
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    for bs in (4, 16, 128):
        batches = eval_order(split, bs)
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(len(split)))
        assert all(0 < len(b) <= bs for b in batches)
        assert list(lengths[rows]) == sorted(lengths, reverse=True)  # longest first
        fixed = eval_order(split, bs, max_waste=1.0)  # plain cuts every bs rows
        assert [len(b) for b in fixed[:-1]] == [bs] * (len(fixed) - 1)
        assert padded(batches) <= padded(fixed)
    short = eval_order(split, 128, min_rows=8)
    assert all(lengths[b].min() >= 0.9 * lengths[b].max() for b in short[:-1] if len(b) > 8)
