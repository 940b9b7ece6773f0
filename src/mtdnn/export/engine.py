"""Inference engines behind ``mtdnn serve``: texts in, every asked task's output out, with one
encoder pass per input kind (and per encoder, and per LoRA adapter in a run trained with
``--adapter lora``) for all the tasks asked.

- ``TorchEngine``: the exported model (``modeling_mtdnn.MtdnnMultiTaskModel``) in this process, built
  from a run directory (``--epoch``/``--per-task-epochs`` as for export) or loaded from a
  whole-model export.
- ``OnnxEngine``: the ONNX graph of an ``--format onnx`` export on onnxruntime (fp32 or int8); a run
  directory or Hugging Face export is converted into a temporary folder first.

``present`` turns a task's raw output row into the answer: label and probabilities (softmax of the
logits, or of the SAN log-probabilities: the probabilities themselves), a score for regression and
ranking. A kind that cuts its inputs itself (``TaskKind.serve_inputs``: span tasks' windows of
question + context) has its rows run in the same length-grouped passes and its answers decoded
from all rows of an input together (``serve_answers``: the answer span of a question).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from ..errors import ConfigError
from ..kinds import get_kind
from ..model.multitask import load_tokenizer
from . import modeling_mtdnn as modeling
from .folder import export_format, register_config
from .hf import build_hf_model, export_tokenizer
from .onnx import write_onnx_model
from .plan import plan_export

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "onnx-int8"]
ROWS_PER_PASS = 128  # a request larger than this runs in several passes
PAD_WASTE = 0.25  # the share of padding a pass may hold before its rows are split by length


@dataclass(frozen=True)
class TaskInfo:
    """What ``GET /tasks`` shows of a task, and what answering it needs. ``adapter``: the LoRA adapter
    its encoder pass uses (runs trained with ``--adapter lora``; None otherwise)."""

    name: str
    type: str
    input: str
    labels: list[str]
    head: str
    epoch: int | None
    encoder: str
    dev_metrics: dict[str, Any] = field(default_factory=dict)
    adapter: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def takes_pair(self) -> bool:
        """Whether its encoder pass takes a pair of texts (pair, ranking and span tasks)."""
        return get_kind(self.type).reads_pairs(self.input)

    @property
    def kind(self) -> str:
        """The input its encoder pass takes: one text (``single``), a pair (``pair``), or a kind's own
        (``TaskKind.serve_pass``); tasks with the same one share a pass."""
        return get_kind(self.type).serve_pass(self.input, self.settings)


def task_infos(tasks: dict[str, dict[str, Any]], order: list[str]) -> dict[str, TaskInfo]:
    """From the ``tasks`` and ``task_order`` of an exported config (``modeling_mtdnn.MtdnnConfig``)."""
    return {name: TaskInfo(name, s["type"], s["input"], list(s.get("labels", [])), s.get("head", {}).get("kind", "linear"),
                           s.get("epoch"), s["encoder"], s.get("metrics") or {}, s.get("adapter"),
                           dict(s.get("settings") or {}))
            for name, s in ((n, tasks[n]) for n in order)}


class Engine(Protocol):
    tasks: dict[str, TaskInfo]
    backend: str

    def run(self, text_a: list[str], text_b: list[str] | None, tasks: list[str]) -> dict[str, Any]:
        """Each task's raw outputs (rows in input order) for one input kind (a kind that cuts its
        inputs itself: its answers)."""


def length_groups(lengths: list[int], max_rows: int = ROWS_PER_PASS, waste: float = PAD_WASTE) -> list[list[int]]:
    """Row indices in groups for padded passes: rows sorted by length, and a new group started when
    the group is full or padding it to its next (longer) row would make more than ``waste`` of its
    tokens padding. Mixed lengths (an RTE premise and an STS-B caption in one micro-batch) then cost
    about their real tokens instead of all being padded to the longest."""
    groups: list[list[int]] = []
    group: list[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        n = lengths[i]
        if group and (len(group) >= max_rows or (len(group) + 1) * n > (1 + waste) * (real + n)):
            groups.append(group)
            group, real = [], 0
        group.append(i)
        real += n
    return groups + ([group] if group else [])


class _Tokenizing:
    """Tokenises as mtdnn does (truncation to the run's max length); rows of similar length run
    together, each group padded to its longest (``length_groups``); outputs come back in input order."""

    tokenizer: Any
    max_len: int

    def _pad(self, rows: dict[str, list[list[int]]], index: list[int]) -> dict[str, np.ndarray]:
        width = max(len(rows["input_ids"][i]) for i in index)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        fill = {"input_ids": self.tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
        out = {}
        for key, values in rows.items():
            arr = np.full((len(index), width), fill[key], dtype=np.int64)
            for r, i in enumerate(index):
                v = values[i]
                if left:
                    arr[r, width - len(v):] = v
                else:
                    arr[r, :len(v)] = v
            out[key] = arr
        return out

    def run(self, text_a: list[str], text_b: list[str] | None, tasks: list[str]) -> dict[str, Any]:
        """Each task's raw output rows (one per input, in input order), or, for tasks of a kind that
        cuts its inputs itself, its list of answers; ``tasks`` share one encoder input (``TaskInfo.kind``)."""
        info = self.tasks[tasks[0]]
        kind = get_kind(info.type)
        own = kind.serve_inputs(info.settings, self.tokenizer, self.max_len, text_a, text_b)
        if own is not None:
            outputs = self._row_outputs(own.rows, tasks)
            return {t: kind.serve_answers(self.tasks[t].settings, own, outputs[t]) for t in tasks}
        enc = self.tokenizer(text_a, text_b, truncation=True, max_length=self.max_len)
        rows = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        results: dict[str, list[np.ndarray | None]] = {t: [None] * len(text_a) for t in tasks}
        for index in length_groups([len(x) for x in rows["input_ids"]]):
            out = self._forward(self._pad(rows, index), tasks)
            for t in tasks:
                for r, i in enumerate(index):
                    results[t][i] = out[t][r]
        return {t: np.stack(v) for t, v in results.items()}

    def _row_outputs(self, rows: dict[str, list[list[int]]], tasks: list[str]) -> dict[str, list[np.ndarray]]:
        """Each task's per-token outputs of each row, cut to the row's own tokens."""
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        results: dict[str, list[Any]] = {t: [None] * len(rows["input_ids"]) for t in tasks}
        for index in length_groups([len(x) for x in rows["input_ids"]]):
            out = self._forward(self._pad(rows, index), tasks)
            for t in tasks:
                width = out[t].shape[1]
                for r, i in enumerate(index):
                    n = len(rows["input_ids"][i])
                    results[t][i] = out[t][r, width - n:] if left else out[t][r, :n]
        return results

    def _forward(self, inputs: dict[str, np.ndarray], tasks: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class TorchEngine(_Tokenizing):
    backend = "torch"

    def __init__(self, model, tokenizer, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.max_len = int(model.config.max_seq_len)
        self.tasks = task_infos(model.config.tasks, model.config.task_order)

    def _forward(self, inputs: dict[str, np.ndarray], tasks: list[str]) -> dict[str, np.ndarray]:
        batch = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model(**batch, task=tasks).task_logits
        return {t: v.float().cpu().numpy() for t, v in out.items()}


class OnnxEngine(_Tokenizing):
    def __init__(self, folder: Path, int8: bool = False, threads: int = 1) -> None:
        import onnxruntime as ort  # the optional onnx extra, needed only by --backend onnx


        meta = json.loads((folder / "tasks.json").read_text(encoding="utf-8"))
        name = "model.int8.onnx" if int8 else "model.onnx"
        if not (folder / name).is_file():
            raise ConfigError(f"{name} not found (export with --quantize int8 for the int8 model)", path=str(folder))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / name), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = load_tokenizer(str(folder))
        self.max_len = int(meta["max_seq_len"])
        self.tasks = task_infos(meta["tasks"], meta["task_order"])
        self.backend = "onnx-int8" if int8 else "onnx"
        self._folder = folder

    def _forward(self, inputs: dict[str, np.ndarray], tasks: list[str]) -> dict[str, np.ndarray]:
        feeds = {k: inputs[k] if k in inputs else np.zeros_like(inputs["input_ids"]) for k in self.input_names}
        return dict(zip(tasks, self.session.run(tasks, feeds)))


def present(info: TaskInfo, row: np.ndarray) -> dict[str, Any]:
    """A task's answer for one input from its raw output row, as its kind presents it."""
    return get_kind(info.type).present(info.labels, row)


def load_engine(path: str | Path, backend: Backend = "torch", epoch: int | None = None,
                per_task_epochs: bool = False, threads: int = 1, device: str = "cpu") -> Engine:
    """The engine for a run directory or an export folder (see the module docstring)."""
    path = Path(path)
    fmt = export_format(path)
    if fmt == "hf-task":
        raise ConfigError("a one-task folder (--task): serve the run or its whole-model export", path=str(path))
    if (epoch is not None or per_task_epochs) and fmt is not None:
        raise ConfigError("--epoch and --per-task-epochs choose the weights of a run directory; an export "
                          "has its own", field="epoch")
    if backend == "torch":
        if fmt == "onnx":
            raise ConfigError("an ONNX export is served with --backend onnx (or onnx-int8)", path=str(path))
        return TorchEngine(*_torch_model(path, fmt, epoch, per_task_epochs), device=device)
    if fmt != "onnx":
        path = _convert_to_onnx(path, fmt, epoch, per_task_epochs, int8=backend == "onnx-int8")
    return OnnxEngine(path, int8=backend == "onnx-int8", threads=threads)


def _torch_model(path: Path, fmt: str | None, epoch: int | None, per_task_epochs: bool):
    if fmt == "hf":
        register_config()
        return modeling.MtdnnMultiTaskModel.from_pretrained(str(path)).eval(), load_tokenizer(str(path))
    plan = plan_export(path, epoch=epoch, per_task_epochs=per_task_epochs)
    tokenizer = export_tokenizer(plan)
    return build_hf_model(plan, tokenizer), tokenizer


def _convert_to_onnx(path: Path, fmt: str | None, epoch: int | None, per_task_epochs: bool, int8: bool) -> Path:
    """An ONNX folder made from a run directory or a whole-model export, in a temporary folder (kept
    until the process ends)."""
    model, tokenizer = _torch_model(path, fmt, epoch, per_task_epochs)
    out = Path(tempfile.mkdtemp(prefix="mtdnn-serve-onnx-"))
    log.info("converting %s to ONNX in %s", path, out)
    write_onnx_model(model, tokenizer, out, quantize="int8" if int8 else None)
    return out
