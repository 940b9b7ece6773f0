"""What an export takes from a run: which epoch each task's encoder and head come from, the dev
metrics of exactly those weights, the weights under the exported model's names, and a few real dev
rows to check an export against mtdnn's own model.

One encoder or several: with best-epoch selection the tasks of a run may keep
different epochs. By default every task is exported from one epoch (the last, or ``epoch``), so
that one encoder serves all tasks; ``per_task_epochs`` keeps each task's own epoch, one encoder per
distinct epoch. Either way the metrics recorded are those of the exported epoch, from the run's
``history.jsonl``. A run trained with LoRA adapters has one frozen encoder and each task's adapter
and head of the epoch it keeps (``export/adapters.py``; ``ExportPlan.lora``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.readers import data_dir_default, read_split
from ..errors import CheckpointError, ConfigError, MtdnnError
from ..model.adapters import load_adapter_model
from ..records import RawSplit
from ..run_dir import RunDir, load_weights
from ..tasks.schema import TaskDef
from .adapters import LoraExport, lora_export

log = logging.getLogger(__name__)


def encoder_key(epoch: int) -> str:
    return f"epoch-{epoch}"


@dataclass
class ExportPlan:
    """``epochs``: task -> the epoch its encoder and head come from (None: a task an adapter run
    carried over from the run it started from); ``metrics``: task -> split -> metric -> value at that
    epoch (empty where that epoch was not evaluated); ``lora``: an adapter run's frozen encoder,
    adapters and heads (None for other runs)."""

    run: RunDir
    config: dict[str, Any]
    tasks: list[TaskDef]
    epochs: dict[str, int | None]
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    lora: LoraExport | None = None

    def encoder_of(self, task: str) -> str:
        """The key of the encoder a task's pass runs (``encoders.<key>.*`` in the exported weights)."""
        if self.lora is not None:
            return self.lora.encoder_key
        epoch = self.epochs[task]
        assert epoch is not None, "only an adapter run carries tasks without an epoch"
        return encoder_key(epoch)

    def adapter_of(self, task: str) -> str | None:
        """The LoRA adapter a task's encoder pass uses (None: the plain encoder)."""
        return self.lora.adapter_of.get(task) if self.lora is not None else None

    def carried_note(self) -> str:
        """What the report and the model card say of a task without an epoch of this run."""
        origin = self.lora.origin if self.lora is not None else None
        return f"carried over from {origin or 'the run this one started from'}"

    @property
    def encoder_keys(self) -> list[str]:
        return sorted({self.encoder_of(t.name) for t in self.tasks}, key=lambda k: (len(k), k))

    @property
    def per_task(self) -> bool:
        return len(self.encoder_keys) > 1

    def head_of(self, task: TaskDef) -> str:
        return task.head_from or task.name


