"""Stress the clean exit of distributed runs: launch the 2-process gloo (CPU) training run of
tests/test_distributed.py N times through torchrun and count how many exit 0.

Not part of CI (each launch takes ~20 s on a 2-core machine). Usage::

    .venv/bin/python bench/ddp_stress.py [--runs 20] [--parallel ddp|fsdp] [--out DIR]

It prints one line per launch (exit code, seconds) and a summary; for a failed launch, the end of
its output. The exit trap this guards against: gloo processes that abort at interpreter exit
(SIGABRT, "terminate called without an active exception") after all their work, which torchrun
reports as a failed job (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def make_inputs(d: Path) -> dict:
    """A dropout-free tiny encoder and dropout-free copies of rte/stsb (as in the tests)."""
    from mtdnn.data.readers import data_dir_default
    from mtdnn.testing import dropout_free_tasks, tiny_encoder

    tiny_encoder(d / "encoder", dropout=0.0)
    dropout_free_tasks(d / "tasks.yaml")
    values = dict(tasks="rte0,stsb0", task_files=str(d / "tasks.yaml"), encoder=str(d / "encoder"),
                  data_dir=str(data_dir_default().resolve()), cache_dir=str(d / "cache"), epochs=2,
                  batch_size=7, max_train_examples=29, max_seq_len=32, lr=1e-3, grad_accum_steps=2,
                  seed=7, threads=1, progress=False, allow_hub=False, predict_test=False)
    (d / "run.yaml").write_text(yaml.safe_dump(values))
    return values


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"])
    ap.add_argument("--timeout", type=int, default=300, help="seconds per launch before it counts as a hang")
    ap.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="ddp-stress-") as tmp:
        d = Path(args.out or tmp)
        d.mkdir(parents=True, exist_ok=True)
        make_inputs(d)
        print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
              f"{args.runs} launches of torchrun --nproc_per_node 2 (gloo, {args.parallel})", flush=True)
        ok, seconds, failures = 0, [], []
        for i in range(1, args.runs + 1):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "mtdnn", "train", "--config", str(d / "run.yaml"), "--parallel", args.parallel,
                   "--output-dir", str(d / f"run-{i}")]
            t0 = time.monotonic()
            try:
                p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
                rc, tail = p.returncode, (p.stdout + p.stderr)[-3000:]
            except subprocess.TimeoutExpired:
                rc, tail = "hang", f"no exit within {args.timeout} s"
            dt = time.monotonic() - t0
            seconds.append(dt)
            ok += rc == 0
            print(f"launch {i:2d}: exit {rc}  {dt:5.1f} s", flush=True)
            if rc != 0:
                failures.append((i, tail))
        print(f"\n{ok}/{args.runs} launches exited 0; {min(seconds):.1f}-{max(seconds):.1f} s each "
              f"(median {sorted(seconds)[len(seconds) // 2]:.1f} s)")
        for i, tail in failures:
            print(f"\n--- launch {i} (end of its output) ---\n{tail}")
    return 0 if ok == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
