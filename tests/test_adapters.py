"""Per-task LoRA adapters (``--adapter lora``, model/adapters.py) on the tiny encoder and real data
slices: the encoder stays bitwise unchanged, the parameter counts are LoRA's by hand, the saved
adapters load in plain peft and compute what mtdnn computes, adapters switch correctly between
tasks in one process, adding a task leaves the other tasks' predictions bitwise unchanged, an
adapter run resumes bitwise, and bad input is a one-line error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mtdnn.api import load_run
from mtdnn.cli import main
from mtdnn.data.pipeline import load_task_data
from mtdnn.evaluation import predict
from mtdnn.model.adapters import (LoraSettings, SourceRun, TaskAdapters, load_adapter_model,
                                  require_peft)
from mtdnn.model.multitask import MultiTaskModel, encoder_from_config
from mtdnn.records import Predictions
from mtdnn.run_dir import RunDir
from mtdnn.model.weights import load_model_weights
from toy_tasks import train_argv, write_toy_data
from checks import one_error_line

RANK = 4
HIDDEN, LAYERS = 32, 2  # the tiny encoder (mtdnn.testing.tiny_encoder)
ADAPTER = ["--adapter", "lora", "--lora-rank", str(RANK)]


def _argv(data_dir: Path, encoder: str, cache: Path, out: Path, *extra: str, tasks: str = "cola,stsb",
          epochs: int = 2) -> list[str]:
    return ["train", "--tasks", tasks, "--data-dir", str(data_dir), "--encoder", encoder,
            "--max-train-examples", "64", "--max-eval-examples", "32", "--epochs", str(epochs),
            "--batch-size", "16", "--max-seq-len", "32", "--threads", "1", "--no-progress", "--no-hub",
            "--cache-dir", str(cache), "--output-dir", str(out), "--lr", "1e-3", "--no-predict-test",
            "--seed", "1", *extra]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="module")
def adapter_run(work, tiny_encoder, data_dir) -> Path:
    """cola (linear head) and stsb (regression) trained together with LoRA adapters, rank 4."""
    out = work / "lora"
    assert main(_argv(data_dir, tiny_encoder, work / "cache", out, *ADAPTER)) == 0
    return out


@pytest.fixture(scope="module")
def added_run(work, adapter_run, data_dir) -> Path:
    """mrpc (pair classification, linear head) added to the adapter run: its encoder frozen, cola and
    stsb carried over."""
    out = work / "lora+mrpc"
    assert main(_argv(data_dir, "default", work / "cache", out, *ADAPTER, "--init-from", str(adapter_run),
                      tasks="mrpc", epochs=1)) == 0
    return out


def _dev(run_path: Path, task: str, data_dir: Path, cache: Path):
    """The task's dev split (first 32 rows), tokenised with the run's tokenizer."""
    run = load_run(run_path, device="cpu")
    data = load_task_data([run.task(task)], run.tokenizer, data_dir=data_dir, max_len=32, cache_dir=cache,
                          max_eval_examples=32, allow_hub=False, with_train=False, with_tests=False)
    return run.task(task), data[task].evals["dev"]


def _predict(model: MultiTaskModel, task, split) -> Predictions:
    return predict(model, task, split, batch_size=8, device=torch.device("cpu"))


def _same_predictions(a: Predictions, b: Predictions) -> None:
    assert np.array_equal(a.outputs, b.outputs) and np.array_equal(a.preds, b.preds)


# ----------------------------------------------------------------------------- the frozen encoder
def test_adapter_run_leaves_every_encoder_weight_unchanged(adapter_run, tiny_encoder):
    before = load_file(str(Path(tiny_encoder) / "model.safetensors"))
    after = load_file(str(adapter_run / "encoder" / "model.safetensors"))
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    # the adapters did train: LoRA's B starts at zero
    for task in ("cola", "stsb"):
        lora = load_file(str(adapter_run / "adapters" / task / "adapter_model.safetensors"))
        b = [v for k, v in lora.items() if "lora_B" in k]
        assert len(b) == LAYERS * 2 and all(v.abs().sum() > 0 for v in b)
    # a finished adapter run keeps its adapters, heads and one encoder, not the epoch checkpoints
    assert not list((adapter_run / "checkpoints").glob("epoch-*.safetensors"))
    assert sorted(p.name for p in (adapter_run / "heads").iterdir()) == ["cola.safetensors", "stsb.safetensors"]


def test_only_adapters_and_heads_are_trainable(tiny_encoder):
    """Whichever task is selected, every new adapter stays trainable (peft's set_adapter would
    freeze the inactive ones) and the encoder stays frozen."""
    from transformers import AutoModel

    enc = TaskAdapters(AutoModel.from_pretrained(tiny_encoder, add_pooling_layer=False), ["t1", "t2"],
                       LoraSettings(RANK, 8, 0.0, ("query", "value")), {})
    for task in ("t2", "t1", "t2"):
        enc.select_task(task)
        trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
        assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
        assert sum(p.numel() for n, p in enc.named_parameters() if p.requires_grad) == 2 * LAYERS * 2 * (
            HIDDEN * RANK + RANK * HIDDEN)


def test_parameter_counts_equal_a_hand_computation(adapter_run, work, tiny_encoder, data_dir, capsys):
    report = json.loads((adapter_run / "parameters.json").read_text())
    lora = LAYERS * 2 * (HIDDEN * RANK + RANK * HIDDEN)  # query and value: A (r x 32) and B (32 x r)
    heads = {"cola": HIDDEN * 2 + 2, "stsb": HIDDEN + 1}  # linear over [CLS]: 2 classes; 1 score
    for task, head in heads.items():
        t = report["tasks"][task]
        assert (t["adapter"], t["head"], t["trainable"], t["stored"]) == (lora, head, lora + head, lora + head)
        files = [adapter_run / "heads" / f"{task}.safetensors", *(adapter_run / "adapters" / task).iterdir()]
        assert t["stored_bytes"] == sum(f.stat().st_size for f in files)
        assert t["carried_from"] is None
    embeddings = 30522 * HIDDEN + 512 * HIDDEN + 2 * HIDDEN + 2 * HIDDEN
    layer = 4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * HIDDEN + (HIDDEN * 64 + 64) + (64 * HIDDEN + HIDDEN) + 2 * HIDDEN
    assert report["encoder"]["parameters"] == embeddings + LAYERS * layer == 1_010_304
    assert report["encoder"]["trainable"] == 0
    # printed by mtdnn train
    assert main(_argv(data_dir, tiny_encoder, work / "cache", work / "printed", *ADAPTER, tasks="cola",
                      epochs=1)) == 0
    out = capsys.readouterr().out
    table = out.split("(adapter + head)", 1)[1]  # the parameter table, after the metrics
    row = next(ln.split() for ln in table.splitlines() if ln.startswith("cola "))
    assert row[:3] == ["cola", f"{lora + heads['cola']:,}", f"{lora + heads['cola']:,}"]
    assert "frozen shared encoder: 1,010,304 parameters" in out


# ----------------------------------------------------------------------------- plain peft, switching
def _plain_peft_outputs(adapter_run: Path, tiny_encoder: str, task: str,
                        split) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] vectors and head outputs of ``task`` computed with plain peft on the tiny encoder."""
    from peft import PeftModel
    from transformers import AutoModel

    from mtdnn.data.batching import collate

    base = AutoModel.from_pretrained(tiny_encoder, add_pooling_layer=False)
    model = PeftModel.from_pretrained(base, str(adapter_run / "adapters" / task)).eval()
    run_task = load_run(adapter_run, device="cpu").task(task)
    head = run_task.kind.build_head(run_task, HIDDEN)
    head.load_state_dict(load_file(str(adapter_run / "heads" / f"{task}.safetensors")))
    batch = collate(split, np.arange(len(split)), 0)
    with torch.inference_mode():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"]).last_hidden_state
        return hidden, head.eval()(hidden, batch)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft reads a deprecated transformers property
