"""The golden run: a pinned 2-task tiny-encoder run must compute exactly what the code computed
when tests/golden/two_task.json was recorded (tests/golden/record.py): the same weights (sha256 of
every tensor), metrics.json, selection.json and history.jsonl (times aside).

Bitwise equality holds for the same torch build on the same kind of CPU kernels. Where torch
reports another CPU capability than the recording's (AVX2 vs AVX-512 kernels), float rounding may
legitimately differ: the test then says so and compares the metrics to 1e-4 instead of bitwise."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "golden"))
from record import GOLDEN, run_golden  # noqa: E402

pytestmark = pytest.mark.slow


def _same_platform(recorded: dict) -> bool:
    return (recorded["torch"] == torch.__version__
            and recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability())


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4)
    return a == b


def test_golden_two_task_run_is_unchanged(tmp_path, tiny_encoder, data_dir, capsys):
    golden = json.loads(GOLDEN.read_text())
    got = run_golden(tmp_path, tiny_encoder, str(data_dir))
    assert got["selection"] == golden["selection"]
    if _same_platform(golden["recorded_with"]):
        assert got["metrics"] == golden["metrics"]
        assert got["history"] == golden["history"]
        assert got["weights"] == golden["weights"]
    else:
        with capsys.disabled():
            print(f"\ntest_golden: recorded with {golden['recorded_with']}, running on torch "
                  f"{torch.__version__} / {torch.backends.cpu.get_cpu_capability()}: metrics and "
                  "history compared to 1e-4, weights not bitwise")
        assert _close(got["metrics"], golden["metrics"])
        assert _close(got["history"], golden["history"])
