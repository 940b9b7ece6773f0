"""The encoder-family matrix (docs/encoders.md): BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT, XLM-RoBERTa,
DeBERTa-v3 (DebertaV2 classes) and ModernBERT, each a tiny random model with a tokenizer of its own
kind (tests/encoder_families.py), through what a GLUE user runs: ``mtdnn train`` on a pair task
with a SAN head (RTE), a regression task (STS-B) and a ranking task (on STS-B text), ``--init-from``,
``mtdnn evaluate``, ``mtdnn predict``, ``mtdnn export`` (its self-check against the run), ``--resume``
of a run cut after epoch 1, and 2-process DDP (torchrun, gloo) for RoBERTa and DeBERTa-v3.

A family the installed transformers cannot build is skipped with its reason (shown by ``-ra``).
Tiny models, 32 rows per task, 2 epochs, 48 tokens, one torch thread; tokenizers and models are
built once per session. Measured on 2 CPU cores shared with other work: ~3.5 min in all, of which
the eight families' runs ~1.5 min, the two torchrun jobs ~70 s and the ONNX export ~45 s.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from encoder_families import FAMILIES, build_encoder, family, glue_lines, missing_reason, write_ranking_task
from mtdnn.api import load_run
from mtdnn.cli import build_parser, main
from mtdnn.commands.config_flags import config_from_args
from mtdnn.data.readers import read_split
from mtdnn.data.tokenized import SEG_SPECIAL, tokenize_split
from mtdnn.model.multitask import MultiTaskModel, load_encoder, load_tokenizer
from mtdnn.run_dir import RunDir
from mtdnn.tasks.registry import builtin_tasks
from mtdnn.testing import dropout_free_tasks
from mtdnn.training.checkpoint import state_dir
from mtdnn.training.setup import build_setup

pytestmark = pytest.mark.slow

NAMES = [f.name for f in FAMILIES]
# family -> (attention, token type ids passed to the model, last-layer [CLS] pruning used)
EXPECTED = {
    "bert": ("sdpa", True, True), "roberta": ("sdpa", False, True), "distilbert": ("sdpa", False, False),
    "electra": ("sdpa", True, True), "albert": ("sdpa", True, False), "xlm-roberta": ("sdpa", False, True),
    "deberta-v3": ("eager", False, False), "modernbert": ("sdpa", False, False),
}
DDP_FAMILIES = ["roberta", "deberta-v3"]
EPOCHS, MAX_LEN, N_TRAIN, N_EVAL = 2, 48, 32, 24
TASKS = "rte,stsb,rank"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def encoders(tmp_path_factory, data_dir):
    """``get(name, dropout_free=False)``: the family's tiny encoder folder, built once per session."""
    root = tmp_path_factory.mktemp("families")
    lines = glue_lines(Path(data_dir))
    built: dict[tuple[str, bool], Path] = {}

    def get(name: str, dropout_free: bool = False) -> Path:
        fam = family(name)
        reason = missing_reason(fam)
        if reason:
            pytest.skip(f"{name}: {reason}")
        if (name, dropout_free) not in built:
            folder = root / (name + ("-nodrop" if dropout_free else ""))
            built[(name, dropout_free)] = build_encoder(fam, lines, folder, dropout_free=dropout_free)
        return built[(name, dropout_free)]

    return get


@pytest.fixture(scope="session")
def rank_task(tmp_path_factory, data_dir) -> Path:
    return write_ranking_task(tmp_path_factory.mktemp("rank"), Path(data_dir))


@pytest.fixture(scope="session")
def tok_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tok-cache")


def _train_argv(encoder: Path, out: Path, rank_task: Path, data_dir, cache: Path, *extra: str,
                tasks: str = TASKS, epochs: int = EPOCHS) -> list[str]:
    return ["train", "--task-file", str(rank_task), "--tasks", tasks, "--data-dir", str(Path(data_dir).resolve()),
            "--encoder", str(encoder), "--output-dir", str(out), "--epochs", str(epochs), "--batch-size", "8",
            "--max-train-examples", str(N_TRAIN), "--max-eval-examples", str(N_EVAL), "--max-seq-len",
            str(MAX_LEN), "--threads", "1", "--no-progress", "--no-hub", "--no-predict-test", "--cache-dir",
            str(cache), "--lr", "1e-3", "--seed", "3", "--pair-head", "san", *extra]


@pytest.fixture(scope="module", params=NAMES)
def trained(request, encoders, rank_task, data_dir, tok_cache, tmp_path_factory) -> dict:
    """The family's 2-epoch run on RTE (SAN), STS-B and the ranking task."""
    name = request.param
    enc = encoders(name)
    out = tmp_path_factory.mktemp(f"run-{name}") / "run"
    argv = _train_argv(enc, out, rank_task, data_dir, tok_cache)
    assert main(argv) == 0, name
    return {"name": name, "encoder": enc, "run": out, "argv": argv}