def test_saved_adapters_load_in_plain_peft(adapter_run, tiny_encoder, data_dir, work):
    from mtdnn.data.batching import collate

    run = load_run(adapter_run, device="cpu")
    for task in ("stsb", "cola"):
        t, split = _dev(adapter_run, task, data_dir, work / "cache")
        hidden, out = _plain_peft_outputs(adapter_run, tiny_encoder, task, split)
        batch = collate(split, np.arange(len(split)), 0)
        run.model.eval()
        with torch.inference_mode():
            mine = run.model.encode(batch, task=task)
            mine_out = run.model(task, batch)
        assert torch.equal(hidden, mine), task
        assert torch.equal(out, mine_out), task
        # and the adapter changes the encoder's output (it is not a no-op)
        with torch.inference_mode():
            plain = MultiTaskModel(_tiny(tiny_encoder), [t]).eval().encode(batch)
        assert not torch.allclose(plain, mine)


def _tiny(path: str) -> torch.nn.Module:
    from transformers import AutoModel

    return AutoModel.from_pretrained(path, add_pooling_layer=False)


def test_several_adapters_in_one_process_switch_correctly(adapter_run, data_dir, work):
    """Task A, then B, then A through one model equal separate single-task loads, bitwise."""
    run = load_run(adapter_run, device="cpu")
    assert run.model.enable_cls_only() is False  # no [CLS]-only pruning on an adapter model
    splits = {task: _dev(adapter_run, task, data_dir, work / "cache") for task in ("cola", "stsb")}
    single = {task: _predict(load_adapter_model(RunDir(adapter_run), [t]), t, split)
              for task, (t, split) in splits.items()}
    assert not np.array_equal(single["cola"].outputs[:, 1], single["stsb"].outputs)
    for task in ("cola", "stsb", "cola", "stsb"):
        t, split = splits[task]
        _same_predictions(_predict(run.model, t, split), single[task])
    # the public API in the same order
    a1 = run.predict("cola", ["The cat sat on the mat.", "Mat the on sat cat."])
    b = run.predict("stsb", ["A man sleeps."], ["Nobody sleeps."])
    a2 = run.predict("cola", ["The cat sat on the mat.", "Mat the on sat cat."])
    assert a1 == a2 and len(b) == 1 and isinstance(b[0], float)


