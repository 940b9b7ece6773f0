#!/usr/bin/env python
"""Serving throughput and latency: ``mtdnn serve`` with one 5-task model against the usual
alternative, five single-task Hugging Face models (five ``pipeline``s in one process).

The model: RTE, MRPC, STS-B, CoLA and SST-2 on the embedded all-MiniLM-L6-v2 (SAN heads on RTE and
MRPC, as the built-in tasks define them). Unless ``--model RUN_OR_EXPORT`` is given, it is built here
from the embedded MiniLM's weights with fresh heads, and the five single-task models likewise (the
MiniLM with a fresh sequence-classification head): speed does not depend on the heads' values.

Workload: sentence pairs from the RTE, MRPC and STS-B dev sets, one pair per request, all five tasks
asked: the pair tasks answer the pair, the single-sentence tasks its first sentence. mtdnn then
needs two encoder passes per input (pair + single), the alternative five. Both are served the same
way: the same FastAPI app, HTTP on 127.0.0.1, the same micro-batcher (``--max-batch-size``,
``--max-wait-ms``), each pipeline called with that batch size; the models differ, and so does the
padding: mtdnn's engine runs a micro-batch's rows in length groups, a pipeline pads each batch to
its longest row (what ``pipeline`` does).

Scenarios (N = ``--clients`` concurrent clients, each sending its next request when the last is
answered; each bounded by ``--requests`` and ``--max-seconds``): mtdnn (torch) with and without
micro-batching, the five pipelines, mtdnn on ONNX fp32 and int8, and an adapter run of the same five
tasks (``--adapter lora`` on the frozen MiniLM: one LoRA adapter per task, so five encoder passes
per input instead of two; ``--no-adapters`` leaves it out). Reported: throughput (inputs with all
five answers per second) and p50/p95/p99 latency.

    python bench/serve.py --quick        # < 5 minutes on a 2-core CPU
    python bench/serve.py                # the full run

Loopback only; every server is a child process stopped at the end (also on errors). The last line
printed is one JSON object: ``serve_speedup_vs_pipelines``, ``microbatch_speedup``,
``backend_throughput`` and all measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

TASKS = ["rte", "mrpc", "stsb", "cola", "sst2"]
HOST = "127.0.0.1"
FRESH_NOTE = ("the models were built from the embedded MiniLM's weights with fresh (untrained) heads: "
              "speed does not depend on the heads' values")


# ----------------------------------------------------------------------------- the models
def build_fresh_run(root: Path, max_len: int) -> Path:
    """A run directory holding the 5-task model: the embedded MiniLM and fresh heads (epoch 1)."""
    import torch

    from mtdnn.data.readers import data_dir_default
    from mtdnn.model.multitask import MultiTaskModel, default_encoder_path, load_encoder, load_tokenizer
    from mtdnn.run_dir import RunDir, save_weights, write_json
    from mtdnn.tasks.registry import TaskRegistry

    tasks = TaskRegistry().resolve(TASKS, pair_head="san")  # as measured: RTE and MRPC with SAN heads
    name = default_encoder_path()
    encoder, tokenizer = load_encoder(name), load_tokenizer(name)
    torch.manual_seed(0)
    model = MultiTaskModel(encoder, tasks)
    run = RunDir(root / "mtdnn-run")
    run.write_setup({"tasks": TASKS, "max_seq_len": max_len, "encoder": "all-MiniLM-L6-v2 (embedded)",
                     "data_dir": str(data_dir_default())}, tasks, tokenizer, encoder.config)
    save_weights(run.checkpoint(1), model)
    write_json(run.selection_file, {"tasks": {t: 1 for t in TASKS}, "last": 1})
    return run.path


def build_adapter_run(root: Path, max_len: int, threads: int) -> Path:
    """An adapter run of the five tasks (rank 8 on query and value, mtdnn's defaults): trained for
    one epoch on 16 examples per task, which moves every adapter off its zero start (a fresh LoRA B
    is zero); speed does not depend on the values."""
    import mtdnn

    cfg = mtdnn.make_config(overrides={
        "tasks": ",".join(TASKS), "adapter": "lora", "output_dir": str(root / "adapter-run"), "epochs": 1,
        "max_train_examples": 16, "max_eval_examples": 16, "max_seq_len": max_len, "batch_size": 8,
        "predict_test": False, "progress": False, "threads": threads, "allow_hub": False})
    return Path(mtdnn.train(cfg))


def build_single_task_models(root: Path, max_len: int) -> Path:
    """Five standard sequence-classification folders (MiniLM + a fresh head each)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mtdnn.model.multitask import default_encoder_path
    from mtdnn.tasks.registry import TaskRegistry

    name = default_encoder_path()
    for t in TaskRegistry().resolve(TASKS):
        torch.manual_seed(0)
        n = len(t.labels) if t.type == "classification" else 1
        labels = {i: x for i, x in enumerate(t.labels)} if n > 1 else {0: "score"}
        model = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=n, id2label=labels, label2id={v: k for k, v in labels.items()},
            problem_type="regression" if n == 1 else "single_label_classification")
        tok = AutoTokenizer.from_pretrained(name)
        tok.model_max_length = max_len
        model.save_pretrained(root / "single" / t.name)
        tok.save_pretrained(root / "single" / t.name)
        (root / "single" / t.name / "input.txt").write_text(t.input)
    return root / "single"


