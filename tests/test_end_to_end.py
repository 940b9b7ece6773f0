"""End to end on a tiny encoder and real slices of RTE, MRPC and STS-B: training, the run directory,
reloading a run (API and CLI), and --init-from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import mtdnn
from mtdnn.cli import main
from mtdnn.errors import CheckpointError, ConfigError
from mtdnn.run_dir import RunDir, load_weights
from mtdnn.runtime import seed_everything
from mtdnn.tasks.registry import builtin_tasks
from mtdnn.training.setup import build_setup

pytestmark = pytest.mark.slow

TASKS = ["rte", "mrpc", "stsb"]
EPOCHS = 4
N_TRAIN = 96
N_EVAL = 64


def _cfg(tiny_encoder, data_dir, out, cache, **kw):
    values = dict(tasks=",".join(TASKS), encoder=tiny_encoder, data_dir=str(Path(data_dir).resolve()),
                  cache_dir=str(cache), output_dir=str(out), progress=False, max_train_examples=N_TRAIN,
                  max_eval_examples=N_EVAL, max_seq_len=64, epochs=EPOCHS, lr=1e-3, batch_size=16, threads=1,
                  seed=42)
    values.update(kw)
    return mtdnn.make_config(overrides=values)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tok-cache")


@pytest.fixture(scope="module")
def run_dir(tiny_encoder, data_dir, cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "mt"
    d = mtdnn.train(_cfg(tiny_encoder, data_dir, out, cache))
    assert Path(d) == out
    return Path(d)


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]


def test_training_loss_falls(run_dir):
    hist = _history(run_dir)
    assert [r["epoch"] for r in hist] == list(range(1, EPOCHS + 1))
    first, last = hist[0]["train_loss"], hist[-1]["train_loss"]
    assert set(first) == set(last) == set(TASKS)
    for t in TASKS:
        assert math.isfinite(first[t]) and last[t] < first[t], (t, first[t], last[t])
    assert sum(last.values()) < 0.8 * sum(first.values())
    # every training row once per epoch
    assert all(r["train_examples"] == N_TRAIN * len(TASKS) for r in hist)
    steps = [r["step"] for r in hist]
    assert steps == [steps[0] * (i + 1) for i in range(EPOCHS)] and steps[0] == 3 * math.ceil(N_TRAIN / 16)


def test_run_directory_contents(run_dir):
    hist = _history(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == set(TASKS)
    assert set(metrics["rte"]) == {"dev"} and set(metrics["rte"]["dev"]) == {"accuracy", "score"}
    assert set(metrics["mrpc"]["dev"]) == {"f1", "accuracy", "score"}
    assert set(metrics["stsb"]["dev"]) == {"pearson", "spearman", "score"}
    assert metrics["mrpc"]["dev"]["score"] == pytest.approx(
        (metrics["mrpc"]["dev"]["f1"] + metrics["mrpc"]["dev"]["accuracy"]) / 2)
    # accuracy on 64 dev rows is a multiple of 100/64
    acc = metrics["rte"]["dev"]["accuracy"]
    assert acc * 64 / 100 == pytest.approx(round(acc * 64 / 100))

    sel = json.loads((run_dir / "selection.json").read_text())
    assert sel["last"] == EPOCHS and set(sel["tasks"]) == set(TASKS)
    for t in TASKS:
        scores = [r["dev"][t]["dev"]["score"] for r in hist]
        # each task keeps its best dev epoch (the first one reaching the best score)
        assert sel["tasks"][t] == scores.index(max(scores)) + 1
        assert metrics[t] == hist[sel["tasks"][t] - 1]["dev"][t]

    ckpts = {p.name for p in (run_dir / "checkpoints").glob("*.safetensors")}
    assert ckpts == {f"epoch-{e}.safetensors" for e in set(sel["tasks"].values()) | {EPOCHS}}
    state = load_weights(run_dir / "checkpoints" / f"epoch-{EPOCHS}.safetensors")
    assert any(k.startswith("encoder.") for k in state)
    assert {k.split(".")[1] for k in state if k.startswith("heads.")} == set(TASKS)

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["tasks"] == TASKS and cfg["epochs"] == EPOCHS and cfg["encoder_resolved"]
    tasks = yaml.safe_load((run_dir / "tasks.yaml").read_text())
    assert [t["name"] for t in tasks] == TASKS
    assert RunDir(run_dir).read_tasks() == [builtin_tasks()[t] for t in TASKS]
    assert (run_dir / "encoder" / "config.json").is_file()
    assert (run_dir / "encoder" / "tokenizer.json").is_file()
    assert json.loads((run_dir / "encoder" / "config.json").read_text())["hidden_size"] == 32

    events = list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc_ev = EventAccumulator(str(run_dir / "tb"))
    acc_ev.Reload()
    tags = set(acc_ev.Tags()["scalars"])
    assert {"rte/dev/accuracy", "mrpc/dev/f1", "stsb/dev/pearson", "train/epoch_loss/rte"} <= tags
    ev = acc_ev.Scalars("stsb/dev/pearson")
    assert [e.step for e in ev] == list(range(1, EPOCHS + 1))
    assert ev[-1].value == pytest.approx(hist[-1]["dev"]["stsb"]["dev"]["pearson"], rel=1e-5)


def test_submissions(run_dir, data_dir):
    sub = run_dir / "submissions"
    rte = (sub / "RTE.tsv").read_text().splitlines()
    assert len(rte) == 3001 and rte[0] == "index\tprediction"
    assert [r.split("\t")[0] for r in rte[1:]] == [str(i) for i in range(3000)]
    assert {r.split("\t")[1] for r in rte[1:]} <= {"entailment", "not_entailment"}
    mrpc = (sub / "MRPC.tsv").read_text().splitlines()
    assert len(mrpc) == 1726 and {r.split("\t")[1] for r in mrpc[1:]} <= {"0", "1"}
    stsb = (sub / "STS-B.tsv").read_text().splitlines()
    assert len(stsb) == 1380
    assert all(math.isfinite(float(r.split("\t")[1])) for r in stsb[1:])


def test_reload_reproduces_metrics_and_predicts(run_dir, data_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = mtdnn.load_run(run_dir, device="cpu")
    again = run.evaluate(max_eval_examples=N_EVAL)
    assert set(again) == set(TASKS)
    for t in TASKS:
        assert again[t]["dev"] == pytest.approx(metrics[t]["dev"], abs=1e-6), t
    assert set(run.evaluate(["stsb"], max_eval_examples=N_EVAL)) == {"stsb"}

    # predict: label names (scores for regression), the same as the submission file
    rte_test = [line.split("\t") for line in (Path(data_dir) / "glue/RTE/test.tsv").read_text().splitlines()[1:6]]
    preds = run.predict("rte", [r[1] for r in rte_test], [r[2] for r in rte_test])
    submitted = [line.split("\t")[1] for line in (run_dir / "submissions/RTE.tsv").read_text().splitlines()[1:6]]
    assert preds == submitted
    assert set(run.predict("mrpc", ["A b c.", "Hello."], ["A b c.", "Bye."])) <= {"0", "1"}
    scores = run.predict("stsb", ["A man plays."], ["A man plays a guitar."])
    assert len(scores) == 1 and isinstance(scores[0], float)
    with pytest.raises(ConfigError, match="no task 'cola'"):
        run.predict("cola", ["x"])
    with pytest.raises(ConfigError, match="text_b"):
        run.predict("rte", ["x"])


def test_cli_evaluate_and_predict(run_dir, data_dir, tmp_path, capsys):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out = tmp_path / "eval.json"
    rc = main(["evaluate", str(run_dir), "--max-eval-examples", str(N_EVAL), "--output", str(out), "--device", "cpu"])
    assert rc == 0
    got = json.loads(out.read_text())
    for t in TASKS:
        assert got[t]["dev"] == pytest.approx(metrics[t]["dev"], abs=1e-6)
    printed = capsys.readouterr().out
    assert "rte" in printed and "average" in printed

    # a TSV with the task's own column names and an index column
    inp = tmp_path / "pairs.tsv"
    inp.write_text("index\tsentence1\tsentence2\n"
                   "a7\tA man is sleeping in a bed.\tNobody is sleeping.\n"
                   "b8\tThe cat sat on the mat.\tA cat sat.\n"
                   "c9\tIt rains in Paris.\tParis is dry.\n", encoding="utf-8")
    pred = tmp_path / "pred.tsv"
    rc = main(["predict", str(run_dir), "--task", "rte", "--input", str(inp), "--output", str(pred), "--device", "cpu"])
    assert rc == 0
    lines = pred.read_text().splitlines()
    assert lines[0] == "index\tprediction\tp_entailment\tp_not_entailment"
    assert len(lines) == 4
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == ["a7", "b8", "c9"]
    for r in rows:
        p = [float(r[2]), float(r[3])]
        assert sum(p) == pytest.approx(1.0, abs=1e-5)
        assert r[1] == ("entailment" if p[0] >= p[1] else "not_entailment")
    run = mtdnn.load_run(run_dir, device="cpu")
    assert [r[1] for r in rows] == run.predict("rte", ["A man is sleeping in a bed.", "The cat sat on the mat.",
                                                       "It rains in Paris."],
                                               ["Nobody is sleeping.", "A cat sat.", "Paris is dry."])
    assert "wrote 3 predictions" in capsys.readouterr().out

    # jsonl input with explicit columns, regression task
    jl = tmp_path / "pairs.jsonl"
    jl.write_text('{"x": "A dog runs.", "y": "A dog is running."}\n{"x": "Sun.", "y": "Moon."}\n', encoding="utf-8")
    pred2 = tmp_path / "pred2.tsv"
    assert main(["predict", str(run_dir), "--task", "stsb", "--input", str(jl), "--output", str(pred2),
                 "--text-a", "x", "--text-b", "y", "--device", "cpu"]) == 0
    lines = pred2.read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 3
    assert all(math.isfinite(float(line.split("\t")[1])) for line in lines[1:])

    # errors: one line, exit code 2
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "mtdnn: error:" in capsys.readouterr().err
    assert main(["predict", str(run_dir), "--task", "cola", "--input", str(inp), "--output", str(pred)]) == 2
    assert "no task 'cola'" in capsys.readouterr().err


def test_cli_train(tiny_encoder, data_dir, cache, tmp_path, capsys):
    out = tmp_path / "cli-run"
    argv = ["train", "--tasks", "rte,stsb", "--encoder", tiny_encoder, "--data-dir", str(Path(data_dir).resolve()),
            "--cache-dir", str(cache), "--output-dir", str(out), "--epochs", "1", "--max-train-examples", "32",
            "--max-eval-examples", "32", "--max-seq-len", "32", "--batch-size", "8", "--threads", "1",
            "--no-progress", "--no-hub", "--lr", "1e-3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed and "stsb" in printed
    for name in ("config.yaml", "tasks.yaml", "metrics.json", "history.jsonl", "selection.json",
                 "checkpoints/epoch-1.safetensors", "encoder/config.json", "submissions/RTE.tsv",
                 "submissions/STS-B.tsv"):
        assert (out / name).is_file(), name
    assert set(json.loads((out / "metrics.json").read_text())) == {"rte", "stsb"}
    assert len((out / "submissions/RTE.tsv").read_text().splitlines()) == 3001
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["max_train_examples"] == 32 and cfg["allow_hub"] is False and cfg["tasks"] == ["rte", "stsb"]

    # a task whose train file is missing, hub off: exit 2, the file named, nothing trained
    bad = tmp_path / "bad-run"
    argv_bad = ["train", "--tasks", "mnli", "--encoder", tiny_encoder, "--data-dir", str(Path(data_dir).resolve()),
                "--cache-dir", str(cache), "--output-dir", str(bad), "--no-hub", "--no-progress"]
    assert main(argv_bad) == 2
    err = capsys.readouterr().err
    assert "glue/MNLI/train.tsv" in err and err.startswith("mtdnn: error:")
    assert not (bad / "checkpoints").exists()


# ------------------------------------------------------------------ --init-from
def _init_cfg(tiny_encoder, data_dir, run_dir, tmp_path, cache, tasks="rte,cola", **kw):
    return _cfg(tiny_encoder, data_dir, tmp_path / "stage2", cache, tasks=tasks, init_from=str(run_dir),
                predict_test=False, **kw)


def test_init_from_reloads_encoder_and_matching_heads(run_dir, tiny_encoder, data_dir, cache, tmp_path):
    state = load_weights(RunDir(run_dir).checkpoint(EPOCHS))  # the last epoch's weights
    cfg = _init_cfg(tiny_encoder, data_dir, run_dir, tmp_path, cache)
    seed_everything(0)
    s1 = build_setup(cfg, with_train=False)
    seed_everything(1)
    s2 = build_setup(cfg.model_copy(update={"encoder": "default"}), with_train=False)
    enc_keys = {k[len("encoder."):] for k in state if k.startswith("encoder.")}
    for s in (s1, s2):
        enc_state = s.model.encoder.state_dict()
        assert set(enc_state) == enc_keys
        for k in enc_keys:
            assert torch.equal(enc_state[k], state["encoder." + k]), k
        # RTE is defined as in the first run: its head is reused exactly
        rte = s.model.heads["rte"].state_dict()
        assert set(rte) == {k[len("heads.rte."):] for k in state if k.startswith("heads.rte.")}
        for k, v in rte.items():
            assert torch.equal(v, state["heads.rte." + k]), k
    # CoLA is new: a fresh random head (different under different seeds, not from the checkpoint)
    c1, c2 = s1.model.heads["cola"].state_dict(), s2.model.heads["cola"].state_dict()
    assert not torch.equal(c1["proj.weight"], c2["proj.weight"])
    assert not any(k.startswith("heads.cola.") for k in state)
    # the right weights were taken: the last epoch's encoder differs from every other encoder the
    # run could have started from, the untrained one (always there) and each kept earlier epoch
    # (the run keeps only the selected epochs and the last, so there may be none)
    sel = json.loads((run_dir / "selection.json").read_text())
    untrained = load_weights(Path(tiny_encoder) / "model.safetensors")
    others = {"untrained": {"encoder." + k: v for k, v in untrained.items()}}
    others.update({f"epoch {e}": load_weights(RunDir(run_dir).checkpoint(e))
                   for e in set(sel["tasks"].values()) - {EPOCHS}})
    for name, other in others.items():
        common = sorted((set(other) & set(state)) - {"encoder.embeddings.position_ids"})
        assert "encoder.embeddings.word_embeddings.weight" in common, name
        assert any(not torch.equal(other[k], state[k]) for k in common), f"the last epoch's encoder is the {name} one"


def test_init_from_trains_a_second_stage(run_dir, tiny_encoder, data_dir, cache, tmp_path):
    cfg = _init_cfg(tiny_encoder, data_dir, run_dir, tmp_path, cache, tasks="rte", epochs=1, max_train_examples=16,
                    max_eval_examples=16)
    d = mtdnn.train(cfg)
    assert yaml.safe_load((d / "config.yaml").read_text())["init_from"] == str(run_dir)
    assert (d / "checkpoints" / "epoch-1.safetensors").is_file()
    # the encoder folder of the new run is loadable on its own
    assert mtdnn.load_run(d, device="cpu").predict("rte", ["a"], ["b"])[0] in {"entailment", "not_entailment"}


def test_init_from_errors(run_dir, tiny_encoder, data_dir, cache, tmp_path):
    # a task defined differently (SAN head instead of linear) cannot take the old head
    f = tmp_path / "rte_san.yaml"
    spec = builtin_tasks()["rte"].model_dump(mode="json")
    spec["head"]["kind"] = "san"
    f.write_text(yaml.safe_dump(spec), encoding="utf-8")
    cfg = _init_cfg(tiny_encoder, data_dir, run_dir, tmp_path, cache, tasks="rte", task_files=[str(f)])
    with pytest.raises(ConfigError, match="defined differently"):
        build_setup(cfg, with_train=False)
    cfg = _init_cfg(tiny_encoder, data_dir, run_dir, tmp_path, cache, tasks="rte", pair_head="san")  # likewise
    with pytest.raises(ConfigError, match="defined differently"):
        build_setup(cfg, with_train=False)
    # another encoder than the run's
    cfg = _init_cfg(tiny_encoder, data_dir, run_dir, tmp_path, cache, encoder="bert-base-uncased")
    with pytest.raises(ConfigError, match="trained with encoder"):
        build_setup(cfg, with_train=False)
    # not a run directory
    cfg = _init_cfg(tiny_encoder, data_dir, tmp_path / "empty", tmp_path, cache)
    with pytest.raises(CheckpointError):
        build_setup(cfg, with_train=False)
