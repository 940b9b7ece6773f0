"""Atomic file replacement: the one function (temp file beside the target, fsync, rename, fsync of the
directory) and every writer of mtdnn that replaces a file going through it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from mtdnn import atomic as atomic_mod
from mtdnn import run_dir as run_dir_mod
from mtdnn.data.tokenized import tokenize_split
from mtdnn.evaluation import write_submission
from mtdnn.model.multitask import load_tokenizer
from mtdnn.records import RawSplit
from mtdnn.run_dir import RunDir, atomic_path, atomic_write, load_weights, save_weights, write_json
from mtdnn.tasks.schema import parse_task
from mtdnn.training import checkpoint


@pytest.fixture()
def fsyncs(monkeypatch) -> list[str]:
    """Every os.fsync call, as 'file' or 'dir' (what the descriptor is), still really done."""
    kinds: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        kinds.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return kinds


def test_atomic_write_fsyncs_file_then_directory(tmp_path, fsyncs):
    target = tmp_path / "out.txt"
    with atomic_write(target) as f:
        f.write("héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert fsyncs == ["file", "dir"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_error_leaves_target_and_no_temp_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as f:
            f.write("new, half written")
            raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_temp_name_and_cleanup(tmp_path, fsyncs):
    target = tmp_path / "sub" / "arr.npy"
    with atomic_path(target) as tmp:
        # beside the target, named as reset_run_state's '.*.tmp' glob expects
        assert tmp.parent == target.parent and tmp.name.startswith(".arr.npy") and tmp.name.endswith(".tmp")
        assert list(target.parent.glob(".*.tmp")) == [tmp]
        with open(tmp, "wb") as f:
            np.save(f, np.arange(3))
        assert not target.exists()
    assert np.load(target).tolist() == [0, 1, 2]
    assert fsyncs == ["file", "dir"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert np.load(target).tolist() == [0, 1, 2]
    assert [p.name for p in target.parent.iterdir()] == ["arr.npy"]


def test_directory_fsync_unsupported_is_tolerated(tmp_path, monkeypatch):
    real = os.fsync

    def no_dir_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")
        real(fd)

    monkeypatch.setattr(os, "fsync", no_dir_fsync)
    write_json(tmp_path / "m.json", {"a": 1})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


@pytest.fixture()
def replaced(monkeypatch) -> list[str]:
    """The names of the files renamed into place through replace_durably (of mtdnn.atomic, also
    imported by run_dir)."""
    names: list[str] = []
    real = atomic_mod.replace_durably

    def spy(tmp, path) -> None:
        names.append(Path(path).name)
        real(tmp, path)

    monkeypatch.setattr(atomic_mod, "replace_durably", spy)
    monkeypatch.setattr(run_dir_mod, "replace_durably", spy)
    return names


def test_weights_and_checkpoint_tensors_replace_atomically(tmp_path, replaced, fsyncs):
    state = {"w": torch.arange(4, dtype=torch.float32)}
    save_weights(tmp_path / "checkpoints" / "epoch-1.safetensors", state, {"epoch": "1"})
    checkpoint._save_tensors(tmp_path / "checkpoints" / "resume" / "model-x.safetensors", state)
    assert replaced == ["epoch-1.safetensors", "model-x.safetensors"]
    assert fsyncs == ["file", "dir", "file", "dir"]
    assert torch.equal(load_weights(tmp_path / "checkpoints" / "epoch-1.safetensors")["w"], state["w"])
    assert torch.equal(load_weights(tmp_path / "checkpoints" / "resume" / "model-x.safetensors")["w"], state["w"])
    assert not list(tmp_path.rglob("*.tmp"))


def test_submission_json_and_cache_replace_atomically(tmp_path, tiny_encoder, replaced):
    write_submission(tmp_path / "RTE.tsv", ["0", "1"], ["entailment", "not_entailment"])
    assert (tmp_path / "RTE.tsv").read_text() == "index\tprediction\n0\tentailment\n1\tnot_entailment\n"
    write_json(tmp_path / "metrics.json", {"rte": 1.5})
    task = parse_task({"name": "t", "type": "classification", "input": "single", "labels": ["a", "b"],
                       "splits": {"train": {"role": "train", "path": "x", "columns": {"text_a": 0, "label": 1}}}},
                      "test")
    raw = RawSplit("t", "train", "x", ids=["0"], text_a=["a cat"], text_b=[None], labels=["b"], lines=[1])
    tokenize_split(task, raw, load_tokenizer(tiny_encoder), 16, cache_dir=tmp_path / "cache")
    assert replaced[:2] == ["RTE.tsv", "metrics.json"]
    assert len(replaced) == 3 and replaced[2].startswith("t.train.") and replaced[2].endswith(".npz")
    assert not list(tmp_path.rglob("*.tmp"))


def test_run_setup_files_replace_atomically(tmp_path, tiny_encoder, replaced):
    from transformers import AutoConfig

    tokenizer = load_tokenizer(tiny_encoder)
    run = RunDir(tmp_path / "run")
    run.write_setup({"seed": 1}, [], tokenizer, AutoConfig.from_pretrained(tiny_encoder))
    encoder_files = sorted(p.name for p in run.encoder_dir.iterdir())
    assert "config.json" in encoder_files and "tokenizer_config.json" in encoder_files
    assert sorted(replaced) == sorted(["config.yaml", "tasks.yaml", *encoder_files])
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml", "encoder", "tasks.yaml"]
    assert load_tokenizer(str(run.encoder_dir))("a cat")["input_ids"] == tokenizer("a cat")["input_ids"]
