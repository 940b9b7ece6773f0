"""Multi-task knowledge distillation (Liu, He, Chen, Gao 2019, "Improving Multi-Task Deep Neural
Networks via Knowledge Distillation"): an ensemble of trained multi-task runs (the teachers) gives
soft targets on every training example, and a student is trained on a mix of them and the gold
labels (``--teachers A,B,C``, ``--kd-alpha``, ``--kd-temperature``; ``mtdnn distill``)::

    loss = kd_alpha * KD(student, soft targets) + (1 - kd_alpha) * base(batch)   (base: the gold loss)

Soft targets (``soft_targets``), the teachers' outputs averaged, each teacher predicting with the
epoch its run keeps for that task:

- classification: ``mean_k softmax(log p_k / T)`` (``p_k``: teacher k's class probabilities; at
  T = 1 the mean of the probabilities); KD = ``T^2 * KL(target || softmax(z / T))`` per row
  (KL has the cross-entropy's gradient, and is 0 when the student matches);
- regression: the mean of the teachers' scores; KD = squared error;
- ranking: per question, ``mean_k softmax_group(gamma_k s_k / T)`` over its candidates; KD =
  ``T^2 * KL`` between that and the student's ``softmax_group(gamma z / T)``.

KD is summed over the batch's units and scaled like the task loss. The teachers' raw outputs are
computed once per (teacher weights, task definition, rows) and cached beside the tokenised data
(``<cache_dir>/soft_targets/``, atomic ``.npz`` files of plain arrays), so a second student, another
temperature or a resumed run reuses them. The batch's ``row_ids`` (``data/batching.collate``) pick
each row's target. Every teacher must have every task the student trains, defined with the same
type, input and labels in the same order; otherwise the run stops with an error that names both.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...config import TrainConfig
from ...data.pipeline import split_training_rows
from ...data.readers import data_dir_default, read_split
from ...data.tokenized import content_hash, default_cache_dir, tokenizer_fingerprint
from ...errors import CheckpointError, ConfigError
from ...export.folder import ExportedModel, export_format, open_model_dir
from ...model.multitask import load_tokenizer
from ...records import RawSplit
from ...run_dir import RunDir, atomic_path
from ...saved_model import SavedModel
from ...tasks.schema import TaskDef
from ..step import LossComposition
from .base import Method, MethodContext, refuse_kinds
from .capture import base_output, unit_scale

log = logging.getLogger(__name__)

SOFT_TARGET_VERSION = "1"


# ----------------------------------------------------------------------------- teachers
@dataclass
class Teacher:
    """A teacher: a finished run directory (plain or ``--adapter lora``) or a whole-model export
    (``mtdnn export --format hf``), with its config and task definitions."""

    path: str
    run: RunDir | ExportedModel
    config: dict[str, Any]
    tasks: dict[str, TaskDef]
    # loaded once per teacher: its weights' SHA-256 per task, its tokenizer, its model (``saved_model.SavedModel``)
    loaded: dict[str, Any] = field(default_factory=dict, repr=False)

    def weights_digest(self, task: str, cfg: TrainConfig) -> str:
        """Which weights the teacher predicts ``task`` with: the SHA-256 of the checkpoint file of a
        plain run (no model loaded), else of the tensors of its model loaded for the task."""
        key = f"digest:{task}"
        if key not in self.loaded:
            plain = isinstance(self.run, RunDir) and self.config.get("adapter", "none") == "none"
            self.loaded[key] = (_file_sha256(self.run.weights_for(task)) if plain
                                else self.model_run(cfg).weights_digest(task))
        return self.loaded[key]

    def tokenizer(self) -> Any:
        if "tokenizer" not in self.loaded:
            self.loaded["tokenizer"] = load_tokenizer(str(self.run.encoder_dir))
        return self.loaded["tokenizer"]

    def model_run(self, cfg: TrainConfig) -> Any:
        if "run" not in self.loaded:
            self.loaded["run"] = SavedModel(self.path, device=cfg.device, precision=cfg.precision)
        return self.loaded["run"]

    @classmethod
    def open(cls, path: str) -> "Teacher":
        if export_format(path) is None:
            run = RunDir(path)
            if not run.path.is_dir():
                raise ConfigError(f"teacher run directory '{path}' not found", field="teachers")
            if not run.metrics_file.is_file():
                raise CheckpointError("a teacher must be a finished run (metrics.json missing)", path=path)
        source = open_model_dir(path)  # an ONNX or one-task export: an error that says what to give instead
        return cls(path, source, source.read_config(), {t.name: t for t in source.read_tasks()})


def _definition(task: TaskDef) -> dict[str, Any]:
    return {"type": task.type, "input": task.input, "labels": list(task.labels)}


def _describe(task: TaskDef) -> str:
    d = _definition(task)
    return f"type {d['type']}, input {d['input']}" + (f", labels [{', '.join(d['labels'])}]" if d["labels"] else "")


def check_teachers(tasks: list[TaskDef], teachers: list[Teacher]) -> None:
    """Every teacher has every task the student trains, defined like the student's (type, input,
    labels in the same order); an error names the two that differ."""
    for task in tasks:
        for teacher in teachers:
            theirs = teacher.tasks.get(task.name)
            if theirs is None:
                raise ConfigError(f"teacher {teacher.path} has no task '{task.name}' (it has: "
                                  f"{', '.join(teacher.tasks)}); every teacher needs every task the student "
                                  "trains", field="teachers")
            if _definition(theirs) != _definition(task):
                other = next((f"teacher {t.path}" for t in teachers
                              if t is not teacher and _definition(t.tasks[task.name]) == _definition(task)),
                             "the student")
                raise ConfigError(f"task '{task.name}' is defined differently by teacher {teacher.path} "
                                  f"({_describe(theirs)}) and {other} ({_describe(task)}): their outputs do "
                                  "not line up", field="teachers")


# ----------------------------------------------------------------------------- the student's rows
def training_rows(task: TaskDef, cfg: TrainConfig) -> RawSplit:
    """The raw rows of the task's training split exactly as the student's run reads them (the same
    subset, without the rows held out for selection), so that row i here is row i of the
    student's tokenised split."""
    names = [n for n, s in task.splits.items() if s.role == "train"]
    if not names:
        raise ConfigError(f"task '{task.name}' has no training split to distill", field="tasks")
    raw = read_split(task, names[-1], cfg.data_dir or data_dir_default(), allow_hub=cfg.allow_hub)
    kept, _ = split_training_rows(raw, task, n_train=cfg.train_subset(task.name), seed=cfg.subset_seed,
                                  holdout_fraction=cfg.held_out_fraction())
    return kept


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class TeacherOutputs:
    outputs: np.ndarray   # classification: (N, C) probabilities; regression, ranking: (N,) scores
    gamma: float          # the teacher task's ranking gamma
    from_cache: bool