# ----------------------------------------------------------------------------- adding a task
def test_adding_a_task_leaves_the_other_tasks_unchanged(adapter_run, added_run, data_dir, work):
    assert [t["name"] for t in __import__("yaml").safe_load((added_run / "tasks.yaml").read_text())] == [
        "mrpc", "cola", "stsb"]
    assert set(json.loads((added_run / "metrics.json").read_text())) == {"mrpc"}
    # the files of the carried tasks and the encoder are the same tensors
    for rel in ["encoder/model.safetensors", "heads/cola.safetensors", "heads/stsb.safetensors",
                "adapters/cola/adapter_model.safetensors", "adapters/stsb/adapter_model.safetensors"]:
        a, b = load_file(str(adapter_run / rel)), load_file(str(added_run / rel))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel
    # their predictions through the new run's model (which holds mrpc's adapter too) are bitwise equal
    old, new = load_run(adapter_run, device="cpu"), load_run(added_run, device="cpu")
    for task in ("cola", "stsb"):
        t, split = _dev(adapter_run, task, data_dir, work / "cache")
        _same_predictions(_predict(new.model, t, split), _predict(old.model, t, split))
    report = json.loads((added_run / "parameters.json").read_text())
    lora = LAYERS * 2 * (HIDDEN * RANK + RANK * HIDDEN)
    assert report["tasks"]["mrpc"]["trainable"] == lora + report["tasks"]["mrpc"]["head"]
    for task in ("cola", "stsb"):
        assert report["tasks"][task]["trainable"] == 0
        assert report["tasks"][task]["carried_from"] == str(adapter_run)
    assert new.predict("mrpc", ["A man sleeps."], ["Nobody sleeps."])[0] in ("0", "1")


