"""Multi-task methods, end to end: tiny runs with each sampling and multi-task method (history records, the
mixture drawn, learned uncertainty weights, gradient cosines), logging that changes nothing, kill and
resume (bitwise), ``mtdnn affinity`` from the command line, and PCGrad and uncertainty weighting
under DDP (2 processes, gloo) against a single process on real data slices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mtdnn
from mtdnn.cli import main
from mtdnn.config import load_config_file
from mtdnn.run_dir import RunDir
from mtdnn.testing import dropout_free_tasks, tiny_encoder
from mtdnn.training.checkpoint import state_dir
from toy_tasks import train_argv, write_toy_data

TASKS = "toycls,toyreg,toyrank"  # 6 + 4 + 4 = 14 proportional batches of 4 rows per epoch


def _history(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "history.jsonl").read_text().splitlines()]


def _weights(run: Path, epoch: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"epoch-{epoch}.safetensors"))


def _same_weights(a: Path, b: Path, epoch: int) -> bool:
    wa, wb = _weights(a, epoch), _weights(b, epoch)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture()
def toy(tmp_path, tiny_encoder, cache_dir):
    task_file, data_dir = write_toy_data(tmp_path)

    def argv(out: Path, *extra: str, epochs: int = 2) -> list[str]:
        return train_argv(task_file, data_dir, tiny_encoder, cache_dir, out, *extra, tasks=TASKS, epochs=epochs)
    return argv


# ----------------------------------------------------------------------------- each method
def test_temperature_sampling_logs_its_mixture_and_gradient_cosines(tmp_path, toy):
    out = tmp_path / "temp"
    assert main(toy(out, "--sampling", "temperature", "--sampling-temperature", "5", "--log-grad-cosine", "4",
                    "--steps-per-epoch", "12")) == 0
    h = _history(out)
    for rec in h:
        assert sum(rec["mixture"].values()) == 12 and list(rec["mixture"]) == TASKS.split(",")
        cos = rec["grad_cosine"]
        assert cos["tasks"] == TASKS.split(",")
        assert len(cos["matrices"]) == 3 and cos["steps"] == [s + 12 * (rec["epoch"] - 1) for s in (4, 8, 12)]
        for m in cos["matrices"]:
            assert [m[i][i] for i in range(3)] == pytest.approx([1.0] * 3)
            assert all(m[i][j] == m[j][i] and -1 <= m[i][j] <= 1 for i in range(3) for j in range(3))
    assert h[0]["step"] == 12 and h[1]["step"] == 24
    tb = list((out / "tb").glob("events.out.tfevents.*"))
    assert tb and any(b"grad_cosine/toycls~toyreg" in p.read_bytes() for p in tb)
    assert any(b"mixture/toycls" in p.read_bytes() for p in tb)


def test_gradient_cosine_logging_changes_nothing_in_the_training(tmp_path, toy):
    plain, logged = tmp_path / "plain", tmp_path / "logged"
    assert main(toy(plain, "--sampling", "uniform")) == 0
    assert main(toy(logged, "--sampling", "uniform", "--log-grad-cosine", "3")) == 0
    assert _same_weights(plain, logged, 2)
    assert "grad_cosine" not in _history(plain)[0] and "grad_cosine" in _history(logged)[0]
    assert [h["train_loss"] for h in _history(plain)] == [h["train_loss"] for h in _history(logged)]


def test_annealed_with_a_cap_and_uncertainty_with_weights(tmp_path, toy):
    ann = tmp_path / "ann"
    assert main(toy(ann, "--sampling", "annealed", "--max-epoch-examples-per-task", "8", epochs=3)) == 0
    h = _history(ann)
    # sizes capped at 8 rows each (24, 16 and 12 rows): the steps default to a proportional epoch of
    # the capped sizes, 3 * ceil(8 / 4) = 6
    assert [sum(r["mixture"].values()) for r in h] == [6, 6, 6]
    unc = tmp_path / "unc"
    assert main(toy(unc, "--mtl-method", "uncertainty", "--task-weights", "toycls=2", "--uncertainty-lr", "0.05")) == 0
    h = _history(unc)
    s1, s2 = h[0]["uncertainty_log_variance"], h[1]["uncertainty_log_variance"]
    assert set(s1) == set(TASKS.split(",")) and all(s1[t] != 0 for t in s1) and s1 != s2
    assert "mixture" not in h[0]  # proportional sampling: no mixture key
    # the log-variances are not in the model's weights: the run loads for prediction as any other
    run = mtdnn.load_run(unc)
    assert set(run.evaluate(["toycls"])["toycls"]) == {"dev"}


def test_plain_runs_write_no_new_history_keys(tmp_path, toy):
    out = tmp_path / "plain"
    assert main(toy(out, epochs=1)) == 0
    assert set(_history(out)[0]) == {"epoch", "step", "train_examples", "train_seconds", "eval_seconds",
                                     "train_loss", "dev", "skipped_batches", "glue_average"}


def test_pcgrad_steps_take_every_task(tmp_path, toy):
    out = tmp_path / "pcgrad"
    assert main(toy(out, "--mtl-method", "pcgrad")) == 0
    h = _history(out)
    assert [r["step"] for r in h] == [5, 10]  # ceil(14 / 3) steps of 3 batches
    assert all(r["mixture"] == {"toycls": 5, "toyreg": 5, "toyrank": 5} for r in h)


# ----------------------------------------------------------------------------- kill and resume
@pytest.mark.parametrize("method", [
    ["--sampling", "temperature", "--mtl-method", "uncertainty", "--log-grad-cosine", "2"],
    ["--mtl-method", "pcgrad", "--steps-per-epoch", "7"],
])
def test_kill_and_resume_is_bitwise_identical(tmp_path, toy, method, capsys):
    full, killed = tmp_path / "full", tmp_path / "killed"
    argv = lambda out: toy(out, "--checkpoint-every", "3", *method)  # noqa: E731
    assert main(argv(full)) == 0
    steps = _history(full)[0]["step"]
    env = {**os.environ, "MTDNN_TEST_FAULTS": f"kill_at_step={steps + 4}"}  # inside epoch 2
    proc = subprocess.run([sys.executable, "-m", "mtdnn", *argv(killed)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = json.loads((state_dir(RunDir(killed)) / "state.json").read_text())["loop"]
    assert saved["epoch"] == 2 and 0 < saved["batch"]
    # a changed method setting is refused on resume (it changes what is computed)
    assert main(["train", "--resume", str(killed), "--steps-per-epoch", "5"]) == 2
    assert "field 'steps_per_epoch'" in capsys.readouterr().err
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    kept = sorted(p.name for p in (full / "checkpoints").glob("epoch-*.safetensors"))
    assert kept == sorted(p.name for p in (killed / "checkpoints").glob("epoch-*.safetensors"))
    assert all(_same_weights(full, killed, int(name[6:-12])) for name in kept) and "epoch-2.safetensors" in kept
    ha, hb = _history(full), _history(killed)
    assert len(ha) == len(hb) == 2
    for a, b in zip(ha, hb):
        for key in ("step", "train_examples", "train_loss", "dev", "mixture", "uncertainty_log_variance",
                    "grad_cosine"):
            assert a.get(key) == b.get(key), key


# ----------------------------------------------------------------------------- mtdnn affinity
def test_affinity_command_ranks_writes_and_recommends(tmp_path, tiny_encoder, cache_dir, capsys):
    task_file, data_dir = write_toy_data(tmp_path)
    out = tmp_path / "aff"
    argv = ["affinity", "--target", "toycls", "--candidates", "toyreg,toyrank", "--task-files", str(task_file),
            "--data-dir", str(data_dir), "--encoder", tiny_encoder, "--cache-dir", cache_dir, "--output-dir",
            str(out), "--budget", "12", "--every", "4", "--batch-size", "4", "--max-seq-len", "32",
            "--threads", "1", "--no-hub", "--lr", "1e-3", "--recommend", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "affinity.json").read_text())
    assert data["target"] == "toycls" and data["tasks"] == ["toycls", "toyreg", "toyrank"]
    assert data["measured_after_steps"] == [4, 8, 12]
    ranking = [r["affinity"] for r in data["ranking"]]
    assert ranking == sorted(ranking, reverse=True) and {r["task"] for r in data["ranking"]} == {"toyreg", "toyrank"}
    for t in data["tasks"]:  # a step on a task lowers its own loss
        assert data["affinity"][t][t] > 0
    assert (out / "affinity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = [r["task"] for r in data["ranking"] if r["affinity"] > 0]
    assert f"recommended auxiliary tasks for toycls: {', '.join(best) or 'none'}" in printed
    assert f"mtdnn train --tasks {','.join(['toycls', *best])} --task-files {task_file}" in printed
    # the same measurement again gives the same numbers (deterministic)
    assert main(argv + ["--output-dir", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "affinity.json").read_text())["affinity"] == data["affinity"]


def test_affinity_bad_input_is_one_line(capsys):
    assert main(["affinity", "--target", "rte", "--candidates", "rte,mrpc"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "field 'candidates'" in err and "target 'rte'" in err
    assert main(["affinity", "--target", "rte", "--candidates", "mrpc,stsb,mrpc"]) == 2
    assert "task 'mrpc' twice" in capsys.readouterr().err
    assert main(["affinity", "--target", "rte", "--candidates", "mrpc", "--budget", "0"]) == 2
    assert "field 'budget'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- DDP
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDNN_TEST")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pcgrad", "uncertainty"])
def test_ddp_two_processes_match_one_process(tmp_path, data_dir, method):
    """Each rank projects the same global per-task gradients (PCGrad) / learns the same
    log-variances (uncertainty): two processes give the single process's weights. The uncertainty
    run also logs gradient cosines (rank 0 alone computes them, outside DDP's reducer)."""
    values = dict(tasks="rte0,stsb0", task_files=str(dropout_free_tasks(tmp_path / "tasks.yaml")),
                  encoder=str(tiny_encoder(tmp_path / "encoder", dropout=0.0)), data_dir=str(Path(data_dir).resolve()),
                  cache_dir=str(tmp_path / "cache"), epochs=2, batch_size=6, max_train_examples=23, max_seq_len=32,
                  lr=1e-3, selection="last", seed=7, threads=1, progress=False, allow_hub=False,
                  predict_test=False, mtl_method=method, max_eval_examples=40,
                  log_grad_cosine=2 if method == "uncertainty" else None)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(values))
    single = Path(mtdnn.train(mtdnn.make_config(load_config_file(tmp_path / "run.yaml"),
                                                {"output_dir": str(tmp_path / "single")})))
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mtdnn",
           "train", "--config", str(tmp_path / "run.yaml"), "--output-dir", str(ddp)]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    ws, wd = _weights(single, 2), _weights(ddp, 2)
    init = load_file(str(Path(values["encoder"]) / "model.safetensors"))
    assert max((ws["encoder." + k] - v).abs().max().item() for k, v in init.items()) > 1e-3  # it trained
    assert ws.keys() == wd.keys()
    worst = max((ws[k] - wd[k]).abs().max().item() for k in ws)
    assert worst <= 1e-5, f"weights differ by up to {worst}"
    hs, hd = _history(single), _history(ddp)
    if method == "uncertainty":
        for a, b in zip(hs, hd):
            assert b["uncertainty_log_variance"] == pytest.approx(a["uncertainty_log_variance"], abs=1e-5)
            assert b["grad_cosine"]["steps"] == a["grad_cosine"]["steps"] and a["grad_cosine"]["steps"]
            for ma, mb in zip(a["grad_cosine"]["matrices"], b["grad_cosine"]["matrices"]):
                assert [v for row in mb for v in row] == pytest.approx([v for row in ma for v in row], abs=1e-4)
    else:
        assert [h["mixture"] for h in hd] == [h["mixture"] for h in hs]
