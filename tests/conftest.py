"""Shared fixtures: the real data dir, a tiny randomly initialised encoder, offline hub settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests never reach the hub: without these, a hub name takes 20-40 s of retries to fail
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mtdnn.data.readers import data_dir_default  # noqa: E402

# one torch thread: the tiny models gain nothing from more, and on a 2-core machine shared with
# other work, 2 threads per process can make a tiny-model epoch 50-100x slower (spin-waiting)
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = data_dir_default()
    if not (d / "glue").is_dir():
        pytest.fail(f"real data not found at {d}: set MTDNN_DATA_DIR to the data directory (scripts/test.sh: ../shared/data)")
    return d


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A 2-layer BERT (hidden 32) with the embedded MiniLM's tokenizer, randomly initialised."""
    from mtdnn.testing import tiny_encoder as build

    return str(build(tmp_path_factory.mktemp("tiny-encoder")))


@pytest.fixture()
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "cache")
