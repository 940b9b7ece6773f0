"""SMART (training/smart.py): the divergences by hand, the perturbation stays in its ball and is
zero on padding, the adversarial term is exactly zero without a perturbation (dropout and SAN step
dropout on) and positive with one, the ascent leaves no gradient on the model and the random stream
as a plain step plus the noise draw, the proximal anchor's moving average by hand, bf16, and a
tiny-encoder run with a SAN task and a regression task that trains, is killed and resumes to the
same weights as an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mtdnn.cli import main
from mtdnn.config import make_config
from mtdnn.data.batching import collate
from mtdnn.data.pipeline import load_task_data
from mtdnn.errors import ConfigError
from mtdnn.model.multitask import MultiTaskModel, load_encoder, load_tokenizer
from mtdnn.model.objectives import group_symmetric_kl, symmetric_kl
from mtdnn.run_dir import RunDir
from mtdnn.tasks.registry import TaskRegistry
from mtdnn.tasks.schema import parse_task
from mtdnn.training.checkpoint import state_dir
from mtdnn.training.methods.smart import (EmaAnchor, SmartLoss, SmartSettings, adversarial_perturbation,
                                          output_divergence)
from mtdnn.training.step import TaskLoss
from toy_tasks import train_argv, write_toy_data


# ------------------------------------------------------------------------------ divergences
def test_symmetric_kl_by_hand():
    # p = (1/4, 3/4), q = (1/2, 1/2): (p-q)(log p - log q) summed = 1/4 ln 2 + 1/4 ln 3/2 = 1/4 ln 3
    p, q = torch.tensor([[0.25, 0.75]]).log(), torch.tensor([[0.5, 0.5]]).log()
    assert symmetric_kl(p, q).item() == pytest.approx(0.25 * math.log(3), abs=1e-6)
    # logits work the same (softmax is shift-invariant) and the divergence is symmetric
    assert symmetric_kl(q + 7.0, p - 2.0).item() == pytest.approx(0.25 * math.log(3), abs=1e-6)
    # p = (0.9, 0.1), q = (0.2, 0.8): 0.7 ln 4.5 + 0.7 ln 8
    p2, q2 = torch.tensor([[0.9, 0.1]]).log(), torch.tensor([[0.2, 0.8]]).log()
    assert symmetric_kl(p2, q2).item() == pytest.approx(0.7 * math.log(4.5) + 0.7 * math.log(8), abs=1e-5)
    assert symmetric_kl(p, p).item() == 0.0


def test_ranking_divergence_is_per_question_over_its_candidates():
    # question 0: scores (0, ln 3) vs (0, 0) -> the 2-class case above; question 1: equal -> 0
    a = torch.tensor([0.0, math.log(3), 1.0, 2.0, 3.0])
    b = torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0])
    groups = torch.tensor([0, 0, 1, 1, 1])
    per_group = group_symmetric_kl(a, b, groups)
    assert per_group.tolist() == pytest.approx([0.25 * math.log(3), 0.0], abs=1e-6)


def test_regression_divergence_is_squared_error(toy):
    task = toy["tasks"]["toyreg"]
    a, b = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [0.0]])
    assert output_divergence("mse", task, a, b, {}).item() == pytest.approx(0.25 + 4.0)


def test_adv_loss_field_is_checked():
    base = {"name": "r", "type": "regression", "splits": {"train": {"path": "x.tsv", "role": "train",
                                                                    "columns": {"text_a": "a", "text_b": "b", "label": "y"}}}}
    assert parse_task({**base, "adv_loss": "none"}, "t.yaml").adv_loss == "none"
    with pytest.raises(ConfigError, match="adv_loss"):
        parse_task({**base, "adv_loss": "sym_kl"}, "t.yaml")


# ------------------------------------------------------------------------------ the perturbation
@pytest.mark.parametrize("norm", ["inf", "l2"])
def test_perturbation_stays_in_the_ball_and_off_padding(norm):
    torch.manual_seed(0)
    weight = torch.randn(5 * 4, 3)
    mask = torch.ones(6, 5, 1)
    mask[:, 3:] = 0  # the last two positions are padding

    def forward(delta):  # a smooth non-linear function of the perturbation, (B, 3) logits
        return torch.tanh(delta.flatten(1) * 50) @ weight

    eps = 0.05
    settings = SmartSettings(epsilon=eps, step_size=0.5, steps=4, norm=norm)
    init = torch.randn(6, 5, 4) * mask
    delta = adversarial_perturbation(forward, forward(torch.zeros(6, 5, 4)).detach(), lambda a, b: symmetric_kl(a, b).sum(),
                                     init, mask, settings)
    assert not delta.requires_grad
    assert torch.all(delta[:, 3:] == 0)
    if norm == "inf":
        assert delta.abs().max().item() <= eps + 1e-9
        assert delta.abs().max().item() == pytest.approx(eps)  # big steps: it reaches the border
    else:
        sizes = delta.flatten(1).norm(dim=1)
        assert torch.all(sizes <= eps * (1 + 1e-5)) and sizes.min().item() == pytest.approx(eps, rel=1e-4)


def test_ascent_increases_the_divergence():
    torch.manual_seed(1)
    weight = torch.randn(8, 2)
    mask = torch.ones(4, 2, 1)

    def forward(delta):
        return delta.flatten(1) @ weight

    target = forward(torch.zeros(4, 2, 4)).detach()
    div = lambda a, b: symmetric_kl(a, b).sum()  # noqa: E731
    init = torch.randn(4, 2, 4) * 1e-3
    one = adversarial_perturbation(forward, target, div, init, mask, SmartSettings(epsilon=1.0, step_size=0.1, steps=1))
    assert div(forward(one), target) > div(forward(init), target)


# ------------------------------------------------------------------------------ on a tiny model
@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("smart")
    task_file, data_dir = write_toy_data(root)
    tasks = TaskRegistry([str(task_file)]).resolve(["toycls", "toyreg", "toyrank"])
    tok = load_tokenizer(tiny_encoder)
    data = load_task_data(tasks, tok, data_dir=data_dir, max_len=32, cache_dir=str(root / "cache"), with_tests=False)
    return {"tasks": {t.name: t for t in tasks}, "data": data, "encoder": tiny_encoder, "root": root,
            "task_file": task_file, "data_dir": data_dir}


def _model(toy) -> MultiTaskModel:
    torch.manual_seed(0)
    model = MultiTaskModel(load_encoder(toy["encoder"]), list(toy["tasks"].values()))
    model.train()  # dropout (BERT's 0.1, heads' 0.1) and SAN step dropout on
    return model


def _batch(toy, task: str) -> dict[str, torch.Tensor]:
    split = toy["data"][task].train
    import numpy as np
    return collate(split, np.arange(min(8, len(split))), pad_id=0)


@pytest.mark.parametrize("task", ["toycls", "toyreg", "toyrank"])
def test_term_is_zero_without_perturbation_and_positive_with(toy, task):
    model, batch = _model(toy), _batch(toy, task)

    def total(settings: SmartSettings) -> torch.Tensor:
        torch.manual_seed(5)
        return SmartLoss(settings, TaskLoss())(model, task, batch, None)

    torch.manual_seed(5)
    plain = TaskLoss()(model, task, batch, None)
    assert torch.equal(total(SmartSettings(epsilon=0.0, noise_var=1e-4)), plain)
    assert torch.equal(total(SmartSettings(epsilon=1e-2, noise_var=0.0)), plain)  # no start: no ascent either
    bigger = total(SmartSettings(epsilon=1e-2, noise_var=1e-4, step_size=1e-2))
    assert (bigger - plain).item() > 0


def test_no_gradient_from_the_ascent_and_the_random_stream(toy):
    model, batch = _model(toy), _batch(toy, "toycls")
    settings = SmartSettings(epsilon=1e-2, noise_var=1e-4, step_size=1e-2, steps=3)
    torch.manual_seed(9)
    loss = SmartLoss(settings, TaskLoss())(model, "toycls", batch, None)
    after_smart = torch.rand(4)
    # the ascent's backward passes took the perturbation's gradient only
    assert all(p.grad is None for p in model.parameters())
    # the stream goes on as after a plain step plus the start noise: every forward replayed its masks
    torch.manual_seed(9)
    TaskLoss()(model, "toycls", batch, None)
    torch.randn(*batch["input_ids"].shape, 32)
    assert torch.equal(torch.rand(4), after_smart)
    loss.backward()  # the final term's gradients reach the encoder (embeddings included) and the head
    assert model.encoder.get_input_embeddings().weight.grad is not None
    assert all(p.grad is not None for p in model.heads["toycls"].parameters())


def test_bf16_autocast(toy):
    model, batch = _model(toy), _batch(toy, "toycls")
    settings = SmartSettings(epsilon=1e-2, noise_var=1e-4, step_size=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(3)
        total = SmartLoss(settings, TaskLoss())(model, "toycls", batch, None)
        torch.manual_seed(3)
        plain = TaskLoss()(model, "toycls", batch, None)
    assert torch.isfinite(total) and (total - plain).item() > 0


def test_anchor_moving_average_by_hand(toy):
    model = _model(toy)
    anchor = EmaAnchor(model, decay=0.9)
    name, param = next((n, p) for n, p in model.named_parameters() if n.startswith("heads.toyreg"))
    before = param.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    anchor.follow(opt, model)
    param.grad = torch.ones_like(param)
    opt.step()
    assert torch.allclose(anchor.views()[name], 0.9 * before + 0.1 * (before - 0.1), atol=1e-7)
    # the anchor's output is the model's under the averaged weights; the model's own are untouched
    batch = _batch(toy, "toyreg")
    model.eval()
    with torch.no_grad():
        assert not torch.equal(anchor.output(model, "toyreg", batch), model("toyreg", batch))
    assert torch.equal(param.detach(), before - 0.1)


def test_proximal_term_is_zero_at_the_anchor_and_positive_away(toy):
    model, batch = _model(toy), _batch(toy, "toycls")
    settings = SmartSettings(alpha=0.0, proximal=True, proximal_weight=1.0)
    anchor = EmaAnchor(model, decay=0.5)
    torch.manual_seed(2)
    plain = TaskLoss()(model, "toycls", batch, None)
    torch.manual_seed(2)
    assert torch.equal(SmartLoss(settings, TaskLoss(), anchor)(model, "toycls", batch, None), plain)
    with torch.no_grad():
        anchor.weights.add_(0.05)
    torch.manual_seed(2)
    assert (SmartLoss(settings, TaskLoss(), anchor)(model, "toycls", batch, None) - plain).item() > 0


def test_proximal_needs_ddp_not_fsdp(toy):
    from mtdnn.training.methods.smart import smart_parts
    cfg = make_config(overrides={"tasks": "rte", "adv": True, "adv_proximal": True})
    with pytest.raises(ConfigError, match="adv_proximal"):
        smart_parts(cfg, _model(toy), TaskLoss(), fsdp=True)


# ------------------------------------------------------------------------------ end to end
def test_smart_run_with_san_and_regression_trains_and_resumes(tmp_path, tiny_encoder, cache_dir):
    task_file, data_dir = write_toy_data(tmp_path)
    extra = ("--adv", "--adv-proximal", "--adv-epsilon", "1e-2", "--adv-steps", "2", "--checkpoint-every", "3")
    argv = lambda out: train_argv(task_file, data_dir, tiny_encoder, cache_dir, out, *extra)  # noqa: E731
    full, killed, plain = tmp_path / "full", tmp_path / "killed", tmp_path / "plain"
    assert main(argv(full)) == 0
    assert main(train_argv(task_file, data_dir, tiny_encoder, cache_dir, plain)) == 0
    history = [json.loads(x) for x in (full / "history.jsonl").read_text().splitlines()]
    plain_history = [json.loads(x) for x in (plain / "history.jsonl").read_text().splitlines()]
    assert set(history[0]["train_loss"]) == {"toycls", "toyreg"}
    assert history != plain_history  # the term changes training
    env = {**os.environ, "MTDNN_TEST_FAULTS": "kill_at_step=14"}
    proc = subprocess.run([sys.executable, "-m", "mtdnn", *argv(killed)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    train_file = next(state_dir(RunDir(killed)).glob("train-*.safetensors"))
    assert "method.weights" in load_file(str(train_file))  # the proximal anchor is in the resume state
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    for name in ("epoch-1.safetensors", "epoch-2.safetensors"):
        a, b = load_file(str(full / "checkpoints" / name)), load_file(str(killed / "checkpoints" / name))
        if not a:
            continue
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert json.loads((full / "metrics.json").read_text()) == json.loads((killed / "metrics.json").read_text())


def test_smart_under_ddp_keeps_the_replicas_equal(tmp_path, data_dir):
    """2 processes (gloo, CPU) with --adv --adv-proximal: the job ends cleanly and both ranks hold the
    same weights after every epoch (the adversarial and proximal terms' gradients are synchronised;
    each rank's anchor follows the same updates). Each rank draws its own start noise, as it draws
    its own dropout masks, so the run is not the single-process run."""
    from mtdnn.testing import dropout_free_tasks, tiny_encoder as build_tiny

    tasks = dropout_free_tasks(tmp_path / "tasks.yaml")
    encoder = build_tiny(tmp_path / "encoder")
    dump = tmp_path / "dump"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mtdnn",
           "train", "--tasks", "rte0,stsb0", "--task-files", str(tasks), "--encoder", str(encoder),
           "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"), "--epochs", "2", "--batch-size", "8",
           "--max-train-examples", "24", "--max-eval-examples", "16", "--max-seq-len", "32", "--lr", "1e-3",
           "--threads", "1", "--no-progress", "--no-hub", "--no-predict-test", "--output-dir", str(tmp_path / "run"),
           "--adv", "--adv-proximal", "--adv-epsilon", "1e-2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MTDNN_TEST_FAULTS": f"dump_dir={dump}"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for epoch in (1, 2):
        a, b = load_file(str(dump / f"rank0-epoch{epoch}.safetensors")), load_file(str(dump / f"rank1-epoch{epoch}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), epoch
    assert (tmp_path / "run" / "metrics.json").is_file()
