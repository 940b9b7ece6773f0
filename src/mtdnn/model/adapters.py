"""Per-task LoRA adapters on a frozen, shared encoder: ``mtdnn train --adapter lora``.

The shared encoder stays frozen; each task trains a LoRA adapter (Hugging Face ``peft``) on the
encoder's layers named by ``--lora-targets`` (default ``query,value``: the attention's query and
value projections of BERT-like encoders) and its own head. Tasks train together as in Algorithm 1:
``MultiTaskModel.encode`` switches the encoder to the adapter of each batch's task
(``TaskAdapters.select_task``) before running it. Adding a task to a finished run trains only that
task's adapter and head (``--init-from RUN --tasks new --adapter lora``): the encoder comes frozen
from RUN, and RUN's other tasks are carried over unchanged, so that the new run serves them all.

What the module holds:

- ``LoraSettings``: rank, alpha, dropout and target layers (from ``TrainConfig``) as a peft config.
- ``TaskAdapters``: the frozen encoder with one named adapter per task (a ``peft.PeftModel``, one
  adapter active at a time); a task without an adapter (carried over from a plain run) runs the
  encoder with the adapters disabled.
- ``LoraHeads``: the head factory of adapter runs (``model/multitask.py: HeadFactory``): loads the
  ``--init-from`` run's encoder into the encoder before wrapping it, builds the heads, and loads
  the carried tasks' adapters and heads, frozen. ``SourceRun`` reads that run.
- ``finish_adapter_run``: the end of a run: each task's adapter (peft's format) and head
  (safetensors) from the epoch it keeps, the frozen encoder once, ``parameters.json``.
- ``load_adapter_model``: every task of a finished adapter run in one model (``api.Run``).
- ``print_parameters``: the trainable and stored parameters per task, as ``mtdnn train`` prints them.

The run directory of an adapter run (``run_dir.py`` describes the rest)::

    encoder/model.safetensors       the frozen encoder, stored once (AutoModel.from_pretrained(RUN/encoder))
    adapters/<task>/                adapter_config.json + adapter_model.safetensors: peft's format,
                                    PeftModel.from_pretrained(encoder, RUN/adapters/<task>)
    heads/<task>.safetensors        the task's head (``model/heads.py``)
    parameters.json                 per task: trainable and stored parameters, stored bytes
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from torch import nn

from ..config import TrainConfig
from ..errors import CheckpointError, ConfigError
from ..run_dir import RunDir, load_weights, replace_durably, save_weights, write_json
from ..tasks.schema import TaskDef
from .multitask import MultiTaskModel, encoder_from_config
from .weights import load_error_line, load_model_weights, load_strict

log = logging.getLogger(__name__)

EXTRA = "adapters"  # the optional dependencies: pip install 'mtdnn[adapters]'
PARAMETERS_FILE = "parameters.json"


def require_peft() -> ModuleType:
    """The ``peft`` package, or a one-line error naming the extra that installs it."""
    try:  # the optional 'adapters' extra: imported only by adapter runs
        import peft
    except ImportError:
        raise ConfigError(f"--adapter lora needs the peft package: pip install 'mtdnn[{EXTRA}]' "
                          "(or pip install 'peft>=0.13')", field="adapter") from None
    return peft


# ----------------------------------------------------------------------------- run directory paths
def adapter_dir(run: RunDir, task: str) -> Path:
    return run.path / "adapters" / task


def head_file(run: RunDir, task: str) -> Path:
    return run.path / "heads" / f"{task}.safetensors"


def encoder_weights_file(run: RunDir) -> Path:
    return run.encoder_dir / "model.safetensors"


def remove_adapter_files(run: RunDir) -> None:
    """Drop what an adapter run wrote at its end (a new run in the same directory starts clean)."""
    for d in (run.path / "adapters", run.path / "heads"):
        if d.is_dir():
            shutil.rmtree(d)
    for p in (encoder_weights_file(run), run.path / PARAMETERS_FILE):
        p.unlink(missing_ok=True)


def is_adapter_run(run: RunDir) -> bool:
    """Whether the run trained per-task adapters (its config says ``adapter: lora``)."""
    return run.read_config().get("adapter", "none") != "none"


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class LoraSettings:
    """LoRA's hyper-parameters: each target layer W x becomes W x + (alpha / rank) B A x, with A
    (rank x in) and B (out x rank, zero at the start) trained; dropout on the adapter's input."""

    rank: int
    alpha: int
    dropout: float
    targets: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "LoraSettings":
        return cls(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, tuple(cfg.lora_targets))

    def peft_config(self) -> Any:
        peft = require_peft()
        return peft.LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                               target_modules=list(self.targets), bias="none")


