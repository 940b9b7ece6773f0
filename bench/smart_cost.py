"""The cost of a SMART step (training/smart.py) against a plain step, measured: the same batches
of real RTE pairs, forward + backward + AdamW step, with the task's loss alone (``TaskLoss``),
with SMART (``--adv``, K ascent steps), and with SMART and the proximal term (``--adv-proximal``).
The variants take turns step by step; the first rounds are warm-up and not timed. Writes bench/results/smart_cost.json
and prints the table of docs/smart-and-distillation.md.

    .venv/bin/python bench/smart_cost.py [--encoders tiny,default] [--steps 8] [--threads 1] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _setup(encoder: str, batch_size: int, max_len: int):
    from mtdnn.data.batching import collate
    from mtdnn.data.pipeline import load_task_data
    from mtdnn.data.readers import data_dir_default
    from mtdnn.model.multitask import MultiTaskModel, load_encoder, load_tokenizer
    from mtdnn.tasks.registry import TaskRegistry

    tasks = TaskRegistry([]).resolve(["rte"], pair_head="san")  # as measured: RTE with its SAN head
    data = load_task_data(tasks, load_tokenizer(encoder), data_dir=data_dir_default(), max_len=max_len,
                          max_train_examples={"rte": 512}, with_tests=False)
    split = data["rte"].train
    order = np.argsort(-split.lengths)  # the longest rows: full-length batches
    batches = [collate(split, order[i:i + batch_size], pad_id=0) for i in range(0, 4 * batch_size, batch_size)]
    torch.manual_seed(0)
    model = MultiTaskModel(load_encoder(encoder), tasks)
    model.enable_cls_only()
    return model, batches


def measure(encoder: str, steps: int, batch_size: int, max_len: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per step of each variant; the variants take turns step by step (round robin),
    so a change in the machine's load falls on all of them alike."""
    from mtdnn.training.methods.smart import EmaAnchor, SmartLoss, SmartSettings
    from mtdnn.training.step import StepLoss, TaskLoss

    model, batches = _setup(encoder, batch_size, max_len)
    model.train()
    anchor = EmaAnchor(model, 0.99)
    variants = {"plain": TaskLoss(), "smart_k1": SmartLoss(SmartSettings(steps=1), TaskLoss()),
                "smart_k2": SmartLoss(SmartSettings(steps=2), TaskLoss()),
                "smart_k1_proximal": SmartLoss(SmartSettings(steps=1, proximal=True), TaskLoss(), anchor)}
    objectives = {name: StepLoss(model, compose) for name, compose in variants.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    anchor.follow(opt, model)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(warmup + steps):
        batch = batches[i % len(batches)]
        for name, objective in objectives.items():
            t0 = time.perf_counter()
            objective("rte", batch).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> int:
    from mtdnn.model.multitask import resolve_encoder_name
    from mtdnn.runtime import cpu_model
    from mtdnn.testing import tiny_encoder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoders", default="tiny,default")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", type=Path, default=HERE / "results" / "smart_cost.json",
                    help="the JSON file the measurements are added to (one key per encoder and batch shape)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.json_out
    results = json.loads(out.read_text()) if out.is_file() else {}
    print("| encoder | batch | plain step | SMART K=1 | SMART K=2 | SMART K=1 + proximal | machine |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders.split(","):
            path = str(tiny_encoder(Path(tmp) / "tiny")) if name == "tiny" else resolve_encoder_name(name)
            t = measure(path, args.steps, args.batch_size, args.max_len)
            key = f"{name}/{args.batch_size}x{args.max_len}"
            results[key] = {"seconds_per_step": t, "machine": cpu_model(), "torch": torch.__version__,
                            "threads": args.threads, "load_average": os.getloadavg(),
                            "measured": time.strftime("%Y-%m-%d %H:%M")}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1) + "\n")
            p = t["plain"]
            print(f"| {name} | {args.batch_size} x {args.max_len} | {p:.3f} s | {t['smart_k1']:.3f} s "
                  f"({t['smart_k1'] / p:.2f}x) | {t['smart_k2']:.3f} s ({t['smart_k2'] / p:.2f}x) | "
                  f"{t['smart_k1_proximal']:.3f} s ({t['smart_k1_proximal'] / p:.2f}x) | {cpu_model()}, "
                  f"{args.threads} thread(s), load {os.getloadavg()[0]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
