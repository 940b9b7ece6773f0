"""The grid of experiments.adapters and its records, without running the grid: the cells of
docs/adapters.md exist with the right configs (the full fine-tuning rows are experiments.run's cells,
the LoRA rows differ only by the adapter settings), a cell's record holds hand-checkable parameter
counts and sizes (two tiny cells trained by the worker here), and the summary is built from records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import experiments.adapters
import experiments.run
from experiments.cells import Records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def adapters():
    return experiments.adapters


@pytest.fixture(scope="module")
def run():
    return experiments.run


def test_grid_has_every_required_cell(adapters, run):
    cells = {c.name: c for c in adapters.cells()}
    assert len(cells) == len(adapters.cells()), "cell names must be unique"
    base = {c.name: c for c in run.cells()}
    mt_dir = str(run.RUNS / run.MT_CELL)
    for row, (method, encoder, _) in adapters.ROWS.items():
        for task, seeds in [("rte", 3), ("mrpc", 3), ("stsb", 3), ("sst2", 1), ("cola", 1), ("scitail1", 3)]:
            for seed in range(1, seeds + 1):
                c = cells[f"adapters/{row}/{task}/s{seed}"]
                twin = base[c.reference]  # experiments.run's cell of the same task, seed and encoder
                assert twin.meta.get("seed", twin.meta.get("subset")) == seed
                assert (c.config.get("init_from") == mt_dir) == (encoder == "mt") and c.stream == (
                    "mt" if encoder == "mt" else "base")
                if method == "full":  # the very config of experiments.run's cell: its recorded score must reproduce
                    assert c.config == twin.config, c.name
                else:
                    assert {k: v for k, v in c.config.items() if k not in adapters.LORA} == {
                        k: v for k, v in twin.config.items() if k not in adapters.LORA}, c.name
                    assert c.config["adapter"] == "lora" and c.config["lr"] == 5e-4 and c.config["lora_rank"] == 8
    scitail = cells["adapters/lora-plain/scitail1/s2"].config
    assert scitail["tasks"] == ["scitail"] and scitail["max_train_examples"] == 236 and scitail["subset_seed"] == 2
    for lr in adapters.LR_CHECK:
        for task in adapters.SMALL:
            assert cells[f"adapters/lora-plain-lr{lr:g}/{task}/s1"].config["lr"] == lr


def test_worker_records_parameters_sizes_and_memory(adapters, tmp_path, tiny_encoder, data_dir, monkeypatch):
    """Two tiny cells (full fine-tuning and LoRA rank 4 on CoLA) through the worker: the counts are
    the tiny encoder's by hand, the sizes those of the stored tensors and files."""
    monkeypatch.setattr(adapters, "RECORDS", Records(tmp_path / "out"))
    monkeypatch.setattr(adapters, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(adapters, "SUMMARY", tmp_path / "summary.json")
    doc = tmp_path / "results.md"
    doc.write_text(f"before\n{adapters.BEGIN}\nNot run yet.\n{adapters.END}\nafter\n")
    monkeypatch.setattr(adapters, "DOC", doc)
    config = dict(tasks=["cola"], encoder=tiny_encoder, data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"),
                  max_train_examples=32, max_eval_examples=16, epochs=1, batch_size=16, max_seq_len=32, threads=1,
                  progress=False, allow_hub=False, predict_test=False, selection="last")
    meta = {"task": "cola", "seed": 1, "encoder": "plain", "lr": 1e-4}
    cells = [adapters.Cell("adapters/full-plain/cola/s1", config, "base", "glue/single/cola/s1",
                           {**meta, "row": "full-plain", "method": "full"}),
             adapters.Cell("adapters/lora-plain/cola/s1", {**config, "adapter": "lora", "lora_rank": 4}, "base",
                           "glue/single/cola/s1", {**meta, "row": "lora-plain", "method": "lora"})]
    monkeypatch.setattr(adapters, "cells", lambda: cells)
    for c in cells:
        assert adapters.worker(c.name, None) == 0
    full, lora = (json.loads(adapters.RECORDS.path(c.name).read_text()) for c in cells)
    encoder, head, adapter = 1_010_304, 32 * 2 + 2, 2 * 2 * (32 * 4 + 4 * 32)  # tiny BERT; cola's head; LoRA r=4
    n = encoder + head
    assert (full["trainable"], full["stored"], full["stored_bytes"]) == (n, n, 4 * n)  # fp32
    m = adapter + head
    assert (lora["trainable"], lora["stored"], lora["encoder_parameters"]) == (m, m, encoder)
    run_dir = tmp_path / "runs" / cells[1].name
    files = [run_dir / "heads" / "cola.safetensors", *(run_dir / "adapters" / "cola").iterdir()]
    assert lora["stored_bytes"] == sum(f.stat().st_size for f in files)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "encoder" / "model.safetensors").exists()
    recorded = json.loads((ROOT / "experiments/results/runs/glue__single__cola__s1.json").read_text())
    assert full["reference_score"] == recorded["metrics"]["cola"]["dev"]["score"]
    for r in (full, lora):
        assert r["score"] == r["metrics"]["cola"]["dev"]["score"]
        assert r["peak_rss_mb"] >= r["rss_before_training_mb"] > 0  # VmHWM: this process's peak so far
        assert 0 <= r["train_seconds"] <= r["wall_seconds"]
    # the summary from these two records
    assert adapters.summarize() == 0
    summary = json.loads((tmp_path / "summary.json").read_text())["adapters"]
    assert summary["scores"]["lora-plain"]["cola"] == {"mean": round(lora["score"], 2), "sd": 0.0, "n": 1}
    assert summary["cost"]["full-plain"]["trainable_mean"] == encoder + head
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "Not run yet" not in text
    assert f"| LoRA, plain encoder | {adapter + head:,} ({adapter + head:,}–{adapter + head:,}) |" in text


def test_peak_memory_of_a_cell_is_its_own_not_its_runners(adapters):
    """A cell's process is forked by the runner: its peak must not include the runner's (ru_maxrss
    does, through the fork), and a record whose peak is the value before training is not shown."""
    import subprocess
    import sys

    ballast = bytearray(400 * 2**20)  # the runner holds 400 MB
    ballast[::4096] = b"x" * len(ballast[::4096])
    child = subprocess.run([sys.executable, "-c", "import experiments.adapters as a; print(a._rss_mb())"], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    assert float(child.stdout.split()[-1]) < 300, child.stdout
    del ballast
    assert adapters._peak_measured({"peak_rss_mb": 900.0, "rss_before_training_mb": 400.0})
    assert not adapters._peak_measured({"peak_rss_mb": 2968.5, "rss_before_training_mb": 2968.5})
