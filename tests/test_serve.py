"""``mtdnn serve``: answers equal mtdnn's own predictions for every task (one request, several
tasks), the micro-batcher's gathering, every kind of bad request, the ONNX backend, and one
real uvicorn process on 127.0.0.1 (ephemeral port) stopped by SIGTERM with a request in flight."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from deploy_fixtures import TASKS, dev_rows, exported, trained_run
from mtdnn.api import load_run
from mtdnn.export.engine import TaskInfo, load_engine
from mtdnn.serve import MicroBatcher, ServeOptions, create_app

pytestmark = pytest.mark.slow

OPTIONS = ServeOptions(max_batch_size=16, max_wait_ms=2.0, max_inputs=30, max_text_chars=2000)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_encoder, data_dir) -> Path:
    return trained_run(tmp_path_factory, tiny_encoder, data_dir)


@pytest.fixture(scope="module")
def rows(run_dir, data_dir):
    return {t: dev_rows(run_dir, data_dir, t) for t in TASKS}


@pytest.fixture(scope="module")
def client(run_dir):
    from fastapi.testclient import TestClient  # the [serve] extra (scripts/setup.sh installs it)

    with TestClient(create_app(load_engine(run_dir), OPTIONS)) as c:
        yield c


def _expected(run_dir: Path, task: str, text_a, text_b) -> np.ndarray:
    """mtdnn's own predictions (``Run``): class probabilities, or scores."""
    run = load_run(run_dir, device="cpu")
    t = run.task(task)
    from mtdnn.records import RawSplit

    raw = RawSplit(task, "x", "<test>", ids=[str(i) for i in range(len(text_a))], text_a=list(text_a),
                   text_b=list(text_b), labels=[None] * len(text_a), lines=list(range(len(text_a))))
    _, preds = run._predict(t, raw, batch_size=64)
    return preds.outputs


def _inputs(rows, task, n=20):
    a, b = rows[task]
    return [{"text_a": x, **({"text_b": y} if y is not None else {})} for x, y in list(zip(a, b))[:n]]


def test_answers_equal_mtdnn_predictions(client, run_dir, rows):
    """One request for all five tasks on sentence pairs (single-sentence tasks read text_a)."""
    pairs = _inputs(rows, "rte")
    r = client.post("/predict", json={"tasks": TASKS, "inputs": pairs})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert list(results) == TASKS and all(len(v) == len(pairs) for v in results.values())
    a = [p["text_a"] for p in pairs]
    b = [p["text_b"] for p in pairs]
    for task in TASKS:
        want = _expected(run_dir, task, a, b if task != "sst2" else [None] * len(a))
        got = results[task]
        if task in ("rte", "mrpc", "sst2"):
            labels = list(got[0]["probabilities"])
            probs = np.array([[g["probabilities"][k] for k in labels] for g in got])
            np.testing.assert_allclose(probs, want, atol=1e-5, rtol=0)
            assert [g["label"] for g in got] == [labels[i] for i in want.argmax(-1)]
        else:
            np.testing.assert_allclose([g["score"] for g in got], want, atol=1e-5, rtol=0)


def test_single_task_request_on_its_own_rows(client, run_dir, rows):
    for task in ("sst2", "stsb"):
        r = client.post("/predict", json={"task": task, "inputs": _inputs(rows, task, 12)})
        assert r.status_code == 200 and list(r.json()["results"]) == [task]
        a, b = rows[task]
        want = _expected(run_dir, task, a[:12], b[:12])
        got = r.json()["results"][task]
        values = [g["probabilities"]["1"] for g in got] if task == "sst2" else [g["score"] for g in got]
        np.testing.assert_allclose(values, want[:, 1] if task == "sst2" else want, atol=1e-5, rtol=0)


def test_tasks_health_docs(client):
    tasks = client.get("/tasks").json()
    assert tasks["encoders"] == ["epoch-2"]
    by_name = {t["name"]: t for t in tasks["tasks"]}
    assert list(by_name) == TASKS
    assert by_name["rte"]["head"] == "san" and by_name["rte"]["labels"] == ["entailment", "not_entailment"]
    assert by_name["sst2"]["input"] == "single" and by_name["stsb"]["type"] == "regression"
    assert "accuracy" in by_name["rte"]["dev_metrics"]["dev"]
    assert client.get("/health").json() == {"status": "ok", "backend": "torch", "tasks": 5}
    assert client.get("/docs").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]