def _history(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "history.jsonl").read_text().splitlines() if ln.strip()]


# ----------------------------------------------------------------------------- per family, no training
@pytest.mark.parametrize("name", NAMES)
def test_loads_with_its_attention_token_types_and_speed_path(name, encoders, caplog):
    attention, token_types, pruning = EXPECTED[name]
    path = encoders(name)
    with caplog.at_level(logging.INFO):
        enc = load_encoder(str(path))
        model = MultiTaskModel(enc, [builtin_tasks()["sst2"]])
        used = model.enable_cls_only()
    assert enc.config._attn_implementation == attention
    assert f"{attention} attention" in caplog.text
    if attention != "sdpa":
        assert "has no SDPA attention" in caplog.text
    assert model.token_types is token_types
    assert used is pruning
    if not pruning:  # switched off with a log line saying so
        assert "last-layer [CLS] pruning not used" in caplog.text


@pytest.mark.parametrize("name", NAMES)
def test_san_segments_follow_the_tokenizers_sequence_ids(name, encoders, data_dir):
    """Premise tokens (seg 0) are the first text's tokens, hypothesis tokens (seg 1) the second's,
    the rest special tokens, whatever the layout ([CLS] A [SEP] B [SEP], <s> A </s></s> B </s>),
    with or without token type ids, WordPiece, byte-level BPE or Unigram."""
    tok = load_tokenizer(str(encoders(name)))
    specials = set(tok.all_special_ids)
    truncated = whole = 0
    for task_name in ("rte", "stsb"):  # long premises (mostly truncated), short pairs (mostly whole)
        task = builtin_tasks()[task_name]
        raw = read_split(task, "dev", Path(data_dir), allow_hub=False).select(list(range(30)))
        n_cut = _check_segments(name, tok, raw, tokenize_split(task, raw, tok, MAX_LEN), specials)
        truncated, whole = truncated + n_cut, whole + len(raw) - n_cut
    assert truncated and whole  # both cases were seen


def _check_segments(name: str, tok, raw, split, specials: set[int]) -> int:
    """Check every row's segments; returns the number of truncated rows."""
    truncated = 0
    for i in range(len(split)):
        ids_arr, _, seg_arr = split.row(i)
        ids, seg = ids_arr.tolist(), seg_arr.tolist()
        a = tok(raw.text_a[i], add_special_tokens=False)["input_ids"]
        b = tok(raw.text_b[i], add_special_tokens=False)["input_ids"]
        first = [t for t, s in zip(ids, seg) if s == 0]
        second = [t for t, s in zip(ids, seg) if s == 1]
        assert first and second, (name, i)
        assert first == a[:len(first)] and second == b[:len(second)], (name, i)
        assert all(t in specials for t, s in zip(ids, seg) if s == SEG_SPECIAL), (name, i)
        assert 2 <= seg.count(SEG_SPECIAL) <= 4 and set(seg) == {0, 1, SEG_SPECIAL}
        if len(ids) < MAX_LEN:
            assert (len(first), len(second)) == (len(a), len(b)), (name, i)
        else:
            truncated += 1
    return truncated


