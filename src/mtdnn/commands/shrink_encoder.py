"""``mtdnn shrink-encoder --layers 0,2,4 --output encoders/minilm-l3 [--encoder default]``: an
encoder with only some of its layers, a smaller student (``model/shrink.py``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..model.shrink import parse_layers, shrink_encoder


def add_parser(sub: Any) -> None:
    s = sub.add_parser("shrink-encoder", help="save an encoder with only some of its layers (a smaller student)")
    s.add_argument("--encoder", default="default", help="encoder name or folder (default: the embedded MiniLM)")
    s.add_argument("--layers", required=True, help="0-based layers to keep, comma-separated (e.g. 0,2,4)")
    s.add_argument("--output", required=True, help="folder to write the smaller encoder to")


def run(args: argparse.Namespace) -> int:
    out = shrink_encoder(args.encoder, parse_layers(args.layers), args.output)
    print(f"wrote {out}")
    return 0
