"""Distributed training: 2 processes with gloo on CPU through torchrun, on a dropout-free
tiny encoder and slices of RTE (SAN head) + STS-B, compared with a single-process run of the same
global batch and seed; a rank that dies or hangs ends the job; the sharding and loss-scaling rules.

The torchrun runs take ~20-30 s each on a 2-core machine (process start-up dominates)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mtdnn
from mtdnn.cli import build_parser
from mtdnn.commands.config_flags import config_from_args
from mtdnn.config import load_config_file
from mtdnn.errors import ConfigError
from mtdnn.testing import dropout_free_tasks, tiny_encoder
from mtdnn.training.distributed import Distributed, report_crash

EPOCHS = 2
RUN_TIMEOUT = 300  # a clean run takes ~30 s: far beyond it means a hang
FAIL_TIMEOUT = 120  # a failing run must end within this


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def base(tmp_path_factory, data_dir) -> dict:
    d = tmp_path_factory.mktemp("dist")
    # 29 rows, global batch 7: batches of 7 rows split 3/4 over the ranks, and a last batch of one
    # row, where rank 1's share is empty; 2 accumulation steps exercise no_sync
    values = dict(tasks="rte0,stsb0", task_files=str(dropout_free_tasks(d / "tasks.yaml")),
                  encoder=str(tiny_encoder(d / "encoder", dropout=0.0)), data_dir=str(Path(data_dir).resolve()),
                  cache_dir=str(d / "cache"), epochs=EPOCHS, batch_size=7, max_train_examples=29,
                  max_seq_len=32, lr=1e-3, grad_accum_steps=2, selection="last", seed=7, threads=1,
                  progress=False, allow_hub=False, eval_batch_size=64)
    (d / "run.yaml").write_text(yaml.safe_dump(values))
    return {"dir": d, "config": d / "run.yaml", "values": values}


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    for k in [k for k in env if k.startswith("MTDNN_TEST")]:
        del env[k]
    env.update(extra)
    return env


def _torchrun(base: dict, out: Path, *flags: str, timeout: int = RUN_TIMEOUT, **env: str):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mtdnn", "train", "--config", str(base["config"]), "--output-dir", str(out), *flags]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not end within {timeout} s (a hang):\n{e.stdout}\n{e.stderr}")
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


@pytest.fixture(scope="module")
def single(base) -> Path:
    """The reference: one process (in this pytest process), same config and global batch."""
    cfg = mtdnn.make_config(load_config_file(base["config"]), {"output_dir": str(base["dir"] / "single")})
    return Path(mtdnn.train(cfg))


@pytest.fixture(scope="module")
def ddp(base, single) -> dict:  # after `single`: the tokenised-data cache is warm
    out, dump = base["dir"] / "ddp", base["dir"] / "dump"
    rc, log, _ = _torchrun(base, out, MTDNN_TEST_FAULTS=f"dump_dir={dump}")
    return {"rc": rc, "log": log, "out": out, "dump": dump}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path))


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]


def _assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = _weights(a), _weights(b)
    assert sorted(wa) == sorted(wb)
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= atol, f"weights differ by up to {worst}"


def _assert_same_results(run: Path, ref: Path) -> None:
    h, r = _history(run), _history(ref)
    assert len(h) == len(r) == EPOCHS  # one history line per epoch: only rank 0 appended
    for a, b in zip(h, r):
        assert (a["epoch"], a["step"], a["train_examples"]) == (b["epoch"], b["step"], b["train_examples"])
        assert a["train_loss"].keys() == b["train_loss"].keys()
        for t in a["train_loss"]:
            assert a["train_loss"][t] == pytest.approx(b["train_loss"][t], rel=1e-5, abs=1e-6)
        assert a["dev"].keys() == b["dev"].keys() == {"rte0", "stsb0"}
        for t, splits in b["dev"].items():
            assert splits and a["dev"][t].keys() == splits.keys(), t
            for sp, metrics in splits.items():
                assert metrics and a["dev"][t][sp].keys() == metrics.keys(), (t, sp)
                for k, v in metrics.items():  # percent; near-constant STS-B outputs make pearson touchy
                    assert a["dev"][t][sp][k] == pytest.approx(v, abs=1e-2), (t, sp, k)
    m, mr = json.loads((run / "metrics.json").read_text()), json.loads((ref / "metrics.json").read_text())
    assert m.keys() == mr.keys() == {"rte0", "stsb0"}
    # every test example predicted once, by the processes together, written once by rank 0
    for name, n_rows in (("RTE.tsv", 3000), ("STS-B.tsv", 1379)):
        got = (run / "submissions" / name).read_text().splitlines()
        want = (ref / "submissions" / name).read_text().splitlines()
        assert len(got) == len(want) == n_rows + 1
        assert [g.split("\t")[0] for g in got] == [w.split("\t")[0] for w in want]
        if name == "STS-B.tsv":
            assert np.allclose([float(g.split("\t")[1]) for g in got[1:]],
                               [float(w.split("\t")[1]) for w in want[1:]], atol=2e-3)
        else:
            assert sum(g != w for g, w in zip(got, want)) <= 1  # a near-tie may flip on float noise


# ----------------------------------------------------------------------------- torchrun runs
@pytest.mark.slow
def test_ddp_two_processes_match_single_process(ddp, single, base):
    assert ddp["rc"] == 0, ddp["log"][-4000:]
    out = ddp["out"]
    # the replicas hold identical parameters after every epoch
    for epoch in range(1, EPOCHS + 1):
        r0 = _weights(ddp["dump"] / f"rank0-epoch{epoch}.safetensors")
        r1 = _weights(ddp["dump"] / f"rank1-epoch{epoch}.safetensors")
        assert sorted(r0) == sorted(r1)
        assert all(torch.equal(r0[k], r1[k]) for k in r0), f"ranks differ after epoch {epoch}"
    # training moved the weights well beyond the tolerance, so the comparison means something
    init = _weights(Path(base["values"]["encoder"]) / "model.safetensors")
    final = _weights(out / f"checkpoints/epoch-{EPOCHS}.safetensors")
    assert max((final["encoder." + k] - v).abs().max().item() for k, v in init.items()) > 1e-3
    # the same final weights, losses and dev metrics as one process with the same global batch
    _assert_same_weights(out / f"checkpoints/epoch-{EPOCHS}.safetensors",
                         single / f"checkpoints/epoch-{EPOCHS}.safetensors")
    _assert_same_results(out, single)
    # only rank 0 logs and writes: one epoch line each, one TensorBoard event file
    assert len(re.findall(r"epoch 1: rte0/dev", ddp["log"])) == 1, ddp["log"][-4000:]
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    assert "distributed: 2 processes (gloo, DDP)" in ddp["log"]


@pytest.mark.slow
def test_fsdp_two_processes_match_single_process(base, single):
    out = base["dir"] / "fsdp"
    rc, log, _ = _torchrun(base, out, "--parallel", "fsdp", "--activation-checkpointing")
    assert rc == 0, log[-4000:]
    assert "distributed: 2 processes (gloo, FSDP)" in log
    _assert_same_weights(out / f"checkpoints/epoch-{EPOCHS}.safetensors",
                         single / f"checkpoints/epoch-{EPOCHS}.safetensors")
    _assert_same_results(out, single)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_a_failed_rank_ends_the_job(base, single, mode):
    """Rank 1 dies (os._exit(17), no clean-up) or hangs at batch 2 of epoch 1: the job ends with
    an error, within a bounded time (torchrun stops the others at once; a hung peer: the
    process-group timeout, 15 s here: above the ranks' start-up skew on a loaded 2-core machine),
    and writes no results."""
    out = base["dir"] / f"fail-{mode}"
    timeout = ["--dist-timeout", "15"] if mode == "hang" else []
    rc, log, seconds = _torchrun(base, out, *timeout, "--no-predict-test",
                                 timeout=FAIL_TIMEOUT, MTDNN_TEST_FAULTS=f"fail_rank=1,fail_mode={mode}")
    assert rc != 0, log[-4000:]
    assert "ChildFailedError" in log or "FAILED" in log
    if mode == "exit":
        assert re.search(r"exitcode\s*:\s*17", log), log[-4000:]
    else:
        assert "Timed out" in log, log[-4000:]  # rank 0's collective gave up after --dist-timeout
        assert seconds < FAIL_TIMEOUT
    assert not (out / "metrics.json").exists()
    assert not (out / "history.jsonl").exists()


# ----------------------------------------------------------------------------- units
class _Split:
    def __init__(self, labels, groups):
        self.labels, self.groups = np.asarray(labels), np.asarray(groups)


def test_shard_rows_contiguous_and_complete():
    idx = np.array([9, 4, 7, 1, 0, 3, 8])
    groups = np.arange(10)
    shares = [Distributed(rank=r, world_size=2).shard(idx, groups) for r in range(2)]
    assert [s.tolist() for s in shares] == [[9, 4, 7], [1, 0, 3, 8]]
    shares = [Distributed(rank=r, world_size=3).shard(idx[:1], groups) for r in range(3)]
    assert [len(s) for s in shares] == [0, 0, 1]
    assert Distributed().shard(idx, groups).tolist() == idx.tolist()  # one process: the whole batch


def test_shard_keeps_ranking_groups_whole():
    groups = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])     # row -> question
    idx = np.array([5, 3, 4, 6, 7, 8, 9, 0, 1, 2])        # a batch: whole groups, one after another
    shares = [Distributed(rank=r, world_size=3).shard(idx, groups) for r in range(3)]
    assert np.concatenate(shares).tolist() == idx.tolist()
    for s in shares:  # no question split across ranks
        assert len(s) > 0
        assert all(set(groups[s]).isdisjoint(groups[o]) for o in shares if o is not s)


def test_share_factor_is_world_over_global_units():
    split = _Split(labels=[1, 0, 1, 0, 1, 0, 1], groups=np.arange(7))
    idx = np.arange(7)
    rows, factor = Distributed(rank=1, world_size=2).share(split, idx, "classification")
    assert rows.tolist() == [3, 4, 5, 6] and factor == pytest.approx(2 / 7)
    rows, factor = Distributed(rank=0, world_size=2).share(split, idx[:1], "regression")
    assert rows.tolist() == [0] and factor == 0.0  # empty share: one row, contributes nothing
    rows, factor = Distributed(rank=1, world_size=2).share(split, idx[:1], "regression")
    assert rows.tolist() == [0] and factor == pytest.approx(2.0)  # the rank that holds the row
    rows, factor = Distributed().share(split, idx, "classification")
    assert rows.tolist() == idx.tolist() and factor is None  # one process: the model's plain mean
    # ranking: the units are questions with a positive answer (q2 has none)
    rank = _Split(labels=[1, 0, 0, 1, 0, 0], groups=[0, 0, 1, 1, 2, 2])
    rows, factor = Distributed(rank=0, world_size=2).share(rank, np.arange(6), "ranking")
    assert rows.tolist() == [0, 1] and factor == pytest.approx(2 / 2)


def test_not_launched_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = mtdnn.make_config(overrides={"tasks": "rte", "device": "cpu", "parallel": "fsdp"})
    ctx = Distributed.from_config(cfg)
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled, ctx.fsdp) == (0, 1, True, False, False)


def test_distributed_options_parse_and_validate():
    args = build_parser().parse_args(["train", "--tasks", "rte", "--parallel", "fsdp", "--dist-timeout", "30",
                                      "--activation-checkpointing", "--precision", "bf16"])
    cfg = config_from_args(args)
    assert (cfg.parallel, cfg.dist_timeout, cfg.activation_checkpointing) == ("fsdp", 30, True)
    defaults = mtdnn.make_config(overrides={"tasks": "rte"})
    assert (defaults.parallel, defaults.activation_checkpointing) == ("ddp", False)
    with pytest.raises(ConfigError, match="parallel"):
        mtdnn.make_config(overrides={"tasks": "rte", "parallel": "fsdp", "precision": "fp16"})
    with pytest.raises(ConfigError, match="parallel"):
        mtdnn.make_config(overrides={"tasks": "rte", "parallel": "zero3"})
    with pytest.raises(ConfigError, match="dist_timeout"):
        mtdnn.make_config(overrides={"tasks": "rte", "dist_timeout": 0})


def test_report_crash_records_the_error_for_torchrun(tmp_path, monkeypatch, capsys):
    err_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(err_file))
    monkeypatch.setenv("RANK", "3")
    try:
        raise ValueError("boom")
    except ValueError as e:
        assert report_crash(e) == 1
    assert "error on rank 3: ValueError: boom" in capsys.readouterr().err
    assert "ValueError: boom" in json.loads(err_file.read_text())["message"]["message"]
