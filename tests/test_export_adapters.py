"""``mtdnn export`` and ``mtdnn serve`` on runs trained with per-task LoRA adapters (``--adapter lora``,
export/adapters.py): the whole-model folder (loaded where mtdnn cannot be imported), the one-task
standard folder with the adapter merged, ONNX, the engine and the server, each against mtdnn's own
predictions of the run on real dev rows (to 1e-5); tasks with different adapters in one request get
their own adapter's encoder output; a task without an adapter (carried over from a fully fine-tuned
run) keeps the plain encoder. On the tiny encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from checks import one_error_line
from deploy_fixtures import HIDE_MTDNN
from mtdnn.api import load_run
from mtdnn.cli import main
from mtdnn.data.readers import read_split
from mtdnn.records import RawSplit
from mtdnn.tasks.registry import TaskRegistry

pytestmark = pytest.mark.slow

TASKS = ["rte", "stsb", "sst2"]  # SAN (pair), regression (pair), linear (single sentence)
N_ROWS = 16
ADAPTER = ["--adapter", "lora", "--lora-rank", "4"]

# A fresh interpreter where importing mtdnn fails: the exported folder with transformers only.
OUTSIDE = HIDE_MTDNN + r'''
import torch
from transformers import AutoModel, AutoTokenizer
torch.set_num_threads(1)
folder, rows_file, out_file = sys.argv[1:4]
rows = json.load(open(rows_file))
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
out = {"logits": {}, "all": {}}
with torch.no_grad():
    for task, (a, b) in rows.items():
        enc = tok(a, b if b[0] is not None else None, truncation=True, padding=True, return_tensors="pt")
        out["logits"][task] = model(**enc, task=task).logits.tolist()
        out["all"][task] = model(**enc).task_logits[task].tolist()
out["mtdnn_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] == "mtdnn")
json.dump(out, open(out_file, "w"))
'''


def _train(data_dir: Path, encoder: str, work: Path, out: Path, tasks: str, *extra: str, epochs: int = 2) -> Path:
    assert main(["train", "--tasks", tasks, "--data-dir", str(data_dir), "--encoder", encoder,
                 "--max-train-examples", "32", "--max-eval-examples", "24", "--epochs", str(epochs),
                 "--batch-size", "16", "--max-seq-len", "48", "--threads", "1", "--no-progress", "--no-hub",
                 "--cache-dir", str(work / "cache"), "--output-dir", str(out), "--lr", "1e-2",
                 "--no-predict-test", "--seed", "2", "--pair-head", "san", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export-adapters")


@pytest.fixture(scope="module")
def lora_run(work, tiny_encoder, data_dir) -> Path:
    """rte, stsb and sst2, each with its own LoRA adapter (rank 4) on the frozen tiny encoder."""
    return _train(data_dir, tiny_encoder, work, work / "lora", ",".join(TASKS), *ADAPTER)


@pytest.fixture(scope="module")
def mixed_run(work, tiny_encoder, data_dir) -> tuple[Path, Path]:
    """(plain, mixed): cola fully fine-tuned, then mrpc added with an adapter; cola is carried over
    without one."""
    plain = _train(data_dir, tiny_encoder, work, work / "plain", "cola", "--selection", "last", epochs=1)
    mixed = _train(data_dir, "default", work, work / "mixed", "mrpc", *ADAPTER, "--init-from", str(plain), epochs=1)
    return plain, mixed


@pytest.fixture(scope="module")
def hf_dir(work, lora_run) -> Path:
    assert main(["export", str(lora_run), "--format", "hf", "--output", str(work / "hf")]) == 0
    return work / "hf"


def rows(data_dir: Path, task: str, n: int = N_ROWS) -> tuple[list[str], list[str | None]]:
    raw = read_split(TaskRegistry().get(task), "dev", data_dir, allow_hub=False)
    return raw.text_a[:n], raw.text_b[:n]


def mtdnn_outputs(model_dir: Path, task: str, text_a, text_b) -> np.ndarray:
    """What ``mtdnn predict`` computes (``Run``): class probabilities (N, C), or scores (N,)."""
    run = load_run(model_dir, device="cpu")
    raw = RawSplit(task, "x", "<test>", ids=[str(i) for i in range(len(text_a))], text_a=list(text_a),
                   text_b=list(text_b), labels=[None] * len(text_a), lines=list(range(len(text_a))))
    _, preds = run._predict(run.task(task), raw, batch_size=64)
    return preds.outputs


def as_outputs(task: str, logits, san: bool = False) -> np.ndarray:
    """Raw model outputs as ``Predictions.outputs``: softmax of the logits (SAN: exp of its
    log-probabilities), the score for regression."""
    z = np.asarray(logits, dtype=np.float64)
    if task == "stsb":
        return z.reshape(-1)
    if san:
        return np.exp(z)
    p = np.exp(z - z.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------- the whole model
def test_whole_model_loads_without_mtdnn_and_equals_predict(work, lora_run, hf_dir, data_dir):
    cfg = json.loads((hf_dir / "config.json").read_text())
    assert cfg["encoder_keys"] == ["frozen"]
    assert {t: s["adapter"] for t, s in cfg["tasks"].items()} == {t: t for t in TASKS}
    layers = [f"encoder.layer.{i}.attention.self.{p}" for i in (0, 1) for p in ("query", "value")]
    assert cfg["adapters"]["rte"] == {"rank": 4, "scaling": 4.0, "layers": layers}  # alpha 16 / rank 4
    selection = json.loads((lora_run / "selection.json").read_text())["tasks"]
    assert {t: s["epoch"] for t, s in cfg["tasks"].items()} == selection
    given = {t: rows(data_dir, t) for t in TASKS}
    (work / "rows.json").write_text(json.dumps(given))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(work / "modules"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", OUTSIDE, str(hf_dir), str(work / "rows.json"), str(work / "out.json")],
                          cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((work / "out.json").read_text())
    assert out["mtdnn_loaded"] == []
    for task in TASKS:
        want = mtdnn_outputs(lora_run, task, *given[task])
        got = as_outputs(task, out["logits"][task], san=task == "rte")
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=task)
        np.testing.assert_allclose(out["all"][task], out["logits"][task], atol=1e-6, rtol=0, err_msg=task)
    card = (hf_dir / "README.md").read_text()
    assert "LoRA adapter per task" in card and "rank 4, scaling 4" in card


def _hidden(model, adapter: str | None, batch) -> torch.Tensor:
    from mtdnn.export.modeling_mtdnn import active_adapter

    with torch.inference_mode(), active_adapter(model.encoders["frozen"], adapter):
        return model.encoders["frozen"](**batch).last_hidden_state


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft reads a deprecated transformers property
def test_each_adapter_gives_peft_encoder_output(lora_run, hf_dir, data_dir):
    """The exported encoder under each task's adapter computes what plain peft computes with that
    adapter, and the adapters differ from each other and from the plain encoder."""
    from peft import PeftModel
    from transformers import AutoModel

    from mtdnn.export.engine import load_engine

    engine = load_engine(hf_dir)
    a, b = rows(data_dir, "rte", 8)
    batch = dict(engine.tokenizer(a, b, truncation=True, max_length=48, padding=True, return_tensors="pt"))
    hidden = {name: _hidden(engine.model, name, batch) for name in (*TASKS, None)}
    for name in TASKS:
        base = AutoModel.from_pretrained(str(lora_run / "encoder"), add_pooling_layer=False)
        peft = PeftModel.from_pretrained(base, str(lora_run / "adapters" / name)).eval()
        with torch.inference_mode():
            want = peft(**batch).last_hidden_state
        torch.testing.assert_close(hidden[name], want, atol=1e-6, rtol=0)
    with torch.inference_mode():
        plain = AutoModel.from_pretrained(str(lora_run / "encoder"), add_pooling_layer=False).eval()(**batch)
    torch.testing.assert_close(hidden[None], plain.last_hidden_state, atol=1e-6, rtol=0)
    names = [*TASKS, None]
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert (hidden[x] - hidden[y]).abs().max() > 1e-3, (x, y)


# ----------------------------------------------------------------------------- serve
def _inputs(a, b) -> list[dict[str, str]]:
    return [{"text_a": x, "text_b": y} for x, y in zip(a, b)]


def _answers(results: list[dict], task: str) -> np.ndarray:
    if task == "stsb":
        return np.array([r["score"] for r in results])
    labels = list(results[0]["probabilities"])
    return np.array([[r["probabilities"][k] for k in labels] for r in results])


def test_serve_several_adapter_tasks_in_one_request(lora_run, hf_dir, data_dir):
    """rte and stsb (pair tasks, different adapters) and sst2 (its first text) in one request, on the
    run directory and on its export: each equals mtdnn's prediction of that task."""
    from fastapi.testclient import TestClient

    from mtdnn.export.engine import load_engine
    from mtdnn.serve import ServeOptions, create_app

    a, b = rows(data_dir, "rte")
    want = {t: mtdnn_outputs(lora_run, t, a, b if t != "sst2" else [None] * len(a)) for t in TASKS}
    for model_dir in (lora_run, hf_dir):
        with TestClient(create_app(load_engine(model_dir), ServeOptions())) as client:
            r = client.post("/predict", json={"tasks": TASKS, "inputs": _inputs(a, b)})
            assert r.status_code == 200, r.text
            for task in TASKS:
                np.testing.assert_allclose(_answers(r.json()["results"][task], task), want[task], atol=1e-5,
                                           rtol=0, err_msg=f"{model_dir.name} {task}")
            shown = {t["name"]: t["adapter"] for t in client.get("/tasks").json()["tasks"]}
            assert shown == {t: t for t in TASKS}