# ----------------------------------------------------------------------------- per family, end to end
def test_train_pair_san_regression_and_ranking(trained):
    run = trained["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"rte", "stsb", "rank"}
    assert set(metrics["rte"]["dev"]) == {"accuracy", "score"}
    assert set(metrics["stsb"]["dev"]) == {"pearson", "spearman", "score"}
    assert set(metrics["rank"]["dev"]) == {"accuracy", "score"}
    assert all(math.isfinite(v) for t in metrics.values() for m in t.values() for v in m.values())
    hist = _history(run)
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(math.isfinite(v) and v > 0 for h in hist for v in h["train_loss"].values())
    # every encoder weight was trained (an unused one would also stop DDP)
    init = load_encoder(str(trained["encoder"])).state_dict()
    final = load_file(str(run / f"checkpoints/epoch-{EPOCHS}.safetensors"))
    params = {n for n, _ in load_encoder(str(trained["encoder"])).named_parameters()}
    assert params and params <= {k[len("encoder."):] for k in final}
    frozen = [k for k in params if torch.equal(init[k], final["encoder." + k])]
    assert not frozen, f"{trained['name']}: weights not trained: {frozen}"


def test_init_from_starts_from_the_run(trained, rank_task, data_dir, tok_cache, tmp_path):
    run, enc = trained["run"], trained["encoder"]
    argv = _train_argv(enc, tmp_path / "stage2", rank_task, data_dir, tok_cache, "--init-from", str(run),
                       tasks="rte", epochs=1)
    s = build_setup(config_from_args(build_parser().parse_args(argv)), with_train=False)
    state = load_file(str(RunDir(run).checkpoint(EPOCHS)))
    for k, v in s.model.encoder.state_dict().items():
        assert torch.equal(v, state["encoder." + k]), k
    for k, v in s.model.heads["rte"].state_dict().items():
        assert torch.equal(v, state["heads.rte." + k]), k
    assert main(argv) == 0
    assert set(json.loads((tmp_path / "stage2" / "metrics.json").read_text())) == {"rte"}


def test_evaluate_reproduces_the_runs_metrics(trained, tmp_path, capsys):
    run = trained["run"]
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(run), "--max-eval-examples", str(N_EVAL), "--device", "cpu",
                 "--output", str(out)]) == 0
    got, want = json.loads(out.read_text()), json.loads((run / "metrics.json").read_text())
    assert got.keys() == want.keys()
    for task, splits in want.items():
        for split, metrics in splits.items():
            for k, v in metrics.items():
                assert got[task][split][k] == pytest.approx(v, abs=1e-3), (task, split, k)
    assert "rte" in capsys.readouterr().out


def test_predict_a_file(trained, data_dir, tmp_path):
    run = trained["run"]
    with open(Path(data_dir) / "glue/RTE/dev.tsv", encoding="utf-8", newline="") as f:
        rows = [r for _, r in zip(range(12), csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))]
    src, dst = tmp_path / "in.tsv", tmp_path / "out.tsv"
    src.write_text("sentence1\tsentence2\n" + "".join(f"{r['sentence1']}\t{r['sentence2']}\n" for r in rows),
                   encoding="utf-8")
    assert main(["predict", str(run), "--task", "rte", "--input", str(src), "--output", str(dst),
                 "--device", "cpu"]) == 0
    lines = [ln.split("\t") for ln in dst.read_text().splitlines()]
    assert lines[0] == ["index", "prediction", "p_entailment", "p_not_entailment"]
    assert len(lines) == 13
    for _, label, p0, p1 in lines[1:]:
        assert float(p0) + float(p1) == pytest.approx(1.0, abs=1e-5)
        assert label == ("entailment" if float(p0) >= float(p1) else "not_entailment")
    api = load_run(run, device="cpu").predict("rte", [r["sentence1"] for r in rows], [r["sentence2"] for r in rows])
    assert [ln[1] for ln in lines[1:]] == api


def _export(run: Path, out: Path, fmt: str, capsys, *extra: str) -> dict[str, float]:
    """``mtdnn export`` (docs/deploy.md) of ``run``; returns the self-check's largest difference per task
    between the exported model's outputs and mtdnn's on dev rows."""
    capsys.readouterr()
    assert main(["export", str(run), "--format", fmt, "--output", str(out), *extra]) == 0, capsys.readouterr().err[-2000:]
    check = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("largest difference"))
    return {task: float(d) for task, d in (item.split() for item in check.split(": ", 1)[1].split(", "))}


def test_export_matches_the_run(trained, tmp_path, capsys):
    """The Hugging Face export gives mtdnn's outputs (the self-check, at the exported epoch: the last
    one by default), and with --per-task-epochs mtdnn's predictions on it are the run's, each task at
    the epoch it keeps (here RTE may keep another epoch than the last, so only that export can match)."""
    run = trained["run"]
    diffs = _export(run, tmp_path / "export", "hf", capsys)
    assert set(diffs) == {"rte", "stsb", "rank"} and max(diffs.values()) <= 1e-4, diffs
    out = tmp_path / "export-per-task"
    diffs = _export(run, out, "hf", capsys, "--per-task-epochs")
    assert set(diffs) == {"rte", "stsb", "rank"} and max(diffs.values()) <= 1e-4, diffs
    rows = ["A man is playing a guitar.", "The cat sat on the mat."], ["A person plays music.", "Nobody is here."]
    exported, own = (_rte_predictions(d, rows) for d in (out, run))
    assert np.allclose(exported.outputs, own.outputs, atol=1e-5), (exported.outputs, own.outputs)
    # the same classes, except where the tiny random model's two probabilities tie within rounding
    clear = np.abs(own.outputs[:, 0] - own.outputs[:, 1]) > 1e-5
    assert (exported.preds[clear] == own.preds[clear]).all()


