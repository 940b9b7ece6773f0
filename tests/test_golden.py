"""The golden run: a pinned 2-task tiny-encoder run must compute exactly what the code computed
when tests/golden/two_task.json was recorded (tests/golden/record.py): the same weights (sha256 of
every tensor), metrics.json, selection.json and history.jsonl (times aside).

Bitwise equality holds on the platform of a recording: the same processor, SIMD level and versions
of every package that can move rounding (torch, transformers, tokenizers, numpy, scipy,
scikit-learn, peft; scripts/setup.sh installs those of requirements/lock.txt, for which the file is
recorded). On any other platform rounding may legitimately differ: the test prints one line saying
what differs, and compares the selection exactly and the metrics and history to ``TOLERANCE``."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import record  # noqa: E402
from record import GOLDEN, platform_difference, run_golden  # noqa: E402

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4  # relative and absolute, off a recorded platform


def _differences(got: Any, want: Any, path: str, tolerance: float | None) -> Iterator[str]:
    """The paths where ``got`` differs from ``want`` (floats to ``tolerance``; None: exactly)."""
    if isinstance(want, dict) and isinstance(got, dict) and got.keys() == want.keys():
        for k in want:
            yield from _differences(got[k], want[k], f"{path}.{k}", tolerance)
    elif isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        for i, (g, w) in enumerate(zip(got, want)):
            yield from _differences(g, w, f"{path}[{i}]", tolerance)
    elif isinstance(want, float) and isinstance(got, (int, float)) and tolerance is not None:
        if not math.isclose(got, want, rel_tol=tolerance, abs_tol=tolerance):
            yield f"{path}: {got!r}, recorded {want!r}"
    elif got != want:
        yield f"{path}: {got!r}, recorded {want!r}"


def compare(got: dict, golden: dict) -> tuple[str | None, list[str]]:
    """Compare a golden run with the recording. Returns (why, differences): ``why`` is None where a
    recording of this platform exists and everything was compared bitwise, else the one line that
    says what differs from the recording's platform (metrics and history then to ``TOLERANCE``)."""
    diffs = list(_differences(got["selection"], golden["selection"], "selection", None))
    recordings = [golden, *golden.get("platforms", [])]
    mine = [r for r in recordings if not platform_difference(r["recorded_with"])]
    if mine:
        for key in ("metrics", "history", "weights"):
            diffs += _differences(got[key], mine[0][key], key, None)
        return None, diffs
    why = (f"golden run compared to {TOLERANCE:g}, not bitwise: no recording of this platform "
           f"({'; '.join(platform_difference(golden['recorded_with']))})")
    for key in ("metrics", "history"):
        diffs += _differences(got[key], golden[key], key, TOLERANCE)
    return why, diffs


def test_golden_two_task_run_is_unchanged(tmp_path, tiny_encoder, data_dir, capsys):
    golden = json.loads(GOLDEN.read_text())
    why, diffs = compare(run_golden(tmp_path, tiny_encoder, str(data_dir)), golden)
    if why:
        with capsys.disabled():
            print(f"\n{why}")
    assert not diffs, "\n".join(diffs[:20])


def test_golden_comparison_fails_when_the_step_changes(tmp_path, tiny_encoder, data_dir, monkeypatch):
    """A training step that really changes (every gradient shifted by 1e-3 before AdamW's update)
    fails both ways of comparing: bitwise on a recorded platform and to ``TOLERANCE`` elsewhere."""
    import torch

    golden = json.loads(GOLDEN.read_text())
    step = torch.optim.AdamW.step

    def shifted_step(self, *args, **kwargs):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.add_(1e-3)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", shifted_step)
    got = run_golden(tmp_path, tiny_encoder, str(data_dir))
    elsewhere = golden | {"recorded_with": {**golden["recorded_with"], "cpu": "another processor"}, "platforms": []}
    why, diffs = compare(got, elsewhere)
    assert why and "cpu another processor there" in why
    assert any(d.startswith("history") for d in diffs), diffs
    here = golden | {"recorded_with": {**golden["recorded_with"], "cpu": "?"}}
    here["platforms"] = [{**golden, "recorded_with": record.this_platform()}]
    why, diffs = compare(got, here)
    assert why is None and any(d.startswith("weights") for d in diffs), diffs


def test_platform_difference_names_every_package():
    here = record.this_platform()
    assert {"cpu", "cpu_capability", "torch", "transformers", "tokenizers", "numpy", "scipy",
            "scikit-learn", "peft"} <= here.keys()
    assert record.platform_difference(here) == []
    older = {k: v for k, v in here.items() if k != "tokenizers"}  # a recording that lacks a version
    assert record.platform_difference(older) == [f"tokenizers unrecorded there, {here['tokenizers']} here"]
    assert record.platform_difference({**here, "numpy": "0.1"}) == [f"numpy 0.1 there, {here['numpy']} here"]
