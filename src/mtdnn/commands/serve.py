"""``mtdnn serve RUN_DIR|EXPORT_DIR [--host 127.0.0.1 --port 8000] [--backend torch|onnx|onnx-int8]``:
every task of a run or an export over HTTP (``mtdnn/serve.py``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..serve import ServeOptions, require_serve, run_server
from .common import add_epoch_flags


def add_parser(sub: Any) -> None:
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
    add_epoch_flags(s)


def run(args: argparse.Namespace) -> int:
    require_serve()
    options = ServeOptions(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                           max_inputs=args.max_inputs, max_text_chars=args.max_text_chars)
    run_server(args.model_dir, host=args.host, port=args.port, backend=args.backend, options=options,
               epoch=args.epoch, per_task_epochs=args.per_task_epochs, threads=args.threads, device=args.device)
    return 0
