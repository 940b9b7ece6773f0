"""``mtdnn export``: a trained run as folders other tools load (Hugging Face, ONNX).

- ``plan.py``: which epoch each task comes from, the metrics of those weights, the weights renamed.
- ``modeling_mtdnn.py``: the modelling code copied into an exported folder (torch + transformers only).
- ``hf.py``: the whole-model Hugging Face folder and the standard one-task folder (``--task``).
- ``onnx.py``: one ONNX graph (every head a named output) and its int8 copy.
- ``adapters.py``: runs trained with ``--adapter lora`` (the frozen encoder with every task's adapter,
  or one task's adapter merged into it).
- ``card.py``: the model card; ``verify.py``: the self-check against mtdnn's own model;
  ``folder.py``: staging, the export marker, reading an export back (``Run``, ``mtdnn serve``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from .hf import write_hf_folder, write_task_folder
from .onnx import write_onnx_folder
from .plan import plan_export, report


def export_run(run_dir: str | Path, output: str | Path, fmt: Literal["hf", "onnx"] = "hf",
               task: str | None = None, epoch: int | None = None, per_task_epochs: bool = False,
               quantize: str | None = None) -> list[str]:
    """Export the run at ``run_dir`` to ``output``; returns the lines the CLI prints (what was
    exported: each task's epoch and dev metrics, and the self-check's largest differences)."""
    plan = plan_export(run_dir, epoch=epoch, per_task_epochs=per_task_epochs)
    notes: list[str] = []
    if fmt == "hf":
        if quantize:
            raise ConfigError("--quantize is for --format onnx", field="quantize")
        diffs = write_task_folder(plan, task, output) if task else write_hf_folder(plan, output)
    elif fmt == "onnx":
        if task:
            raise ConfigError("--task is for --format hf (an ONNX export holds every task)", field="task")
        diffs, notes = write_onnx_folder(plan, output, quantize=quantize)
    else:
        raise ConfigError(f"unknown format '{fmt}' (hf or onnx)", field="format")
    check = ", ".join(f"{t} {d:.1e}" for t, d in diffs.items())
    tasks = [t for t in plan.tasks if task is None or t.name == task]
    shown = [line for t, line in zip(plan.tasks, report(plan)) if t in tasks]
    return [f"exported {len(tasks)} task(s) to {output} ({fmt}"
            f"{', one encoder per task epoch' if plan.per_task and not task else ''})", *shown,
            f"largest difference from mtdnn's outputs on dev rows: {check}", *notes]