def _history(run: RunDir) -> dict[int, dict[str, Any]]:
    if not run.history_file.is_file():
        return {}
    records = {}
    for n, line in enumerate(run.history_file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:
                raise CheckpointError("unreadable history line", path=str(run.history_file), line=n) from None
            records[int(rec["epoch"])] = rec
    return records


def _available_epochs(run: RunDir) -> list[int]:
    folder = run.path / "checkpoints"
    found = []
    for p in folder.glob("epoch-*.safetensors") if folder.is_dir() else []:
        number = p.name[len("epoch-"):-len(".safetensors")]
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


def plan_export(run_path: str | Path, epoch: int | None = None, per_task_epochs: bool = False) -> ExportPlan:
    """The plan of exporting the run at ``run_path`` (see the module docstring)."""
    run = RunDir(run_path)
    if not run.config_file.is_file():
        raise CheckpointError("not an mtdnn run directory (config.yaml missing)", path=str(run.path))
    config, tasks, selection = run.read_config(), run.read_tasks(), run.read_selection()
    for t in tasks:
        why = t.kind.refuses("export")
        if why:
            raise ConfigError(f"{why}: task '{t.name}' ({t.type}) cannot be exported", field="task")
    if per_task_epochs and epoch is not None:
        raise ConfigError("--epoch and --per-task-epochs exclude each other", field="epoch")
    if config.get("adapter", "none") != "none":
        return _plan_adapter_run(run, config, tasks, selection, _history(run), epoch)
    available = _available_epochs(run)
    chosen = selection["last"] if epoch is None else epoch
    if chosen not in available:
        shown = ", ".join(map(str, available)) or "none"
        raise ConfigError(f"the run has no checkpoint of epoch {chosen} (epochs saved: {shown})", field="epoch")
    own = {t.name: int(selection["tasks"].get(t.name, selection["last"])) for t in tasks if t.head_from is None}
    epochs = {}
    for t in tasks:
        src = own.get(t.head_from or t.name, selection["last"])
        epochs[t.name] = src if per_task_epochs else chosen
    for e in set(epochs.values()):
        if e not in available:
            raise CheckpointError(f"checkpoint of epoch {e} missing", path=str(run.checkpoint(e)))
    history = _history(run)
    metrics = {t.name: history.get(epochs[t.name], {}).get("dev", {}).get(t.name, {}) for t in tasks}
    return ExportPlan(run, config, tasks, epochs, metrics)


def _plan_adapter_run(run: RunDir, config: dict[str, Any], tasks: list[TaskDef], selection: dict[str, Any],
                      history: dict[int, dict[str, Any]], epoch: int | None) -> ExportPlan:
    """The export plan of an adapter run: each task from the epoch it keeps (a task carried over from
    the ``--init-from`` run: no epoch of this run), its dev metrics there."""
    if epoch is not None:
        raise ConfigError("an adapter run keeps each task's adapter and head of the epoch that task selected, "
                          "not whole epochs: export it without --epoch", field="epoch")
    lora = lora_export(load_adapter_model(run, tasks), config.get("init_from"))
    kept = selection.get("tasks", {})
    epochs: dict[str, int | None] = {}
    for t in tasks:
        own = kept.get(t.head_from or t.name)
        epochs[t.name] = int(own) if own is not None else None
    metrics = {t.name: history.get(e, {}).get("dev", {}).get(t.name, {}) if (e := epochs[t.name]) is not None else {}
               for t in tasks}
    return ExportPlan(run, config, tasks, epochs, metrics, lora=lora)


def export_state(plan: ExportPlan) -> dict[str, torch.Tensor]:
    """The exported model's weights: ``encoders.epoch-N.*`` from each exported epoch's checkpoint,
    ``heads.<task>.*`` from the epoch of that task (an adapter run: ``LoraExport.state``)."""
    if plan.lora is not None:
        return dict(plan.lora.state)
    state: dict[str, torch.Tensor] = {}
    for e in sorted(set(plan.epochs.values())):
        ckpt = load_weights(plan.run.checkpoint(e))
        key = encoder_key(e)
        for name, tensor in ckpt.items():
            if name.startswith("encoder."):
                state[f"encoders.{key}.{name[len('encoder.'):]}"] = tensor
        for t in plan.tasks:
            if t.head_from is None and plan.epochs[t.name] == e:
                prefix = f"heads.{t.name}."
                state.update({k: v for k, v in ckpt.items() if k.startswith(prefix)})
    return state


def report(plan: ExportPlan) -> list[str]:
    """One line per task: the epoch exported and its dev metrics there (what export prints)."""
    lines = []
    for t in plan.tasks:
        m = plan.metrics.get(t.name) or {}
        shown = "; ".join(f"{split} " + ", ".join(f"{k} {v:.2f}" for k, v in vals.items() if k != "score")
                          for split, vals in m.items()) or "no dev metrics recorded at this epoch"
        epoch = plan.epochs[t.name]
        where = f"epoch {epoch:<3}" if epoch is not None else plan.carried_note()
        lines.append(f"{t.name:<12} {where} {shown}")
    return lines


def check_rows(plan: ExportPlan, task: TaskDef, n: int = 32) -> RawSplit | None:
    """Up to ``n`` rows of the task's first labeled evaluation split (real dev rows), or None where
    the data cannot be read here (the caller says so)."""
    split = task.selection_split or (task.eval_splits[0] if task.eval_splits else None)
    if split is None:
        return None
    data_dir = plan.config.get("data_dir") or data_dir_default()
    try:
        raw = read_split(task, split, data_dir, allow_hub=False)
    except MtdnnError as e:
        log.warning("no dev rows to check task %s against (%s)", task.name, e)
        return None
    if task.kind.keeps_groups:  # whole candidate groups
        groups = raw.group_ids()
        return raw.select([i for i in range(len(raw)) if groups[i] < max(1, n // 2)][:n])
    return raw.select(list(range(min(n, len(raw)))))