class PipelinesEngine:
    """The alternative behind the same server: one ``text-classification`` pipeline per task."""

    backend = "pipelines"

    def __init__(self, folder: Path, batch_size: int) -> None:
        from transformers import pipeline

        from mtdnn.export.engine import TaskInfo

        self.pipes, self.tasks, self.batch_size = {}, {}, batch_size
        for t in TASKS:
            sub = folder / t
            kind = (sub / "input.txt").read_text().strip()
            self.pipes[t] = pipeline("text-classification", model=str(sub), device="cpu")
            labels = list(self.pipes[t].model.config.id2label.values())
            typ = "classification" if len(labels) > 1 else "regression"
            self.tasks[t] = TaskInfo(t, typ, kind, labels if typ == "classification" else [], "linear", None, t)

    def run(self, text_a, text_b, tasks):
        out = {}
        for t in tasks:
            pair = self.tasks[t].kind == "pair"
            inputs = [{"text": a, "text_pair": b} for a, b in zip(text_a, text_b)] if pair else list(text_a)
            res = self.pipes[t](inputs, batch_size=self.batch_size, truncation=True, top_k=None,
                                function_to_apply="none")
            order = self.pipes[t].model.config.label2id
            out[t] = np.array([[d["score"] for d in sorted(r, key=lambda d: order[d["label"]])] for r in res])
        return out


def serve_pipelines(args: argparse.Namespace) -> None:
    """The alternative's server (a child process of the benchmark)."""
    import torch
    import uvicorn

    from mtdnn.serve import ServeOptions, create_app

    torch.set_num_threads(args.threads)
    engine = PipelinesEngine(Path(args.serve_pipelines), args.max_batch_size)
    app = create_app(engine, ServeOptions(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms))
    uvicorn.Server(uvicorn.Config(app, host=HOST, port=0, log_level="info", access_log=False)).run()


# ----------------------------------------------------------------------------- servers and load
class Server:
    """A child server process on 127.0.0.1 (an ephemeral port read from its log); stopped on exit."""

    def __init__(self, cmd: list[str], timeout: float) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.log: list[str] = []
        deadline = time.monotonic() + timeout
        port = None
        while port is None and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        if port is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log[-20:]))
        threading.Thread(target=lambda: self.log.extend(self.proc.stdout), daemon=True).start()
        self.url = f"http://{HOST}:{port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


async def _load(url: str, pairs: list[tuple[str, str]], clients: int, requests: int,
                max_seconds: float) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    counter = iter(range(requests))
    async with httpx.AsyncClient(timeout=120) as client:
        for a, b in pairs[:4]:  # warm-up
            await client.post(f"{url}/predict", json={"tasks": TASKS, "inputs": [{"text_a": a, "text_b": b}]})
        start = time.perf_counter()

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() - start > max_seconds:
                    return
                a, b = pairs[i % len(pairs)]
                t0 = time.perf_counter()
                r = await client.post(f"{url}/predict", json={"tasks": TASKS, "inputs": [{"text_a": a, "text_b": b}]})
                if r.status_code != 200 or len(r.json()["results"]) != len(TASKS):
                    raise RuntimeError(f"bad answer {r.status_code}: {r.text[:200]}")
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "seconds": round(wall, 2), "throughput": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def measure(name: str, cmd: list[str], pairs, args: argparse.Namespace) -> dict[str, float]:
    with Server(cmd, timeout=args.start_timeout) as server:
        result = asyncio.run(_load(server.url, pairs, args.clients, args.requests, args.max_seconds))
    print(f"{name:<22} {result['throughput']:>8.1f} inputs/s  p50 {result['p50_ms']:.0f} ms  "
          f"p95 {result['p95_ms']:.0f} ms  p99 {result['p99_ms']:.0f} ms  ({result['requests']} requests, "
          f"{result['seconds']} s)", flush=True)
    return result


