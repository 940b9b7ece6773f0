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
ranking. A kind that cuts its inputs itself (``TaskKind.serve_inputs``: tagging's windows of words,
span tasks' windows of question + context) is answered from the outputs of all rows of an input
together (``serve_answers``: entities, the answer span of a question). Every distinct encoder input
of a call runs once, in length-grouped passes, for all the tasks that read it: a sentence task and
a tagging task of the same text share the encoder pass where their tokens are the same (a text that
fits one window, with a WordPiece tokenizer).
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
    settings: dict[str, Any] = field(default_factory=dict)  # ``TaskKind.export_settings``
    output: str = "row"  # the head's output per ``row`` or per ``token`` (``TaskKind.export_head``)

    @property
    def takes_pair(self) -> bool:
        """Whether its encoder pass takes a pair of texts (pair, ranking and span tasks)."""
        return get_kind(self.type).reads_pairs(self.input)

    @property
    def kind(self) -> str:
        """The input its encoder pass takes: one text (``single``) or a pair (``pair``); tasks with
        the same one are run by one engine call."""
        return "pair" if self.takes_pair else "single"


def task_infos(tasks: dict[str, dict[str, Any]], order: list[str]) -> dict[str, TaskInfo]:
    """From the ``tasks`` and ``task_order`` of an exported config (``modeling_mtdnn.MtdnnConfig``)."""
    return {name: TaskInfo(name, s["type"], s["input"], list(s.get("labels", [])), s.get("head", {}).get("kind", "linear"),
                           s.get("epoch"), s["encoder"], s.get("metrics") or {}, s.get("adapter"),
                           dict(s.get("settings") or {}), (s.get("output") or {}).get("per", "row"))
            for name, s in ((n, tasks[n]) for n in order)}


class Engine(Protocol):
    tasks: dict[str, TaskInfo]
    backend: str

    def run(self, text_a: list[str], text_b: list[str] | None, tasks: list[str]) -> dict[str, Any]:
        """Each task's outputs for one input kind, in input order: its raw output rows, or for a
        kind that cuts its inputs itself (``TaskKind.serve_inputs``) its answers."""


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

    tasks: dict[str, TaskInfo]

    def run(self, text_a: list[str], text_b: list[str] | None, tasks: list[str]) -> dict[str, Any]:
        """Each task's outputs in input order (``Engine.run``): the encoder rows of all tasks
        (mtdnn's tokenisation of each input, and the rows of kinds that cut inputs themselves) are
        gathered, each distinct one run once, for the tasks that read it."""
        rows: list[dict[str, list[int]]] = []
        index: dict[tuple, int] = {}
        readers: list[set[str]] = []

        def unit(row: dict[str, list[int]], task: str) -> int:
            key = tuple((k, tuple(row[k])) for k in sorted(row))
            if key not in index:
                index[key] = len(rows)
                rows.append(row)
                readers.append(set())
            readers[index[key]].add(task)
            return index[key]

        own = {t: get_kind(self.tasks[t].type).serve_inputs(self.tasks[t], self.tokenizer, self.max_len, text_a,
                                                            text_b) for t in tasks}
        plain = [t for t in tasks if own[t] is None]
        where: dict[str, list[int]] = {}
        if plain:
            enc = self.tokenizer(text_a, text_b, truncation=True, max_length=self.max_len)
            keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
            where.update({t: [unit({k: list(enc[k][i]) for k in keys}, t) for i in range(len(text_a))] for t in plain})
        for t, encoded in own.items():
            if encoded is not None:
                columns = encoded.rows
                where[t] = [unit({k: columns[k][r] for k in columns}, t) for r in range(len(columns["input_ids"]))]
        out = self._run_rows(rows, readers)
        results: dict[str, Any] = {}
        for t in tasks:
            values = [out[u][t] for u in where[t]]
            encoded = own[t]
            results[t] = (np.stack(values) if encoded is None
                          else get_kind(self.tasks[t].type).serve_answers(self.tasks[t], encoded, values))
        return results

    def _run_rows(self, rows: list[dict[str, list[int]]], readers: list[set[str]]) -> list[dict[str, np.ndarray]]:
        """The outputs of each row for the tasks that read it, in length groups (``length_groups``);
        a per-token output cut to the row's tokens."""
        out: list[dict[str, np.ndarray]] = [{} for _ in rows]
        if not rows:
            return out
        columns = {k: [r[k] for r in rows] for k in rows[0]}
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for group in length_groups([len(r["input_ids"]) for r in rows]):
            tasks = [t for t in self.tasks if any(t in readers[i] for i in group)]
            got = self._forward(self._pad(columns, group), tasks)
            width = max(len(rows[i]["input_ids"]) for i in group)
            for r, i in enumerate(group):
                n = len(rows[i]["input_ids"])
                for t in readers[i]:
                    value = got[t][r]
                    if self.tasks[t].output == "token":
                        value = value[width - n:] if left else value[:n]
                    out[i][t] = value
        return out

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