def teacher_outputs(teacher: Teacher, task: str, raw: RawSplit, cfg: TrainConfig,
                    cache_dir: Path) -> TeacherOutputs:
    """The teacher's outputs on ``raw`` with the weights it keeps for ``task``: from the cache, or
    predicted (and cached)."""
    t = teacher.tasks[task]
    tokenizer = teacher.tokenizer()
    max_len = int(teacher.config["max_seq_len"])
    key = hashlib.sha256(json.dumps({
        "v": SOFT_TARGET_VERSION, "weights": teacher.weights_digest(task, cfg), "task": t.model_dump(mode="json"),
        "rows": content_hash(t, raw, max_len, tokenizer_fingerprint(tokenizer))}, sort_keys=True).encode())
    path = cache_dir / "soft_targets" / f"{task}.{key.hexdigest()[:32]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            outputs = z["outputs"]
        if len(outputs) == len(raw):
            log.info("distillation: %s on %s: outputs from the cache %s", teacher.path, task, path.name)
            return TeacherOutputs(outputs, t.ranking_gamma, True)
    outputs = _predict(teacher, t, raw, cfg)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, outputs=outputs)
    log.info("distillation: %s on %s: outputs computed (%d rows), cached as %s", teacher.path, task, len(raw),
             path.name)
    return TeacherOutputs(outputs, t.ranking_gamma, False)


