"""The ``mtdnn export`` and ``mtdnn serve`` subcommands (registered by ``cli.py``)::

    mtdnn export RUN_DIR --format hf --output DIR [--task T] [--epoch N | --per-task-epochs]
    mtdnn export RUN_DIR --format onnx --output DIR [--quantize int8]
    mtdnn serve RUN_DIR|EXPORT_DIR [--host 127.0.0.1 --port 8000] [--backend torch|onnx|onnx-int8]
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

COMMANDS = ("export", "serve")


def _weights_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epoch", type=int, default=None,
                   help="the epoch whose weights serve every task (default: the run's last epoch)")
    p.add_argument("--per-task-epochs", action="store_true",
                   help="each task keeps its own selected epoch (one encoder per distinct epoch)")


def add_parsers(sub) -> None:
    """``mtdnn export`` and ``mtdnn serve`` on the CLI's subparsers."""
    from .serve import ServeOptions

    e = sub.add_parser("export", help="write a run as a Hugging Face folder or an ONNX graph")
    e.add_argument("run_dir", help="a run directory")
    e.add_argument("--format", choices=["hf", "onnx"], default="hf")
    e.add_argument("--output", required=True, help="the folder to write (replaced if an earlier export)")
    e.add_argument("--task", default=None, help="hf only: one task as a standard sequence-classification "
                   "folder (no custom code)")
    e.add_argument("--quantize", choices=["int8"], default=None, help="onnx only: also write model.int8.onnx")
    _weights_flags(e)

    d = ServeOptions()
    s = sub.add_parser("serve", help="serve every task of a run or an export over HTTP (FastAPI)")
    s.add_argument("model_dir", help="a run directory, or a folder written by mtdnn export")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="0: any free port (printed at start)")
    s.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="torch")
    s.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help="inputs gathered into one encoder pass (per input kind: pair, single) (1: no batching)")
    s.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help="how long a micro-batch waits for more requests")
    s.add_argument("--max-inputs", type=int, default=d.max_inputs, help="inputs per request")
    s.add_argument("--max-text-chars", type=int, default=d.max_text_chars, help="characters per text")
    s.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads")
    s.add_argument("--device", default="cpu")
    _weights_flags(s)


def run(args: argparse.Namespace) -> int:
    if args.command == "export":
        from .export import export_run

        for line in export_run(args.run_dir, args.output, fmt=args.format, task=args.task, epoch=args.epoch,
                               per_task_epochs=args.per_task_epochs, quantize=args.quantize):
            print(line)
        return 0
    from .serve import ServeOptions, require_serve, run_server

    require_serve()
    options = ServeOptions(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                           max_inputs=args.max_inputs, max_text_chars=args.max_text_chars)
    run_server(args.model_dir, host=args.host, port=args.port, backend=args.backend, options=options,
               epoch=args.epoch, per_task_epochs=args.per_task_epochs, threads=args.threads, device=args.device)
    return 0