def test_a_task_run_with_another_tasks_adapter_answers_differently(lora_run, data_dir):
    """The check above can fail: stsb's head on rte's adapter gives other scores."""
    from mtdnn.export.engine import load_engine

    engine = load_engine(lora_run)
    a, b = rows(data_dir, "stsb")
    right = engine.run(a, b, ["stsb"])["stsb"]
    engine.model.config.tasks["stsb"]["adapter"] = "rte"
    wrong = engine.run(a, b, ["stsb"])["stsb"]
    assert np.abs(right - wrong).max() > 1e-3


# ----------------------------------------------------------------------------- one task, ONNX, predict
def test_task_folder_has_the_adapter_merged(work, lora_run, data_dir, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    for task in ("stsb", "sst2"):
        out = work / f"{task}-only"
        assert main(["export", str(lora_run), "--task", task, "--output", str(out)]) == 0
        cfg = json.loads((out / "config.json").read_text())
        assert "auto_map" not in cfg and not list(out.glob("*.py")) and not (out / "adapter_config.json").exists()
        a, b = rows(data_dir, task)
        b = b if task == "stsb" else None
        tok = AutoTokenizer.from_pretrained(str(out))
        model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
        with torch.inference_mode():
            logits = model(**tok(a, b, truncation=True, padding=True, return_tensors="pt")).logits
        want = mtdnn_outputs(lora_run, task, a, b if b is not None else [None] * len(a))
        np.testing.assert_allclose(as_outputs(task, logits.numpy()), want, atol=1e-5, rtol=0, err_msg=task)
        assert "merged into its weights" in (out / "README.md").read_text()
    capsys.readouterr()
    assert main(["export", str(lora_run), "--task", "rte", "--output", str(work / "rte-only")]) == 2
    assert "SAN head" in one_error_line(capsys)


def test_onnx_export_equals_predict(work, lora_run, data_dir):
    import onnxruntime as ort  # the [onnx] extra (scripts/setup.sh installs it): missing, the test fails
    from transformers import AutoTokenizer

    folder = work / "onnx"
    assert main(["export", str(lora_run), "--format", "onnx", "--output", str(folder)]) == 0
    meta = json.loads((folder / "tasks.json").read_text())
    assert meta["encoders"] == ["frozen"] and meta["tasks"]["sst2"]["adapter"] == "sst2"
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    tok = AutoTokenizer.from_pretrained(str(folder))
    for task in TASKS:
        a, b = rows(data_dir, task)
        enc = tok(a, b if task != "sst2" else None, truncation=True, max_length=48, padding=True, return_tensors="np")
        (got,) = session.run([task], {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})
        want = mtdnn_outputs(lora_run, task, a, b)
        np.testing.assert_allclose(as_outputs(task, got, san=task == "rte"), want, atol=1e-5, rtol=0, err_msg=task)


def test_predict_on_the_export_equals_the_run(tmp_path, lora_run, hf_dir, data_dir):
    """``mtdnn predict`` on the exported folder (each task's adapter merged into mtdnn's encoder)."""
    for task in TASKS:
        a, b = rows(data_dir, task)
        np.testing.assert_allclose(mtdnn_outputs(hf_dir, task, a, b), mtdnn_outputs(lora_run, task, a, b),
                                   atol=1e-5, rtol=0, err_msg=task)


# ----------------------------------------------------------------------------- a task without adapter
def test_carried_plain_task_keeps_the_plain_encoder(work, mixed_run, data_dir):
    """cola (carried over from a fully fine-tuned run, no adapter) and mrpc (adapter) in one export
    and one request: cola answers as the plain run does, mrpc as the mixed run does."""
    from fastapi.testclient import TestClient

    from mtdnn.export.engine import load_engine
    from mtdnn.serve import ServeOptions, create_app

    plain, mixed = mixed_run
    out = work / "mixed-hf"
    assert main(["export", str(mixed), "--output", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tasks"]["cola"]["adapter"] is None and cfg["tasks"]["mrpc"]["adapter"] == "mrpc"
    assert cfg["tasks"]["cola"]["epoch"] is None and list(cfg["adapters"]) == ["mrpc"]
    assert f"carried over from {plain}" in (out / "README.md").read_text()
    a, b = rows(data_dir, "mrpc")
    want = {"cola": mtdnn_outputs(plain, "cola", a, [None] * len(a)), "mrpc": mtdnn_outputs(mixed, "mrpc", a, b)}
    with TestClient(create_app(load_engine(out), ServeOptions())) as client:
        r = client.post("/predict", json={"tasks": ["mrpc", "cola"], "inputs": _inputs(a, b)})
        assert r.status_code == 200, r.text
        for task in ("mrpc", "cola"):
            np.testing.assert_allclose(_answers(r.json()["results"][task], task), want[task], atol=1e-5, rtol=0)
    assert main(["export", str(mixed), "--task", "cola", "--output", str(work / "cola-only")]) == 0
    np.testing.assert_allclose(mtdnn_outputs(out, "cola", a, [None] * len(a)), want["cola"], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- errors
def test_adapter_export_errors(work, lora_run, capsys):
    assert main(["export", str(lora_run), "--epoch", "1", "--output", str(work / "e1")]) == 2
    line = one_error_line(capsys)
    assert "adapter run" in line and "without --epoch" in line
    assert not (work / "e1").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_an_adapter_kind_the_export_does_not_hold_is_named(tiny_encoder):
    """DoRA (a magnitude vector beside A and B) is not plain LoRA: a one-line error, not wrong outputs."""
    from transformers import AutoModel

    from mtdnn.errors import CheckpointError
    from mtdnn.export.adapters import _lora_layers
    from mtdnn.model.adapters import LoraSettings, TaskAdapters

    class DoraSettings(LoraSettings):
        def peft_config(self):
            config = super().peft_config()
            config.use_dora = True
            return config

    enc = TaskAdapters(AutoModel.from_pretrained(tiny_encoder, add_pooling_layer=False), ["t1"],
                       DoraSettings(4, 8, 0.0, ("query",)), {})
    with pytest.raises(CheckpointError, match="DoRA.*plain LoRA on linear layers only"):
        _lora_layers(enc)