def check_targets(encoder: nn.Module, targets: tuple[str, ...]) -> None:
    """Every target must name layers of the encoder the way peft matches them (the module's full
    name, or its last dotted parts); the error lists the names the encoder has."""
    layers = [name for name, m in encoder.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in layers):
            names = sorted({name.rsplit(".", 1)[-1] for name in layers})
            raise ConfigError(f"'{target}' names no linear layer of the encoder ({type(encoder).__name__}); "
                              f"its layers are named: {', '.join(names)}", field="lora_targets")


def _check_adapter_name(task: str) -> None:
    if "." in task or task in "lora_":
        raise ConfigError(f"task '{task}' cannot name a peft adapter (names must have no '.' and not be part "
                          "of 'lora_'): rename the task to train it with --adapter lora", field="tasks")


def _adapter_of(name: str) -> str | None:
    """The adapter a parameter or state-dict entry belongs to (``...query.lora_A.rte.weight`` ->
    ``rte``); None for the encoder's own weights."""
    parts = name.split(".")
    return next((parts[i + 1] for i, part in enumerate(parts[:-1]) if part.startswith("lora_")), None)


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing``: its FutureWarning is noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


# ----------------------------------------------------------------------------- the wrapped encoder
class TaskAdapters(nn.Module):
    """The frozen shared encoder with a LoRA adapter per task: one ``peft.PeftModel`` holding every
    adapter, the one of the selected task active. ``new``: adapters to create and train (rank,
    alpha, ... of ``settings``); ``saved``: trained adapters to load frozen (peft folders, each with
    its own settings). A task with neither runs the encoder with the adapters disabled."""

    def __init__(self, encoder: nn.Module, new: list[str], settings: LoraSettings | None,
                 saved: dict[str, Path]) -> None:
        super().__init__()
        peft = require_peft()
        if not new and not saved:
            raise ConfigError("an adapter run needs at least one task with its own head", field="tasks")
        for name in [*new, *saved]:
            _check_adapter_name(name)
        self._base_keys = tuple(encoder.state_dict())
        encoder.requires_grad_(False)
        pending = list(saved.items())
        with _quiet_peft():
            self.peft = self._wrap(peft, encoder, new, settings, pending)
        self.adapters: tuple[str, ...] = (*new, *saved)
        # peft's set_adapter makes only the active adapter trainable: every new adapter must stay
        # trainable (the optimiser and DDP hold them all) and every loaded one frozen
        self._grad_flags = [(p, _adapter_of(n) in new) for n, p in self.peft.named_parameters()
                            if _adapter_of(n) is not None]
        self._active: str | None = None
        self.select_task(self.adapters[0])

    @staticmethod
    def _wrap(peft: ModuleType, encoder: nn.Module, new: list[str], settings: LoraSettings | None,
              saved: list[tuple[str, Path]]) -> Any:
        """The ``PeftModel`` over ``encoder`` with the new adapters created and the saved ones loaded."""
        if new:
            assert settings is not None, "new adapters need settings"
            check_targets(encoder, settings.targets)
            model = peft.get_peft_model(encoder, settings.peft_config(), adapter_name=new[0])
            for name in new[1:]:
                model.add_adapter(name, settings.peft_config())
        else:
            first, path = saved.pop(0)
            model = _load_saved(lambda p: peft.PeftModel.from_pretrained(
                encoder, p, adapter_name=first, is_trainable=False), path)
        for name, path in saved:
            _load_saved(lambda p, name=name: model.load_adapter(p, adapter_name=name, is_trainable=False), path)
        return model

    @property
    def config(self) -> Any:
        """The encoder's Hugging Face config."""
        return self.peft.get_base_model().config

    def get_input_embeddings(self) -> nn.Module:
        """The encoder's word embeddings (frozen; SMART perturbs their output)."""
        return self.peft.get_base_model().get_input_embeddings()

    def _restore_grad_flags(self) -> None:
        for p, trainable in self._grad_flags:
            if p.requires_grad != trainable:
                p.requires_grad_(trainable)

    def select_task(self, task: str) -> None:
        """Run the next forward passes through ``task``'s adapter (a task without one: none)."""
        name = task if task in self.adapters else None
        if name == self._active:
            return
        if name is not None:
            self.peft.set_adapter(name)
            self._restore_grad_flags()
        self._active = name

    def forward(self, **inputs: torch.Tensor) -> Any:
        if self._active is not None:
            return self.peft(**inputs)
        with self.peft.disable_adapter():
            out = self.peft(**inputs)
        self._restore_grad_flags()
        return out

    def adapter_parameters(self, task: str, trainable_only: bool = False) -> int:
        return sum(p.numel() for n, p in self.peft.named_parameters()
                   if _adapter_of(n) == task and (p.requires_grad or not trainable_only))

    def encoder_parameters(self) -> int:
        return sum(p.numel() for n, p in self.peft.named_parameters() if _adapter_of(n) is None)

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The frozen encoder's weights under its own names (those it had before the adapters)."""
        state = {key.replace(".base_layer.", "."): value
                 for key, value in self.peft.get_base_model().state_dict().items() if _adapter_of(key) is None}
        if set(state) != set(self._base_keys):
            raise RuntimeError("the encoder's weights without the adapters do not match its own names: "
                               f"{sorted(set(state) ^ set(self._base_keys))[:3]}")
        return state

    def save_adapter(self, task: str, folder: Path) -> None:
        """Write ``task``'s adapter in peft's format (``adapter_config.json``,
        ``adapter_model.safetensors``) into ``folder``, each file replaced atomically."""
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{task}", suffix=".tmp") as tmp:
            self.peft.save_pretrained(tmp, selected_adapters=[task])
            written = Path(tmp) if task == "default" else Path(tmp) / task  # peft: a sub-folder per name
            for src in sorted(written.glob("adapter_*")):
                replace_durably(src, folder / src.name)


