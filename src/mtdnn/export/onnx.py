"""``mtdnn export --format onnx``: the whole multi-task model as one ONNX graph.

Inputs: what the tokenizer gives (``input_ids``, ``attention_mask``, and ``token_type_ids`` where the
tokenizer has them), int64, with dynamic batch and sequence axes. Outputs: one per task, named after
the task (the same values as the Hugging Face export's ``logits``; a per-token output, tagging's
(batch, tokens, tags) logits or a span task's (batch, tokens, 2) start and end logits of each window,
has the same dynamic axes); each encoder is in the graph once. Beside it, ``tasks.json`` holds each
task's type, labels, input kind, encoder, head output and settings, and the max
length; the tokenizer files are in the folder. ``--quantize int8`` adds ``model.int8.onnx``
(onnxruntime's dynamic quantisation: int8 weights of the matrix products).

The graph is made by torch's exporter (``torch.onnx.export(dynamo=True)``, which needs onnxscript)
and checked: onnxruntime's outputs against mtdnn's own model on real dev rows (fp32: to 1e-4); for
int8, the dev metric of each task with fp32 and int8 weights (``onnx_metrics``: tagging's entity F1
over words, span tasks' exact match and F1 over questions), reported, not required to be equal.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .card import model_card
from .folder import staged_folder, write_metadata
from .hf import build_hf_model, export_tokenizer
from .plan import ExportPlan, check_rows
from .verify import check_against_mtdnn, require_close, tokenized_batch

log = logging.getLogger(__name__)

OPSET = 18


def require_onnx() -> None:
    """A one-line error naming the extra when the ONNX libraries are missing."""
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"ONNX export and serving need {', '.join(missing)}: pip install 'mtdnn[onnx]'",
                          field="format")


class _AllHeads(nn.Module):
    """The exported model with every task's output as a separate graph output."""

    def __init__(self, model: nn.Module, names: list[str], with_types: bool) -> None:
        super().__init__()
        self.model, self.names, self.with_types = model, names, with_types

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids if self.with_types else None, task=self.names).task_logits
        return tuple(out[n] for n in self.names)


def export_graph(model: nn.Module, tokenizer, path: Path) -> list[str]:
    """Write the ONNX graph of ``model`` (a ``MtdnnMultiTaskModel``); returns its input names."""
    names = list(model.config.task_order)
    sample = tokenizer(["A man is playing a guitar in the park.", "Rain."], ["Music.", "It is wet outside today."],
                       padding=True, return_tensors="pt")
    with_types = "token_type_ids" in sample
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2)
    wrapper = _AllHeads(model.eval(), names, with_types)
    torch.onnx.export(wrapper, tuple(sample[k] for k in inputs), str(path), input_names=inputs, output_names=names,
                      dynamic_shapes={k: {0: batch, 1: seq} for k in inputs}, dynamo=True, opset_version=OPSET,
                      external_data=False, verbose=False)
    return inputs


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic  # the optional onnx extra

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def tasks_json(model: nn.Module, inputs: list[str]) -> dict[str, Any]:
    cfg = model.config
    return {"max_seq_len": int(cfg.max_seq_len), "inputs": inputs, "encoders": list(cfg.encoder_keys),
            "tasks": cfg.tasks, "task_order": list(cfg.task_order), "outputs": "one per task, named after it: class logits (linear head), "
            "log-probabilities (SAN head), a (batch, 1) score (regression, ranking), or per token (the task's "
            "output.per): (batch, tokens, tags) logits (tagging), (batch, tokens, 2) start and end logits (span "
            "tasks: one window of question + context per row; decode as mtdnn serve does)"}


def write_onnx_model(model: nn.Module, tokenizer, folder: Path, quantize: str | None = None) -> None:
    """The graph(s), ``tasks.json`` and the tokenizer into ``folder`` (no checks, no card)."""
    require_onnx()
    inputs = export_graph(model, tokenizer, folder / "model.onnx")
    if quantize == "int8":
        quantize_int8(folder / "model.onnx", folder / "model.int8.onnx")
    elif quantize is not None:
        raise ConfigError(f"unknown quantisation '{quantize}' (int8)", field="quantize")
    (folder / "tasks.json").write_text(json.dumps(tasks_json(model, inputs), indent=2), encoding="utf-8")
    tokenizer.save_pretrained(str(folder))


def _session_outputs(path: Path):
    """``candidate(inputs, task)`` of ``check_against_mtdnn`` on onnxruntime."""
    import onnxruntime as ort  # the optional onnx extra (require_onnx checked it)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(inputs: dict[str, torch.Tensor], task: str) -> np.ndarray:
        return session.run([task], {k: inputs[k].numpy() for k in names})[0]

    return run


def int8_metric_change(plan: ExportPlan, folder: Path, tokenizer, n_rows: int) -> dict[str, dict[str, float]]:
    """Task -> {metric -> int8 value minus fp32 value} on up to ``n_rows`` dev rows."""
    fp32, int8 = _session_outputs(folder / "model.onnx"), _session_outputs(folder / "model.int8.onnx")
    change: dict[str, dict[str, float]] = {}
    for t in plan.tasks:
        raw = check_rows(plan, t, n_rows)
        if raw is None or not raw.labels or raw.labels[0] is None:
            continue
        split, batch = tokenized_batch(t, raw, tokenizer, int(plan.config["max_seq_len"]))
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        scores = [t.kind.onnx_metrics(t, run(inputs, t.name), batch, split) for run in (fp32, int8)]
        change[t.name] = {k: scores[1][k] - scores[0][k] for k in scores[0] if k != "score"}
    return change


def write_onnx_folder(plan: ExportPlan, output: str | Path, quantize: str | None = None,
                      n_rows: int = 32) -> tuple[dict[str, float], list[str]]:
    """The ONNX export of a run, checked against mtdnn's model; returns each task's largest
    difference (fp32) and lines reporting the int8 metric change."""
    require_onnx()
    tokenizer = export_tokenizer(plan)
    model = build_hf_model(plan, tokenizer)
    notes: list[str] = []
    with staged_folder(output) as tmp:
        write_onnx_model(model, tokenizer, tmp, quantize)
        diffs = check_against_mtdnn(plan, _session_outputs(tmp / "model.onnx"), tokenizer, n_rows)
        require_close(diffs, 1e-4, "ONNX graph")
        if quantize == "int8":
            change = int8_metric_change(plan, tmp, tokenizer, max(n_rows, 200))
            (tmp / "int8_check.json").write_text(json.dumps(change, indent=2), encoding="utf-8")
            notes = ["int8 vs fp32 on dev rows (up to 200 per task; metric points): " + "; ".join(
                f"{t} " + ", ".join(f"{k} {v:+.2f}" for k, v in m.items()) for t, m in change.items())]
        write_metadata(tmp, "onnx", plan.epochs, plan.run.path, plan.config, plan.tasks)
        (tmp / "README.md").write_text(model_card(plan, plan.tasks, Path(output).name, onnx=True), encoding="utf-8")
    return diffs, notes