def _rte_predictions(run_dir: Path, rows: tuple[list[str], list[str]]):
    """A run's (or an export's) raw RTE predictions on sentence pairs: probabilities and classes."""
    from mtdnn.records import RawSplit

    raw = RawSplit("rte", "predict", "<test>", ids=["0", "1"], text_a=rows[0], text_b=rows[1],
                   labels=[None, None], lines=[1, 2])
    return load_run(run_dir, device="cpu").predictions("rte", raw)


@pytest.mark.parametrize("trained", ["deberta-v3"], indirect=True)
def test_onnx_export_of_deberta_v3(trained, tmp_path, capsys):
    """ONNX for one family (eager attention, relative positions: the hardest to trace). Every
    family exported to ONNX when this was written (30-45 s each on 2 CPU cores, too slow for the matrix)."""
    diffs = _export(trained["run"], tmp_path / "onnx", "onnx", capsys)
    assert set(diffs) == {"rte", "stsb", "rank"} and max(diffs.values()) <= 1e-4, diffs


class _Cut(Exception):
    """Stops a run right after the end of its first epoch (its resumable state saved)."""


def test_resume_after_epoch_1_matches_the_uninterrupted_run(trained, tmp_path, monkeypatch):
    import mtdnn.training.loop as loop

    end_epoch = loop.end_epoch

    def cut_after_first(job, state, *args):
        end_epoch(job, state, *args)
        raise _Cut

    argv = list(trained["argv"])
    argv[argv.index("--output-dir") + 1] = str(tmp_path / "cut")
    monkeypatch.setattr(loop, "end_epoch", cut_after_first)
    try:  # the CLI may report the unexpected exception (non-zero exit) or let it through
        rc = main(argv)
    except _Cut:
        rc = None
    monkeypatch.setattr(loop, "end_epoch", end_epoch)
    assert rc != 0
    assert [h["epoch"] for h in _history(tmp_path / "cut")] == [1]
    assert state_dir(RunDir(tmp_path / "cut")).is_dir() and not (tmp_path / "cut" / "metrics.json").exists()
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    full, cut = trained["run"], tmp_path / "cut"
    a = load_file(str(full / f"checkpoints/epoch-{EPOCHS}.safetensors"))
    b = load_file(str(cut / f"checkpoints/epoch-{EPOCHS}.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), trained["name"]
    assert [h["train_loss"] for h in _history(full)] == [h["train_loss"] for h in _history(cut)]
    assert json.loads((full / "metrics.json").read_text()) == json.loads((cut / "metrics.json").read_text())


# ----------------------------------------------------------------------------- 2-process DDP
def _torchrun(config: Path, out: Path, dump: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDNN_TEST")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               MTDNN_TEST_FAULTS=f"dump_dir={dump}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mtdnn",
           "train", "--config", str(config), "--output-dir", str(out)]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not end within 300 s (a hang):\n{e.stdout}\n{e.stderr}")


@pytest.mark.parametrize("name", DDP_FAMILIES)
def test_ddp_two_processes_match_one(name, encoders, data_dir, tok_cache, tmp_path):
    """Dropout-free model and tasks: 2 processes (global batch 8 split 4/4, a last batch split
    unevenly) give the weights of one process, and the replicas stay identical."""
    import yaml

    import mtdnn
    from mtdnn.config import load_config_file

    enc = encoders(name, dropout_free=True)
    values = dict(tasks="rte0,stsb0", task_files=str(dropout_free_tasks(tmp_path / "tasks.yaml")),
                  encoder=str(enc), data_dir=str(Path(data_dir).resolve()), cache_dir=str(tok_cache), epochs=1,
                  batch_size=8, max_train_examples=29, max_eval_examples=16, max_seq_len=MAX_LEN, lr=1e-3,
                  selection="last", seed=5, threads=1, progress=False, allow_hub=False, predict_test=False)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(values))
    single = Path(mtdnn.train(mtdnn.make_config(load_config_file(config), {"output_dir": str(tmp_path / "one")})))
    p = _torchrun(config, tmp_path / "ddp", tmp_path / "dump")
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "distributed: 2 processes (gloo, DDP)" in p.stdout + p.stderr
    r0, r1 = (load_file(str(tmp_path / "dump" / f"rank{r}-epoch1.safetensors")) for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "the replicas differ"
    ddp, one = (load_file(str(d / "checkpoints/epoch-1.safetensors")) for d in (tmp_path / "ddp", single))
    init = load_file(str(enc / "model.safetensors"))
    moved = max((one["encoder." + k] - v).abs().max().item() for k, v in init.items() if "encoder." + k in one)
    worst = max((ddp[k] - one[k]).abs().max().item() for k in one)
    assert moved > 1e-3 and worst <= 1e-5, (moved, worst)