def _load_saved(load, path: Path) -> Any:
    """Run a peft loading call on an adapter folder; a missing or unreadable one is a CheckpointError."""
    if not (path / "adapter_config.json").is_file():
        raise CheckpointError("not a saved adapter (adapter_config.json missing)", path=str(path))
    try:
        return load(str(path))
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as e:
        raise CheckpointError(f"cannot load the adapter ({load_error_line(e)})", path=str(path)) from None


# ----------------------------------------------------------------------------- the --init-from run
@dataclass
class SourceRun:
    """What an ``--init-from`` run gives an adapter run: its encoder, and its tasks' parts. A plain
    run's encoder is that of its last epoch; an adapter run's is its frozen ``encoder/``."""

    run: RunDir
    config: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "SourceRun":
        run = RunDir(path)
        return cls(run, run.read_config())

    @property
    def adapters(self) -> bool:
        return self.config.get("adapter", "none") != "none"

    @cached_property
    def _checkpoint(self) -> dict[str, torch.Tensor]:
        return load_weights(self.run.weights_for(None))

    def encoder_state(self) -> tuple[dict[str, torch.Tensor], Path]:
        if self.adapters:
            path = encoder_weights_file(self.run)
            return load_weights(path), path
        state = self._checkpoint
        encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        return encoder, self.run.weights_for(None)

    def head_state(self, task: str) -> tuple[dict[str, torch.Tensor], Path]:
        if self.adapters:
            return load_weights(head_file(self.run, task)), head_file(self.run, task)
        prefix = f"heads.{task}."
        return ({k[len(prefix):]: v for k, v in self._checkpoint.items() if k.startswith(prefix)},
                self.run.weights_for(None))

    def adapter_dir(self, task: str) -> Path | None:
        return adapter_dir(self.run, task) if self.adapters else None

    def carried(self, trained: set[str]) -> list[TaskDef]:
        """The run's tasks not trained again, carried over so that the new run serves them with
        unchanged predictions. From a plain run only the tasks that keep its last epoch (the
        encoder's) qualify; the others are named in a warning. A task that borrows a head comes
        along when the head's task is in the new run."""
        tasks = [t for t in self.run.read_tasks() if t.name not in trained]
        own = {t.name for t in tasks if t.head_from is None}
        if not self.adapters:
            sel = self.run.read_selection()
            stale = sorted(n for n in own if sel["tasks"].get(n) != sel["last"])
            if stale:
                log.warning("not carried over from %s: %s (they keep an earlier epoch than the encoder's, "
                            "epoch %d)", self.run.path, ", ".join(stale), sel["last"])
            own -= set(stale)
        kept = own | trained
        return [t for t in tasks if t.name in own or (t.head_from is not None and t.head_from in kept)]