BAD = [  # (body or raw text, status, words the error must contain)
    ({"task": "nope", "inputs": [{"text_a": "x"}]}, 404, "unknown task 'nope' (known tasks: rte, mrpc, stsb, sst2, qnlirank)"),
    ({"task": "rte", "inputs": [{"text_a": "x", "text_b": "y"}, {"text_a": "only one"}]}, 422,
     "task 'rte' takes a pair of texts: inputs[1] has no text_b"),
    ({"task": "sst2", "inputs": [{"text_a": "x"}] * 31}, 413, "too many inputs: 31 (at most 30 per request)"),
    ({"task": "sst2", "inputs": [{"text_a": "x" * 2001}]}, 413, "inputs[0].text_a has 2001 characters (at most 2000)"),
    ('{"task": "sst2", "inputs": [', 400, "malformed JSON"),
    ({"task": "sst2", "tasks": ["rte"], "inputs": [{"text_a": "x"}]}, 422, "either 'task'"),
    ({"task": "sst2"}, 422, "inputs: Field required"),
    ({"task": "sst2", "inputs": []}, 422, "'inputs' is empty"),
    ({"task": "sst2", "inputs": [{"text": "x"}]}, 422, "inputs.0.text_a: Field required"),
    ({"task": "sst2", "inputs": [{"text_a": 3}]}, 422, "inputs.0.text_a: Input should be a valid string"),
]


