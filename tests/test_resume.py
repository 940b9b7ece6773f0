"""Crash safety: resumable checkpoints, kill -9 and resume (bitwise equal to an uninterrupted run on
CPU), NaN/inf losses (stop with a one-line message, or skip and count)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtdnn.cli import main
from mtdnn.errors import CheckpointError
from mtdnn.run_dir import RunDir
from mtdnn.training.checkpoint import load_train_state, read_history, save_train_state, state_dir
from mtdnn.training.state import LoopState
from toy_tasks import train_argv, write_toy_data
from checks import one_error_line

# 10 batches per epoch (6 toycls + 4 toyreg), 2 epochs = 20 optimiser steps; a resumable state
# every 3 steps: the kill at step 14 (epoch 2, batch 4) loses steps 13-14, redone after the resume
CHECKPOINT_EVERY, KILL_AT = "3", "14"


def _history(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "history.jsonl").read_text().splitlines()]


def _assert_same_run(a: Path, b: Path) -> None:
    ckpts = sorted(p.name for p in (a / "checkpoints").glob("epoch-*.safetensors"))
    assert ckpts and ckpts == sorted(p.name for p in (b / "checkpoints").glob("epoch-*.safetensors"))
    for name in ckpts:
        ta, tb = load_file(str(a / "checkpoints" / name)), load_file(str(b / "checkpoints" / name))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}: {k} differs"
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    assert json.loads((a / "selection.json").read_text()) == json.loads((b / "selection.json").read_text())
    ha, hb = _history(a), _history(b)
    assert [h["epoch"] for h in hb] == [1, 2]
    for x, y in zip(ha, hb):
        for key in ("epoch", "step", "train_examples", "train_loss", "dev", "skipped_batches"):
            assert x[key] == y[key], key


def test_kill_and_resume_is_bitwise_identical(tmp_path, tiny_encoder, cache_dir, capsys):
    task_file, data_dir = write_toy_data(tmp_path)
    argv = lambda out: train_argv(task_file, data_dir, tiny_encoder, cache_dir, out,  # noqa: E731
                                  "--checkpoint-every", CHECKPOINT_EVERY)
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(argv(full)) == 0
    assert not state_dir(RunDir(full)).exists()  # a finished run keeps no resume state

    # the same run, killed with SIGKILL in the middle of epoch 2
    env = {**os.environ, "MTDNN_TEST_FAULTS": f"kill_at_step={KILL_AT}"}
    proc = subprocess.run([sys.executable, "-m", "mtdnn", *argv(killed)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    state = json.loads((state_dir(RunDir(killed)) / "state.json").read_text())
    assert (state["loop"]["epoch"], state["loop"]["batch"], state["loop"]["update"]) == (2, 2, 12)
    assert {p.suffix for p in state_dir(RunDir(killed)).iterdir()} == {".json", ".safetensors"}
    assert not (killed / "metrics.json").exists()
    # a crash between the history append and the state save leaves a record the state does not know
    with open(killed / "history.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "bogus": True}) + "\n" + '{"epoch": 3, "trunc')

    # resuming with a changed setting that matters is refused, and changes nothing
    before = sorted(p.name for p in killed.rglob("*"))
    assert main(["train", "--resume", str(killed), "--lr", "0.5"]) == 2
    line = one_error_line(capsys)
    assert "field 'lr'" in line and "config.yaml" in line
    assert sorted(p.name for p in killed.rglob("*")) == before

    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    _assert_same_run(full, killed)
    assert not state_dir(RunDir(killed)).exists()

    # a finished run has nothing to resume
    assert main(["train", "--resume", str(killed)]) == 2
    assert "nothing to resume" in one_error_line(capsys)


def test_resume_from_corrupt_state_is_a_clear_error(tmp_path, tiny_encoder, cache_dir, capsys, monkeypatch):
    task_file, data_dir = write_toy_data(tmp_path)
    run = tmp_path / "run"
    # a run that died after its last epoch, before metrics.json: its final state is kept
    monkeypatch.setattr("mtdnn.training.job.remove_train_state", lambda run: None)
    assert main(train_argv(task_file, data_dir, tiny_encoder, cache_dir, run, epochs=1)) == 0
    (run / "metrics.json").unlink()
    model_file = next(state_dir(RunDir(run)).glob("model-*.safetensors"))
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert main(["train", "--resume", str(run)]) == 2
    line = one_error_line(capsys)
    assert "cannot resume" in line and model_file.name in line
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before

    # resuming a directory that is not a run
    assert main(["train", "--resume", str(tmp_path / "data")]) == 2
    assert "not an mtdnn run directory" in one_error_line(capsys)
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "not found" in one_error_line(capsys)


def test_train_state_round_trip(tmp_path):
    """Model, optimiser, scheduler and RNG states come back exactly, without pickle."""
    from transformers import get_linear_schedule_with_warmup

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
        opt = torch.optim.Adamax([{"params": [model[0].weight, model[2].weight], "weight_decay": 0.01},
                                  {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}], lr=1e-2)
        return model, opt, get_linear_schedule_with_warmup(opt, 2, 10)

    model, opt, sch = make()
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        opt.step(), sch.step(), opt.zero_grad()
    run = RunDir(tmp_path / "run")
    loop = LoopState(epoch=1, batch=3, update=3, n_examples=15, losses={"t": [0.5, float("0.1")]},
                     skipped={"t": 1}, best={"t": 1.5}, selection={"t": 1}, batches_per_epoch=7)
    save_train_state(run, model, opt, sch, loop)
    expected_next = torch.rand(3)
    import random
    expected_py = random.random()

    model2, opt2, sch2 = make()
    torch.manual_seed(123)
    random.seed(5)
    got = load_train_state(run, model2, opt2, sch2, batches_per_epoch=7)
    assert got == loop
    assert torch.equal(torch.rand(3), expected_next) and random.random() == expected_py
    assert model.state_dict().keys() == model2.state_dict().keys()
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert sch2.state_dict() == sch.state_dict()
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    assert s1["state"] and s1["state"].keys() == s2["state"].keys()
    for i in s1["state"]:
        for k in s1["state"][i]:
            assert torch.equal(s1["state"][i][k], s2["state"][i][k])
    # the data changed since the state was saved
    with pytest.raises(CheckpointError, match="batches per epoch"):
        load_train_state(run, model2, opt2, sch2, batches_per_epoch=8)
    # a tampered state.json
    sj = state_dir(run) / "state.json"
    sj.write_text(sj.read_text()[:-40])
    with pytest.raises(CheckpointError, match="cannot resume"):
        load_train_state(run, model2, opt2, sch2, batches_per_epoch=7)


def test_read_history_drops_records_past_the_state(tmp_path):
    run = RunDir(tmp_path)
    run.history_file.write_text('{"epoch": 1, "a": 1}\n{"epoch": 2, "a": 2}\n{"epoch": 2, "a": 3}\n{"epo')
    assert read_history(run, 1) == [{"epoch": 1, "a": 1}]
    assert run.history_file.read_text() == '{"epoch": 1, "a": 1}\n'
    with pytest.raises(CheckpointError, match="epoch 2"):
        read_history(run, 2)


# ------------------------------------------------------------------------------ NaN / inf losses
def _inf_data(tmp_path):
    """A regression row scored 1e30: its squared error overflows float32 to inf."""
    task_file, data_dir = write_toy_data(tmp_path)
    rows = (data_dir / "reg_train.tsv").read_text().splitlines()
    a, b, _ = rows[5].split("\t")
    rows[5] = f"{a}\t{b}\t1e30"
    (data_dir / "reg_train.tsv").write_text("\n".join(rows) + "\n")
    return task_file, data_dir


def test_inf_loss_stops_with_task_and_step(tmp_path, tiny_encoder, cache_dir, capsys):
    task_file, data_dir = _inf_data(tmp_path)
    assert main(train_argv(task_file, data_dir, tiny_encoder, cache_dir, tmp_path / "run", epochs=1)) == 2
    line = one_error_line(capsys)
    assert "loss is inf on task 'toyreg' at step " in line and "--on-nan skip" in line


def test_inf_loss_skipped_and_counted(tmp_path, tiny_encoder, cache_dir, capsys):
    task_file, data_dir = _inf_data(tmp_path)
    run = tmp_path / "run"
    assert main(train_argv(task_file, data_dir, tiny_encoder, cache_dir, run, "--on-nan", "skip")) == 0
    history = _history(run)
    # the row is in one batch per epoch: one skipped batch each epoch, every weight still finite
    assert [h["skipped_batches"] for h in history] == [{"toyreg": 1}, {"toyreg": 1}]
    assert [h["train_examples"] for h in history] == [36, 36]
    weights = load_file(str(RunDir(run).checkpoint(2)))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_config_difference_is_the_rule_of_resume(tmp_path):
    """``config_difference`` (shared by --resume and the experiment runners) names the first field
    that decides the computation; may-change fields, fields an older config.yaml lacks, and floats
    equal up to rounding are not differences; ``check_resume_config`` refuses with that field."""
    import yaml

    from mtdnn.config import TrainConfig
    from mtdnn.errors import ConfigError
    from mtdnn.training.checkpoint import check_resume_config, config_difference

    cfg = TrainConfig(tasks=["rte"], output_dir=str(tmp_path / "run"), lr=1e-4, seed=3)
    saved = cfg.model_dump(mode="json")
    assert config_difference(cfg, saved) is None
    assert config_difference(cfg, {**saved, "seed": 4}) == ("seed", 3, 4)
    assert config_difference(cfg, {**saved, "lr": 1e-4 * (1 + 1e-12)}) is None
    assert config_difference(cfg, {k: v for k, v in saved.items() if k != "seed"}) is None
    assert "threads" in TrainConfig.resume_may_change()
    assert config_difference(cfg, {**saved, "threads": 7}) is None
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config_file.write_text(yaml.safe_dump({**saved, "lr": 2e-4}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        check_resume_config(cfg, run)
    assert str(err.value) == (f"{run.config_file}, field 'lr': is 0.0001 but the run to resume has 0.0002 "
                              "(a resumed run keeps its config)")


def test_pair_head_is_compared_on_resume(tmp_path):
    """--pair-head decides the pair tasks' heads: a resumed run keeps it; a run from before the option
    (config.yaml without it, its pair tasks with SAN, then the default) is told to resume with it."""
    import yaml

    from mtdnn.config import TrainConfig
    from mtdnn.errors import ConfigError
    from mtdnn.tasks.registry import TaskRegistry
    from mtdnn.training.checkpoint import check_resume_config, check_resume_tasks

    san = TrainConfig(tasks=["rte", "stsb"], output_dir=str(tmp_path / "run"), pair_head="san")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config_file.write_text(yaml.safe_dump(san.model_dump(mode="json")), encoding="utf-8")
    run.tasks_file.write_text(yaml.safe_dump([t.model_dump(mode="json") for t in
                                              TaskRegistry().resolve(san.tasks, san.pair_head)]), encoding="utf-8")
    check_resume_config(san, run)
    check_resume_tasks(TaskRegistry().resolve(san.tasks, san.pair_head), run)
    linear = san.model_copy(update={"pair_head": "linear"})
    with pytest.raises(ConfigError, match="field 'pair_head': is 'linear' but the run to resume has 'san'"):
        check_resume_config(linear, run)
    older = {k: v for k, v in san.model_dump(mode="json").items() if k != "pair_head"}
    run.config_file.write_text(yaml.safe_dump(older), encoding="utf-8")
    check_resume_config(linear, run)  # a field the older config lacks is not compared: the tasks are
    with pytest.raises(ConfigError, match="task 'rte' is not defined as in the run to resume .*"
                                          "its head is san there: resume with --pair-head san"):
        check_resume_tasks(TaskRegistry().resolve(linear.tasks, linear.pair_head), run)


def test_environment_of_every_attempt_is_recorded(tmp_path, tiny_encoder, cache_dir, caplog, monkeypatch):
    """environment.json lists where each attempt at a run trained; a run resumed where it rounds
    otherwise (here: a recorded processor that is not this one) says it will not be bitwise the
    uninterrupted run; an unreadable record is replaced, with a warning; a fresh run starts anew."""
    import mtdnn.training.loop as loop
    from mtdnn.runtime import cpu_model

    task_file, data_dir = write_toy_data(tmp_path)
    run = tmp_path / "run"
    argv = train_argv(task_file, data_dir, tiny_encoder, cache_dir, run)
    end_epoch = loop.end_epoch

    def killed_after_epoch_1(job, state, *args):
        end_epoch(job, state, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "end_epoch", killed_after_epoch_1)
    assert main(argv) == 130  # interrupted after epoch 1: resumable
    (first,) = RunDir(run).read_environment()
    assert first["processor"] == cpu_model() and first["torch"] == torch.__version__
    assert (first["device"], first["gpu"], first["world_size"], first["threads"]) == ("cpu", None, 1, 1)
    assert first["mtdnn"] and first["python"]
    from importlib import metadata
    for package in ("transformers", "tokenizers", "numpy", "scipy", "scikit-learn", "peft"):
        assert first[package] == metadata.version(package), package

    # resumed "on another processor": warned, recorded as a second attempt
    (run / "environment.json").write_text(json.dumps([{**first, "processor": "Another CPU (AVX2)"}]))
    assert main(["train", "--resume", str(run), "--no-progress"]) == 130  # epoch 2, interrupted again
    warned = [r.getMessage() for r in caplog.records if "floating-point rounding differs" in r.getMessage()]
    assert len(warned) == 1 and f"processor {cpu_model()}" in warned[0] and "Another CPU (AVX2)" in warned[0]
    assert [e["processor"] for e in RunDir(run).read_environment()] == ["Another CPU (AVX2)", cpu_model()]

    # an unreadable record: warned and started again; the same platform as the last attempt: no warning
    monkeypatch.setattr(loop, "end_epoch", end_epoch)
    (run / "environment.json").write_text("[{")
    caplog.clear()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert any("unreadable environment record" in r.getMessage() for r in caplog.records)
    assert not any("rounding differs" in r.getMessage() for r in caplog.records)
    assert len(RunDir(run).read_environment()) == 1

    # a fresh run in the directory starts a new record
    assert main(argv) == 0
    assert len(RunDir(run).read_environment()) == 1