@pytest.fixture(scope="module")
def plain_run(work, tiny_encoder, data_dir) -> Path:
    """cola and stsb fully fine-tuned (no adapters), one epoch."""
    out = work / "plain"
    assert main(_argv(data_dir, tiny_encoder, work / "cache", out, "--selection", "last", epochs=1)) == 0
    return out


def test_adding_a_task_to_a_plain_run(plain_run, work, data_dir):
    """The tasks of a plain (fully fine-tuned) run come along with their heads and run through the
    encoder without adapters: the same outputs as the plain run's own model, bitwise."""
    plain, added = plain_run, work / "plain+mrpc"
    assert main(_argv(data_dir, "default", work / "cache", added, *ADAPTER, "--init-from", str(plain),
                      tasks="mrpc", epochs=1)) == 0
    assert not (added / "adapters" / "cola").exists() and (added / "adapters" / "mrpc").is_dir()
    tasks = RunDir(plain).read_tasks()
    reference = MultiTaskModel(encoder_from_config(plain / "encoder"), tasks)  # no [CLS]-only pruning
    load_model_weights(reference, RunDir(plain).weights_for(None))
    new = load_run(added, device="cpu")
    for task in ("cola", "stsb"):
        t, split = _dev(plain, task, data_dir, work / "cache")
        _same_predictions(_predict(new.model, t, split), _predict(reference, t, split))
    # the plain run's API (which prunes the last layer to [CLS]) agrees up to float rounding
    kwargs = {"tasks": ["cola", "stsb"], "data_dir": data_dir, "max_eval_examples": 32}
    before, after = load_run(plain, device="cpu").evaluate(**kwargs), new.evaluate(**kwargs)
    for task in ("cola", "stsb"):
        for metric, value in before[task]["dev"].items():
            assert after[task]["dev"][metric] == pytest.approx(value, abs=1e-2), (task, metric)
    # the mrpc adapter is active for mrpc only: switching back to cola gives the same outputs again
    t, split = _dev(plain, "cola", data_dir, work / "cache")
    _same_predictions(_predict(new.model, t, split), _predict(reference, t, split))


def test_a_plain_run_task_that_keeps_an_earlier_epoch_is_not_carried(plain_run, work, caplog):
    copy = work / "plain-selection"
    shutil.copytree(plain_run, copy)
    (copy / "selection.json").write_text(json.dumps({"tasks": {"cola": 0, "stsb": 1}, "last": 1}))
    carried = SourceRun.open(copy).carried({"mrpc"})
    assert [t.name for t in carried] == ["stsb"]
    assert "not carried over" in caplog.text and "cola" in caplog.text