@pytest.mark.parametrize("body,status,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests(client, body, status, words):
    if isinstance(body, str):
        r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    else:
        r = client.post("/predict", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and "\n" not in r.json()["error"]
    ok = client.post("/predict", json={"task": "sst2", "inputs": [{"text_a": "still serving"}]})
    assert ok.status_code == 200


class _Recorder:
    """An engine that records its calls and answers each row with its text's number."""

    backend = "fake"

    def __init__(self) -> None:
        self.tasks = {"s": TaskInfo("s", "regression", "single", [], "linear", 1, "e")}
        self.calls: list[int] = []

    def run(self, text_a, text_b, tasks):
        self.calls.append(len(text_a))
        time.sleep(0.01)
        return {t: np.array([[float(x)] for x in text_a]) for t in tasks}


@pytest.mark.parametrize("max_batch,expect_calls", [(64, None), (1, 12)])
def test_micro_batcher_gathers_concurrent_requests(max_batch, expect_calls):
    engine = _Recorder()

    async def scenario():
        batcher = MicroBatcher(engine, max_batch_size=max_batch, max_wait_ms=50)
        await batcher.start()
        try:
            outs = await asyncio.gather(*(batcher.submit("single", [str(i), str(i + 100)], None, ["s"])
                                          for i in range(12)))
        finally:
            await batcher.stop()
        return outs

    outs = asyncio.run(scenario())
    for i, out in enumerate(outs):  # each request gets its own rows back
        assert out["s"][:, 0].tolist() == [i, i + 100]
    assert sum(engine.calls) == 24
    if expect_calls is None:
        assert len(engine.calls) <= 2 and max(engine.calls) >= 12  # gathered
    else:
        assert len(engine.calls) == expect_calls  # one request per pass


def test_micro_batcher_fills_a_pass_of_each_input_kind():
    """Requests for pair and single-sentence tasks: a batch gathers up to max_batch_size rows of each
    kind (an encoder pass each), not max_batch_size rows in all."""
    engine = _Recorder()

    async def scenario():
        batcher = MicroBatcher(engine, max_batch_size=4, max_wait_ms=200)
        await batcher.start()
        try:
            jobs = [batcher.submit(kind, [str(i)], [str(i)] if kind == "pair" else None, ["s"])
                    for i in range(4) for kind in ("pair", "single")]
            return await asyncio.gather(*jobs)
        finally:
            await batcher.stop()

    outs = asyncio.run(scenario())
    assert [o["s"][0, 0] for o in outs] == [0, 0, 1, 1, 2, 2, 3, 3]
    # the pair pass is full after the 7th job (4 pairs, 3 singles); the 8th job runs next. Counting
    # both kinds together, as the batcher once did, gave four batches of 2 + 2
    assert engine.calls == [4, 3, 1]


def test_onnx_backend_answers_like_torch(tmp_path_factory, run_dir, rows, client):
    from fastapi.testclient import TestClient

    folder = exported(tmp_path_factory, run_dir, "onnx", "--format", "onnx", "--quantize", "int8")
    body = {"tasks": TASKS, "inputs": _inputs(rows, "mrpc", 10)}
    want = client.post("/predict", json=body).json()["results"]
    for backend, tol in (("onnx", 1e-5), ("onnx-int8", None)):
        with TestClient(create_app(load_engine(folder, backend=backend), OPTIONS)) as c:
            assert c.get("/health").json()["backend"] == backend
            got = c.post("/predict", json=body).json()["results"]
        for task in TASKS:
            key = "score" if task in ("stsb", "qnlirank") else "probabilities"
            for g, w in zip(got[task], want[task]):
                if tol is None:  # int8: answers of the same form (values differ: reported by export)
                    assert g.keys() == w.keys()
                elif key == "score":
                    assert g["score"] == pytest.approx(w["score"], abs=tol)
                else:
                    assert g["probabilities"] == pytest.approx(w["probabilities"], abs=tol)


def _start(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, int, list[str], threading.Thread]:
    """Start ``mtdnn serve --port 0`` and read the port uvicorn bound from its log."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
        if m:
            reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
            reader.start()
            return proc, int(m.group(1)), lines, reader
    proc.kill()
    raise AssertionError("the server did not start:\n" + "".join(lines[-30:]))


def test_real_server_on_loopback_stops_on_sigterm(run_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mtdnn", "serve", str(run_dir), "--host", "127.0.0.1", "--port", "0",
           "--max-wait-ms", "1500", "--threads", "1"]
    proc, port, lines, reader = _start(cmd, env)
    try:
        url = f"http://127.0.0.1:{port}"
        assert json.load(urllib.request.urlopen(f"{url}/health", timeout=30))["status"] == "ok"
        answer: dict = {}

        def ask() -> None:  # waits ~1.5 s in the micro-batcher: in flight when SIGTERM comes
            req = urllib.request.Request(f"{url}/predict", method="POST", headers={"content-type": "application/json"},
                                         data=json.dumps({"task": "sst2", "inputs": [{"text_a": "fine"}]}).encode())
            with urllib.request.urlopen(req, timeout=60) as r:
                answer.update(status=r.status, body=json.load(r))

        t = threading.Thread(target=ask)
        t.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert answer.get("status") == 200 and answer["body"]["results"]["sst2"][0]["label"] in ("0", "1")
        # uvicorn shuts down gracefully, then exits by the signal it caught (re-raised)
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    log = "".join(lines)
    assert "Waiting for application shutdown" in log and "Finished server process" in log, log[-2000:]


@pytest.mark.parametrize("module,check,extra", [("mtdnn.serve", "require_serve", "mtdnn[serve]"),
                                                ("mtdnn.export.onnx", "require_onnx", "mtdnn[onnx]")])
def test_missing_extra_is_named(monkeypatch, module, check, extra):
    import importlib
    import importlib.util

    from mtdnn.errors import ConfigError

    real = importlib.util.find_spec
    hidden = {"fastapi", "onnxruntime"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    with pytest.raises(ConfigError, match=re.escape(f"pip install '{extra}'")):
        getattr(importlib.import_module(module), check)()


@pytest.mark.parametrize("lengths, max_rows, groups", [
    ([10, 10, 10], 8, [[0, 1, 2]]),                       # equal lengths: one pass
    ([50, 10, 11, 52], 8, [[1, 2], [0, 3]]),              # two length bands: two passes, sorted
    ([10, 12], 8, [[0, 1]]),                              # 24 padded for 22 real: within 25%
    ([10, 16], 8, [[0, 1]]),                              # 32 padded for 26 real: within 25%
    ([10, 17], 8, [[0], [1]]),                            # 34 padded for 27 real: over 25%
    ([7, 7, 7, 7, 7], 2, [[0, 1], [2, 3], [4]]),          # full passes split by rows
    ([], 8, []),
])
def test_length_groups_hand_computed(lengths, max_rows, groups):
    from mtdnn.export.engine import length_groups

    assert length_groups(lengths, max_rows=max_rows, waste=0.25) == groups


def test_length_grouped_passes_equal_one_padded_pass(run_dir, rows):
    """Rows of mixed lengths, run in length groups, answer as the whole batch padded to its longest
    does, in input order."""
    import torch

    engine = load_engine(run_dir)
    pairs = [p for t in ("rte", "mrpc", "stsb") for p in zip(*rows[t])]
    pairs.sort(key=lambda p: len(p[0]) + len(p[1]))
    mixed = pairs[:6] + pairs[-6:]
    mixed = [mixed[i] for i in (0, 11, 1, 10, 2, 9, 3, 8, 4, 7, 5, 6)]  # short and long interleaved
    a, b = [p[0] for p in mixed], [p[1] for p in mixed]
    enc = engine.tokenizer(a, b, truncation=True, max_length=engine.max_len, padding=True, return_tensors="np")
    from mtdnn.export.engine import length_groups

    assert len(length_groups([int(m.sum()) for m in enc["attention_mask"]])) > 1  # the test needs mixed lengths
    inputs = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()
              if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.inference_mode():
        whole = engine._forward(inputs, ["rte", "mrpc", "stsb"])
    grouped = engine.run(a, b, ["rte", "mrpc", "stsb"])
    for t in ("rte", "mrpc", "stsb"):
        np.testing.assert_allclose(grouped[t], whole[t], atol=1e-5, rtol=0)