def dev_pairs(n: int) -> list[tuple[str, str]]:
    from mtdnn.data.readers import data_dir_default, read_split
    from mtdnn.tasks.registry import TaskRegistry

    reg = TaskRegistry()
    splits = [read_split(reg.get(t), "dev", data_dir_default(), allow_hub=False) for t in ("rte", "mrpc", "stsb")]
    pairs = [(s.text_a[i], s.text_b[i]) for i in range(max(len(s) for s in splits)) for s in splits if i < len(s)]
    return pairs[:n]


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer requests and shorter scenarios (< 5 minutes)")
    p.add_argument("--model", default=None, help="a 5-task run directory or export (default: built fresh)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=None, help="per scenario (default 2000; --quick 160)")
    p.add_argument("--max-seconds", type=float, default=None, help="per scenario (default 120; --quick 25)")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of each server")
    p.add_argument("--backends", default="torch,onnx,onnx-int8")
    p.add_argument("--no-adapters", action="store_true", help="leave out the adapter run's scenario")
    p.add_argument("--start-timeout", type=float, default=300)
    p.add_argument("--serve-pipelines", default=None, help=argparse.SUPPRESS)  # child mode
    args = p.parse_args(argv)
    args.requests = args.requests or (160 if args.quick else 2000)
    args.max_seconds = args.max_seconds or (25.0 if args.quick else 120.0)
    return args


def _mtdnn_cmd(model: Path, args: argparse.Namespace, backend: str, batch: int) -> list[str]:
    return [sys.executable, "-m", "mtdnn", "serve", str(model), "--host", HOST, "--port", "0", "--backend", backend,
            "--max-batch-size", str(batch), "--max-wait-ms", str(args.max_wait_ms), "--threads", str(args.threads)]


def run_benchmark(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="mtdnn-bench-serve-") as tmp:
        return _run_in(Path(tmp), args)


def _run_in(work: Path, args: argparse.Namespace) -> dict:
    from mtdnn.export import export_run

    t0 = time.perf_counter()
    model = Path(args.model) if args.model else build_fresh_run(work, args.max_seq_len)
    backends = [b for b in args.backends.split(",") if b]
    onnx_dir = None
    if any(b.startswith("onnx") for b in backends):
        onnx_dir = work / "onnx"
        for line in export_run(model, onnx_dir, fmt="onnx", quantize="int8"):
            print(line, flush=True)
    single = build_single_task_models(work, args.max_seq_len)
    pairs = dev_pairs(2000)
    print(f"{len(pairs)} dev sentence pairs; {args.clients} clients; batch {args.max_batch_size}, wait "
          f"{args.max_wait_ms} ms; {args.threads} threads per server", flush=True)
    results = {}
    for backend in backends:
        src = model if backend == "torch" else onnx_dir
        results[f"mtdnn_{backend}"] = measure(f"mtdnn {backend}", _mtdnn_cmd(src, args, backend, args.max_batch_size),
                                              pairs, args)
    results["mtdnn_torch_no_batching"] = measure("mtdnn torch, batch 1", _mtdnn_cmd(model, args, "torch", 1), pairs, args)
    alt = [sys.executable, __file__, "--serve-pipelines", str(single), "--max-batch-size", str(args.max_batch_size),
           "--max-wait-ms", str(args.max_wait_ms), "--threads", str(args.threads)]
    results["five_pipelines"] = measure("five pipelines", alt, pairs, args)
    if not args.no_adapters:
        adapters = build_adapter_run(work, args.max_seq_len, args.threads)
        results["mtdnn_torch_adapters"] = measure("mtdnn torch, adapters", _mtdnn_cmd(adapters, args, "torch",
                                                                                      args.max_batch_size), pairs, args)
    torch_thr = results.get("mtdnn_torch", {}).get("throughput")
    adapter_thr = results.get("mtdnn_torch_adapters", {}).get("throughput")
    return {
        "serve_speedup_vs_pipelines": round(torch_thr / results["five_pipelines"]["throughput"], 2) if torch_thr else None,
        "microbatch_speedup": round(torch_thr / results["mtdnn_torch_no_batching"]["throughput"], 2) if torch_thr else None,
        # five adapter passes per input against the shared encoder's two, and against the five pipelines
        "adapters_vs_shared_encoder": round(adapter_thr / torch_thr, 2) if adapter_thr and torch_thr else None,
        "adapters_vs_pipelines": round(adapter_thr / results["five_pipelines"]["throughput"], 2) if adapter_thr else None,
        "backend_throughput": {b: results[f"mtdnn_{b}"]["throughput"] for b in backends},
        "clients": args.clients, "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
        "threads": args.threads, "quick": args.quick, "models": "given: " + str(args.model) if args.model else FRESH_NOTE,
        "scenarios": results, "wall_seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    import transformers

    transformers.logging.set_verbosity_error()  # the fresh heads' "newly initialized" reports
    args = parse_args(argv)
    if args.serve_pipelines:
        serve_pipelines(args)
        return 0
    from mtdnn.runtime import cpu_model

    load_before = os.getloadavg()
    summary = run_benchmark(args)
    summary["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_before": load_before,
                          "load_average_after": os.getloadavg(),
                          "command": "python bench/serve.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(f"models: {summary['models']}")
    print(f"machine: {summary['machine']['cpu']}, {os.cpu_count()} cores, load average before "
          f"{load_before[0]:.2f}, after {summary['machine']['load_average_after'][0]:.2f}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
