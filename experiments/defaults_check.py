"""Check the defaults of `mtdnn train` on the default encoder (issue: defaults that work).

For each task, the command a new user would type,

    mtdnn train --tasks T --max-train-examples 1000 --epochs 2

once with the current defaults and once with the paper's optimiser (`--optimizer adamax --lr 5e-5`,
the old defaults), everything else equal. Dev scores of the last epoch are written to
experiments/results/defaults_check.json after each run (a rerun skips the runs already there).

    .venv/bin/python experiments/defaults_check.py [--tasks rte,mrpc,stsb] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "defaults_check.json"
ARMS = {"defaults": {}, "paper_optimizer": {"optimizer": "adamax", "lr": 5e-5}}


def main() -> int:
    import torch

    import mtdnn
    from mtdnn.config import TrainConfig
    from mtdnn.runtime import cpu_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="rte,mrpc,stsb")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs-dir", default=str(HERE.parent / "runs" / "defaults_check"))
    args = ap.parse_args()
    results = json.loads(OUT.read_text()) if OUT.is_file() else {"runs": {}}
    defaults = TrainConfig(tasks=["rte"])
    results["defaults"] = {"optimizer": defaults.optimizer, "lr": defaults.lr, "batch_size": defaults.batch_size,
                           "warmup_ratio": defaults.warmup_ratio, "max_seq_len": defaults.max_seq_len}
    for task in args.tasks.split(","):
        for arm, extra in ARMS.items():
            key = f"{task}/{arm}"
            if key in results["runs"]:
                continue
            cfg = mtdnn.make_config(overrides={"tasks": task, "max_train_examples": 1000, "epochs": 2, **extra,
                                               "output_dir": f"{args.runs_dir}/{task}-{arm}", "threads": args.threads,
                                               "predict_test": False, "progress": False})
            t0 = time.time()
            run = mtdnn.train(cfg)
            metrics = json.loads((run / "metrics.json").read_text())[task]
            results["runs"][key] = {"task": task, "arm": arm, "optimizer": cfg.optimizer, "lr": cfg.lr,
                                    "dev": metrics, "wall_seconds": round(time.time() - t0, 1),
                                    "load_average": os.getloadavg(), "cpu": cpu_model(),
                                    "torch": torch.__version__, "threads": args.threads}
            OUT.parent.mkdir(parents=True, exist_ok=True)
            tmp = OUT.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1) + "\n")
            tmp.replace(OUT)
            print(f"{key}: {metrics}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
