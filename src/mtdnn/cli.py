"""``mtdnn``: argument parsing only; the work is done by the modules it calls.

    mtdnn tasks
    mtdnn train [--config run.yaml] [--tasks rte,mrpc,stsb] [--epochs 3] ...
    mtdnn evaluate RUN_DIR [--tasks ...]
    mtdnn predict RUN_DIR --task rte --input pairs.tsv --output predictions.tsv
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Sequence

from .config import TrainConfig, load_config_file, make_config, resume_values
from .errors import MtdnnError

log = logging.getLogger("mtdnn")

# flags of `mtdnn train`: (flag, type, help); each maps to the TrainConfig field of the same name
_TRAIN_FLAGS: list[tuple[str, Any, str]] = [
    ("--tasks", str, "comma-separated task names (see `mtdnn tasks`)"),
    ("--task-file", str, "comma-separated YAML files defining your own tasks"),
    ("--data-dir", str, "root of the data files (default: $MTDNN_DATA_DIR, else ../shared/data)"),
    ("--encoder", str, "Hugging Face encoder name or local path (default: embedded all-MiniLM-L6-v2)"),
    ("--output-dir", str, "run directory to write"),
    ("--init-from", str, "start from the encoder (and matching heads) of a trained run: stage-2 fine-tuning"),
    ("--resume", str, "continue a killed run from its last checkpoint (RUN_DIR; its config.yaml gives the config)"),
    ("--epochs", int, "training epochs (paper: 5)"),
    ("--batch-size", int, "training batch size, in examples (paper: 32)"),
    ("--eval-batch-size", int, "evaluation batch size"),
    ("--lr", float, "peak learning rate (paper: 5e-5)"),
    ("--optimizer", str, "adamax (paper) or adamw"),
    ("--weight-decay", float, "weight decay"),
    ("--warmup-ratio", float, "share of steps for linear warm-up (paper: 0.1)"),
    ("--max-grad-norm", float, "gradient clipping norm, 0 = off (paper: 1.0)"),
    ("--grad-accum-steps", int, "gradient accumulation steps"),
    ("--max-seq-len", int, "max tokens per example"),
    ("--max-train-examples", int, "per task: train on a fixed random subset of this size"),
    ("--max-eval-examples", int, "per evaluation split: use only the first N rows"),
    ("--subset-seed", int, "seed of the --max-train-examples subset"),
    ("--seed", int, "random seed (data order, dropout, head init)"),
    ("--eval-every", int, "evaluate every N epochs (and after the last)"),
    ("--selection", str, "best (each task keeps its best dev epoch) or last"),
    ("--cache-dir", str, "tokenised-data cache directory"),
    ("--device", str, "auto, cpu or cuda"),
    ("--precision", str, "fp32, bf16 or fp16 (autocast)"),
    ("--threads", int, "torch CPU threads"),
    ("--log-every", int, "TensorBoard step-logging interval"),
    ("--checkpoint-every", int, "also save a resumable checkpoint every N optimiser steps (always at epoch ends)"),
    ("--on-nan", str, "a NaN/inf loss: stop (default) the run, or skip the batch and count it"),
    ("--parallel", str, "under torchrun: ddp (a model replica per process) or fsdp (sharded; big encoders)"),
    ("--dist-timeout", int, "seconds a process waits for its peers before the job fails (torchrun runs)"),
]
_TRAIN_SWITCHES: list[tuple[str, str, str]] = [
    ("--no-predict-test", "predict_test", "do not write GLUE submission files"),
    ("--no-hub", "allow_hub", "never load data from the Hugging Face hub"),
    ("--no-group-by-length", "group_by_length", "plain random batches (no length grouping)"),
    ("--no-progress", "progress", "no progress bars"),
    ("--compile", "compile", "torch.compile the encoder (does not pay on small CPUs)"),
    ("--no-cls-only-last-layer", "cls_only_last_layer",
     "always compute every position in the encoder's last layer (default: only [CLS] for heads that read only it)"),
    ("--activation-checkpointing", "activation_checkpointing",
     "recompute encoder activations in the backward pass (less memory, ~30% slower)"),
]


def _dest(flag: str) -> str:
    return {"task_file": "task_files"}.get(flag[2:].replace("-", "_"), flag[2:].replace("-", "_"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtdnn", description="Multi-task fine-tuning of Transformer encoders (MT-DNN).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("tasks", help="list the built-in tasks (and those of --task-file)").add_argument(
        "--task-file", default=None, help="comma-separated YAML files with your own tasks")

    t = sub.add_parser("train", help="train MT-DNN; flags override --config",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--config", help="YAML file of options (the names of the flags, with underscores)")
    for flag, typ, help_ in _TRAIN_FLAGS:
        t.add_argument(flag, type=typ, default=None, dest=_dest(flag), help=help_)
    for flag, field, help_ in _TRAIN_SWITCHES:
        const = field in ("compile", "activation_checkpointing")  # the others are --no-... switches
        t.add_argument(flag, dest=field, action="store_const", const=const, default=None, help=help_)

    e = sub.add_parser("evaluate", help="evaluate a saved run on its tasks' dev/test splits")
    e.add_argument("run_dir")
    e.add_argument("--tasks", default=None, help="comma-separated subset of the run's tasks")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--max-eval-examples", type=int, default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--output", default=None, help="also write the metrics as JSON here")

    r = sub.add_parser("predict", help="predict a file with a saved run")
    r.add_argument("run_dir")
    r.add_argument("--task", required=True)
    r.add_argument("--input", required=True, help="TSV (default), .csv or .jsonl file with a header")
    r.add_argument("--output", required=True, help="TSV: index, prediction[, p_label...]")
    r.add_argument("--text-a", default=None, help="column of the first text (default: the task's own)")
    r.add_argument("--text-b", default=None, help="column of the second text")
    r.add_argument("--id-column", default=None)
    r.add_argument("--batch-size", type=int, default=128)
    r.add_argument("--device", default="auto")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    file_values = load_config_file(args.config) if args.config else {}
    resume = getattr(args, "resume", None) or file_values.get("resume")
    if resume:  # the run's own config, then --config, then flags (train() rejects changed fields)
        file_values = {**resume_values(resume), **file_values, "resume": resume}
    fields = set(TrainConfig.model_fields)
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return make_config(file_values, overrides, source=args.config or "command line")


def _print_metrics(metrics: dict[str, dict[str, dict[str, float]]]) -> None:
    from .metrics import glue_average

    print(f"{'task':<12} {'split':<16} metrics")
    firsts = {}
    for task, splits in metrics.items():
        for split, m in splits.items():
            firsts.setdefault(task, m["score"])
            vals = ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "score")
            print(f"{task:<12} {split:<16} {vals}")
    print(f"average of the tasks' scores (GLUE-style): {glue_average(firsts):.2f}")


def _run(args: argparse.Namespace) -> int:
    if args.command == "tasks":
        from .tasks.registry import TaskRegistry
        reg = TaskRegistry([f for f in (args.task_file or "").split(",") if f])
        for name in reg.names():
            t = reg.get(name)
            desc = t.description.split(": ", 1)[-1].split(";")[0].split(". ")[0]
            print(f"{name:<10} {t.type:<14} {t.input:<7} head={t.head.kind:<6} {reg.origin(name):<9} {desc}")
        return 0
    if args.command == "train":
        from .training.loop import train
        import time
        cfg = config_from_args(args)
        t0 = time.perf_counter()
        run_dir = train(cfg)
        if os.environ.get("RANK", "0") != "0":  # a torchrun job: rank 0 reports
            return 0
        metrics = json.loads((run_dir / "metrics.json").read_text())
        print(f"\nrun directory: {run_dir}  (wall time {time.perf_counter() - t0:.0f} s)")
        _print_metrics(metrics)
        return 0
    if args.command == "evaluate":
        from .api import load_run
        run = load_run(args.run_dir, device=args.device)
        tasks = [t for t in args.tasks.split(",") if t] if args.tasks else None
        metrics = run.evaluate(tasks, data_dir=args.data_dir, batch_size=args.batch_size,
                               max_eval_examples=args.max_eval_examples)
        _print_metrics(metrics)
        if args.output:
            from .run_dir import write_json
            write_json(args.output, metrics)
        return 0
    if args.command == "predict":
        from .api import load_run
        run = load_run(args.run_dir, device=args.device)
        n = run.predict_file(args.task, args.input, args.output, text_a=args.text_a, text_b=args.text_b,
                             id_column=args.id_column, batch_size=args.batch_size)
        print(f"wrote {n} predictions to {args.output}")
        return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:  # the dropped pooler is reported as "unexpected" weights on every load
        import transformers
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    try:
        rc = _run(args)
    except MtdnnError as e:
        msg = " ".join(str(e).split())  # one line, whatever the message quotes from a file
        print(f"mtdnn: error: {msg if len(msg) <= 1000 else msg[:997] + '...'}", file=sys.stderr)
        rc = 2
    except KeyboardInterrupt:
        print("mtdnn: interrupted", file=sys.stderr)
        rc = 130
    except Exception as e:
        if _distributed_job() is None:
            raise
        rc = _distributed_job().report_crash(e)
    if _distributed_job() is not None:  # a torchrun process: leave through os._exit (see leave())
        _distributed_job().leave(rc)
    return rc


def _distributed_job():
    """The distributed module, if this process joined a torchrun job's process group."""
    mod = sys.modules.get("mtdnn.training.distributed")
    return mod if mod is not None and mod.joined() else None


if __name__ == "__main__":
    sys.exit(main())