def _predict(teacher: Teacher, task: TaskDef, raw: RawSplit, cfg: TrainConfig) -> np.ndarray:
    """The teacher's raw outputs on the rows, as ``mtdnn predict`` computes them (``saved_model.SavedModel``)."""
    return teacher.model_run(cfg).predictions(task.name, raw, cfg.eval_batch_size).outputs.astype(np.float32)


# ----------------------------------------------------------------------------- soft targets
def soft_targets(task: TaskDef, outputs: list[TeacherOutputs], groups: np.ndarray, temperature: float) -> torch.Tensor:
    """The teachers' averaged soft targets at ``temperature`` (module docstring), per row, as the
    task's kind builds them from each teacher's outputs and ranking gamma."""
    return task.kind.distill_targets(task, [(o.outputs, o.gamma) for o in outputs], groups, temperature)


def distill_divergence(task: TaskDef, output: torch.Tensor, target: torch.Tensor,
                       batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """KD of the student's ``output`` against ``target`` (the batch's rows), summed over units."""
    return task.kind.distill_divergence(task, output, target, batch, temperature)


class DistillLoss(nn.Module):
    """``kd_alpha * KD + (1 - kd_alpha) * base`` for the tasks with soft targets; ``base`` alone
    for the others (a task without a training split of its own)."""

    def __init__(self, targets: dict[str, torch.Tensor], alpha: float, temperature: float, base: Any) -> None:
        super().__init__()
        self.targets, self.alpha, self.temperature, self.base = targets, alpha, temperature, base

    def forward(self, model: nn.Module, task: str, batch: dict[str, torch.Tensor],
                per_unit: float | None) -> torch.Tensor:
        gold, output = base_output(model, self.base, task, batch, per_unit)
        if task not in self.targets:
            return gold
        t = model.tasks[task]
        target = self.targets[task][batch["row_ids"].to(self.targets[task].device)].to(output.device)
        kd = distill_divergence(t, output, target, batch, self.temperature) * unit_scale(t, batch, per_unit)
        return self.alpha * kd + (1 - self.alpha) * gold


def distill_composition(cfg: TrainConfig, setup: Any, dist: Any, base: Any) -> DistillLoss:
    """The distillation composition of ``cfg.teachers`` around ``base``: teachers checked, their
    outputs on the student's training rows computed (rank 0 first, the others then read its cache)
    and averaged into soft targets on the run's device."""
    teachers = [Teacher.open(p) for p in cfg.teachers]
    trained = [t for t in setup.tasks if t.head_from is None and setup.data[t.name].train is not None]
    check_teachers(trained, teachers)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    targets: dict[str, torch.Tensor] = {}
    for turn in ([True, False] if dist.enabled else [True]):
        if dist.is_main == turn:
            for task in trained:
                targets[task.name] = _task_targets(task, teachers, setup.data[task.name].train, cfg, cache_dir)
        dist.barrier()
    log.info("distillation from %d teacher(s) on %s: kd_alpha %g, temperature %g", len(teachers),
             ", ".join(targets), cfg.kd_alpha, cfg.kd_temperature)
    return DistillLoss({k: v.to(setup.device) for k, v in targets.items()}, cfg.kd_alpha, cfg.kd_temperature, base)


def _task_targets(task: TaskDef, teachers: list[Teacher], split: Any, cfg: TrainConfig, cache_dir: Path) -> torch.Tensor:
    raw = training_rows(task, cfg)
    if list(raw.ids) != list(split.uids):
        raise RuntimeError(f"distillation: the rows read for {task.name} are not the training split's")
    outputs = [teacher_outputs(teacher, task.name, raw, cfg, cache_dir) for teacher in teachers]
    return soft_targets(task, outputs, split.groups, cfg.kd_temperature)


class Distillation(Method):
    """``--teachers``: the distillation composition around the run's (``distill_composition``)."""

    name = "distillation"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def compose(self, inner: LossComposition, run: MethodContext) -> LossComposition:
        refuse_kinds(self.name, run.model.tasks.values())
        return distill_composition(self.cfg, run.setup, run.dist, inner)