# ----------------------------------------------------------------------------- resume
def test_kill_and_resume_of_an_adapter_run_is_bitwise_identical(tmp_path, tiny_encoder, cache_dir):
    task_file, data_dir = write_toy_data(tmp_path)
    argv = lambda out: train_argv(task_file, data_dir, tiny_encoder, cache_dir, out,  # noqa: E731
                                  *ADAPTER, "--checkpoint-every", "3")
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(argv(full)) == 0
    env = {**os.environ, "MTDNN_TEST_FAULTS": "kill_at_step=14"}
    proc = subprocess.run([sys.executable, "-m", "mtdnn", *argv(killed)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (killed / "adapters").exists()
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    files = sorted(str(p.relative_to(full)) for p in full.rglob("*.safetensors"))
    assert files == sorted(str(p.relative_to(killed)) for p in killed.rglob("*.safetensors"))
    assert "adapters/toycls/adapter_model.safetensors" in files
    for rel in files:
        a, b = load_file(str(full / rel)), load_file(str(killed / rel))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel
    assert json.loads((full / "metrics.json").read_text()) == json.loads((killed / "metrics.json").read_text())


# ----------------------------------------------------------------------------- errors
def test_bad_adapter_input_is_a_one_line_error(adapter_run, work, tiny_encoder, data_dir, capsys, monkeypatch):
    cache = work / "cache"
    assert main(_argv(data_dir, tiny_encoder, cache, work / "e1", *ADAPTER, "--lora-targets", "q_lin,v_lin")) == 2
    line = one_error_line(capsys)
    assert "lora_targets" in line and "'q_lin'" in line and "query" in line and "value" in line
    # an adapter run is continued with adapters
    assert main(_argv(data_dir, "default", cache, work / "e2", "--init-from", str(adapter_run), tasks="mrpc")) == 2
    assert "is an adapter run" in one_error_line(capsys)
    # the carried tasks must see the inputs they were trained on
    assert main(_argv(data_dir, "default", cache, work / "e3", *ADAPTER, "--init-from", str(adapter_run),
                      "--max-seq-len", "64", tasks="mrpc")) == 2
    assert "max_seq_len" in one_error_line(capsys)
    assert main(_argv(data_dir, tiny_encoder, cache, work / "e4", *ADAPTER, "--parallel", "fsdp")) == 2
    assert "adapter" in one_error_line(capsys)
    assert not any((work / e).exists() for e in ("e1", "e2", "e3", "e4"))
    # a damaged adapter file of a saved run
    broken = work / "broken"
    shutil.copytree(adapter_run, broken)
    weights = broken / "adapters" / "cola" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["evaluate", str(broken), "--max-eval-examples", "8", "--data-dir", str(data_dir)]) == 2
    line = one_error_line(capsys)
    assert "cannot load the adapter" in line and str(broken / "adapters" / "cola") in line
    # an adapter run killed before its end has no adapters to load yet
    (broken / "encoder" / "model.safetensors").unlink()
    assert main(["evaluate", str(broken), "--max-eval-examples", "8", "--data-dir", str(data_dir)]) == 2
    assert "mtdnn train --resume" in one_error_line(capsys)
    # without peft: the error names the extra that installs it
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(Exception) as info:
        require_peft()
    assert "mtdnn[adapters]" in str(info.value)
    assert main(_argv(data_dir, tiny_encoder, cache, work / "e5", *ADAPTER)) == 2
    assert "pip install 'mtdnn[adapters]'" in one_error_line(capsys)


# ----------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_adapter_run_matches_a_single_process(tmp_path, data_dir):
    """Two torchrun processes (gloo) train the same adapters and heads as one process with the same
    global batch: each rank switches adapters per batch, and DDP synchronises every task's adapter."""
    import mtdnn
    from mtdnn.config import load_config_file
    from mtdnn.testing import dropout_free_tasks, tiny_encoder

    values = dict(tasks="rte0,stsb0", task_files=str(dropout_free_tasks(tmp_path / "tasks.yaml")),
                  encoder=str(tiny_encoder(tmp_path / "encoder", dropout=0.0)),
                  data_dir=str(Path(data_dir).resolve()),
                  cache_dir=str(tmp_path / "cache"), epochs=2, batch_size=8, max_train_examples=32,
                  max_eval_examples=32, max_seq_len=32, lr=1e-3, selection="last", seed=7, threads=1,
                  progress=False, allow_hub=False, predict_test=False, adapter="lora", lora_rank=RANK,
                  lora_dropout=0.0)
    config = tmp_path / "run.yaml"
    config.write_text(__import__("yaml").safe_dump(values))
    cfg = mtdnn.make_config(load_config_file(config), {"output_dir": str(tmp_path / "single")})
    single = Path(mtdnn.train(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MTDNN_TEST_FAULTS", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mtdnn",
           "train", "--config", str(config), "--output-dir", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for rel in ["adapters/rte0/adapter_model.safetensors", "adapters/stsb0/adapter_model.safetensors",
                "heads/rte0.safetensors", "heads/stsb0.safetensors", "encoder/model.safetensors"]:
        a, b = load_file(str(tmp_path / "ddp" / rel)), load_file(str(single / rel))
        assert a.keys() == b.keys(), rel
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst <= 1e-5, f"{rel}: differs by up to {worst}"
        if "adapters" in rel:  # trained well beyond the tolerance (LoRA's B starts at zero)
            assert max(v.abs().max().item() for k, v in a.items() if "lora_B" in k) > 1e-3