# ----------------------------------------------------------------------------- head factories
class LoraHeads:
    """The head factory of ``--adapter lora`` runs (``model/multitask.py: RunHeads``): the
    encoder frozen (from ``--init-from`` when given) and wrapped with a new adapter per trained
    task; the tasks carried over from the ``--init-from`` run (``carried``) get their adapters and
    heads from it, frozen. A trained task that the ``--init-from`` run has too starts from its head
    (as ``training/setup.py: init_from_run`` does for plain runs) and a new adapter."""

    prunes_last_layer = False  # the adapters change the last layer: it runs in full

    def __init__(self, cfg: TrainConfig) -> None:
        require_peft()
        self.settings = LoraSettings.from_config(cfg)
        self.source = SourceRun.open(cfg.init_from) if cfg.init_from else None
        self.carried: list[TaskDef] = self.source.carried(set(cfg.tasks)) if self.source else []
        self._carried = {t.name for t in self.carried}
        self._source_tasks = {t.name: t for t in self.source.run.read_tasks()} if self.source else {}
        if self.carried and self.source is not None and self.source.config.get("max_seq_len") != cfg.max_seq_len:
            raise ConfigError(f"is {cfg.max_seq_len} but {cfg.init_from} has "
                              f"{self.source.config.get('max_seq_len')}: "
                              "the tasks carried over from it would see other inputs", field="max_seq_len")

    def encoder(self, encoder: nn.Module, tasks: list[TaskDef]) -> nn.Module:
        if self.source is not None:
            state, path = self.source.encoder_state()
            load_strict(encoder, state, path, "--init-from: the run's encoder")
        new = [t.name for t in tasks if t.head_from is None and t.name not in self._carried]
        saved = {t.name: d for t in tasks if t.name in self._carried and t.head_from is None
                 and self.source is not None and (d := self.source.adapter_dir(t.name)) is not None}
        log.info("adapters: %s new (rank %d on %s)%s", ", ".join(new) or "none", self.settings.rank,
                 ",".join(self.settings.targets), f"; carried over: {', '.join(sorted(self._carried))}"
                 if self._carried else "")
        return TaskAdapters(encoder, new, self.settings, saved)

    def head(self, task: TaskDef, hidden_size: int) -> nn.Module:
        head = task.kind.build_head(task, hidden_size)
        old = self._source_tasks.get(task.name)
        if old is None or self.source is None:
            return head
        if old.head_signature() != task.head_signature():
            raise ConfigError(f"--init-from: task '{task.name}' is defined differently in {self.source.run.path} "
                              f"(head {old.head_signature()} vs {task.head_signature()})", field="init_from")
        state, path = self.source.head_state(task.name)
        load_strict(head, state, path, f"--init-from: the head of task '{task.name}'")
        return head.requires_grad_(task.name not in self._carried)


    def load_init(self, model: nn.Module, run_path: str | Path, tasks: list[TaskDef]) -> None:
        return None  # ``encoder`` and ``head`` have loaded the run's parts already

    def finish(self, model: nn.Module, run: RunDir, selection: dict[str, int], trained: list[TaskDef],
               origin: str | None) -> None:
        """Each task's adapter and head, the frozen encoder and ``parameters.json`` (``finish_adapter_run``)."""
        finish_adapter_run(model, run, selection, trained, self.carried, origin)

    def complete(self, run: RunDir) -> None:
        """The epoch checkpoints go: their content is in adapters/, heads/ and encoder/."""
        remove_epoch_checkpoints(run)


class SavedAdapters:
    """The head factory of a finished adapter run: its frozen encoder with every task's saved
    adapter, and the saved heads."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def encoder(self, encoder: nn.Module, tasks: list[TaskDef]) -> nn.Module:
        saved = {t.name: adapter_dir(self.run, t.name) for t in tasks
                 if t.head_from is None and adapter_dir(self.run, t.name).is_dir()}
        return TaskAdapters(encoder, [], None, saved)

    def head(self, task: TaskDef, hidden_size: int) -> nn.Module:
        head = task.kind.build_head(task, hidden_size)
        path = head_file(self.run, task.name)
        load_strict(head, load_weights(path), path, f"the head of task '{task.name}'")
        return head.requires_grad_(False)


def load_adapter_model(run: RunDir, tasks: list[TaskDef]) -> MultiTaskModel:
    """Every task of a finished adapter run in one model: the encoder, each task's adapter and head."""
    require_peft()
    path = encoder_weights_file(run)
    if not path.is_file():
        raise CheckpointError("an adapter run writes its encoder, adapters and heads when it finishes, and "
                              f"this one has not: continue it with `mtdnn train --resume {run.path}`",
                              path=str(path))
    encoder = encoder_from_config(run.encoder_dir)
    load_strict(encoder, load_weights(path), path, "the run's encoder")
    return MultiTaskModel(encoder, tasks, SavedAdapters(run))


# ----------------------------------------------------------------------------- the end of a run
def finish_adapter_run(model: MultiTaskModel, run: RunDir, selection: dict[str, int], trained: list[TaskDef],
                       carried: list[TaskDef], origin: str | None) -> dict[str, Any]:
    """Write each task's adapter and head (a trained task's from the epoch it keeps), the frozen
    encoder and ``parameters.json``. Returns the parameter report. The epoch checkpoints are left
    for ``remove_epoch_checkpoints`` once the run is complete (a crash before then resumes)."""
    enc = model.encoder
    if not isinstance(enc, TaskAdapters):
        raise TypeError("finish_adapter_run needs a model built by LoraHeads")
    own = [t.name for t in trained if t.head_from is None]
    for epoch in sorted({selection[n] for n in own}):
        load_model_weights(model, run.checkpoint(epoch))
        for name in (n for n in own if selection[n] == epoch):
            _save_task(model, enc, run, name)
    for t in carried:
        if t.head_from is None:
            _save_task(model, enc, run, t.name)
    save_weights(encoder_weights_file(run), enc.base_state_dict())
    report = parameter_report(model, run, {t.name for t in carried}, origin)
    write_json(run.path / PARAMETERS_FILE, report)
    return report


def remove_epoch_checkpoints(run: RunDir) -> None:
    """A finished adapter run's epoch checkpoints: their content is in adapters/, heads/, encoder/."""
    for p in (run.path / "checkpoints").glob("epoch-*.safetensors"):
        p.unlink()


def _save_task(model: MultiTaskModel, enc: TaskAdapters, run: RunDir, task: str) -> None:
    if task in enc.adapters:
        enc.save_adapter(task, adapter_dir(run, task))
    save_weights(head_file(run, task), model.heads[task])


def parameter_report(model: MultiTaskModel, run: RunDir, carried: set[str], origin: str | None) -> dict[str, Any]:
    """Per task: its adapter's and head's parameters, how many this run trained (requires_grad),
    how many it stores and the bytes of its files; the shared encoder's, stored once."""
    enc = model.encoder
    assert isinstance(enc, TaskAdapters)
    tasks: dict[str, Any] = {}
    for name, head in model.heads.items():
        files = [head_file(run, name), *sorted(adapter_dir(run, name).glob("adapter_*"))]
        adapter, head_n = enc.adapter_parameters(name), sum(p.numel() for p in head.parameters())
        tasks[name] = {"trainable": enc.adapter_parameters(name, trainable_only=True)
                       + sum(p.numel() for p in head.parameters() if p.requires_grad),
                       "stored": adapter + head_n, "adapter": adapter, "head": head_n,
                       "stored_bytes": sum(f.stat().st_size for f in files if f.is_file()),
                       "carried_from": origin if name in carried else None}
    return {"encoder": {"parameters": enc.encoder_parameters(), "trainable": sum(
                p.numel() for n, p in enc.peft.named_parameters() if _adapter_of(n) is None and p.requires_grad),
                "stored_bytes": encoder_weights_file(run).stat().st_size},
            "tasks": tasks}


def print_parameters(run_dir: str | Path) -> None:
    """The parameter table of an adapter run (``parameters.json``); nothing for other runs."""
    path = Path(run_dir) / PARAMETERS_FILE
    if not path.is_file():
        return
    report = json.loads(path.read_text(encoding="utf-8"))
    print(f"\n{'task':<12} {'trainable':>12} {'stored':>12} {'stored MB':>10}  (adapter + head)")
    for name, t in report["tasks"].items():
        note = f"  carried over from {t['carried_from']}" if t.get("carried_from") else ""
        print(f"{name:<12} {t['trainable']:>12,} {t['stored']:>12,} {t['stored_bytes'] / 1e6:>10.3f}{note}")
    e = report["encoder"]
    print(f"frozen shared encoder: {e['parameters']:,} parameters, {e['stored_bytes'] / 1e6:.1f} MB, stored once")
