"""What a run directory holds, and saving/loading it, in one place.

::

    RUN_DIR/
      config.yaml              the resolved TrainConfig
      tasks.yaml               the resolved task definitions; when the run finishes, with the
                               fields chosen in training at each task's kept epoch (a span
                               v2.0 task's null_threshold, kinds/span.py)
      encoder/                 encoder config.json + tokenizer files (weights are in checkpoints)
      checkpoints/epoch-N.safetensors   model weights (encoder + all heads), safetensors only
      selection.json           {"tasks": {task: epoch}, "last": epoch}: which epoch each task keeps
      metrics.json             task -> split -> metric -> value, for each task's kept epoch
      history.jsonl            one JSON line per epoch (train losses, dev metrics, times)
      tb/                      TensorBoard event files
      submissions/*.tsv        GLUE submission files for test splits
      reports/<task>.<split>.json           per-class precision/recall/F1, averaged F1s and the
                               confusion matrix of each labeled dev/test split of a task that
                               predicts classes, at the epoch the task keeps (mtdnn/reports.py)
      reports/<task>.<split>.confusion.png  that confusion matrix drawn, for the selection dev split
                               (needs matplotlib, the ``plots`` extra)
      environment.json         where each attempt at the run trained (a resumed run adds one):
                               mtdnn, Python, the versions of the packages that move rounding
                               (torch, transformers, tokenizers, numpy, ...), the device and processor, the
                               processes and threads (runtime.environment); runs on different
                               processors round differently, by about a seed on small tasks
      holdout.json             with --selection-split holdout: the share and seed of the
                               held-out training rows and, per task, their source lines
                               (data/holdout.py); they are the evaluation split ``holdout``
      training.json            while a process trains the run: its pid, host and start time
                               (removed when it ends; left behind by a killed process)
      error.log                the traceback of an unexpected exception that stopped training
                               (error-rank<R>.log under torchrun; error-<command>.log for evaluate
                               or predict; see mtdnn/failures.py)

An adapter run (``--adapter lora``, ``model/adapters.py``) has the same files, and while it trains
its ``checkpoints/epoch-N.safetensors`` hold the whole model with every task's LoRA adapter (so the
per-task epoch selection, ``--resume`` and the submissions work as above). When it finishes, each
task's adapter and head are written from the epoch the task keeps, and the epoch checkpoints are
deleted; what it keeps instead::

      encoder/model.safetensors   the frozen encoder, stored once (transformers' format)
      adapters/<task>/            adapter_config.json + adapter_model.safetensors: peft's format,
                                  ``PeftModel.from_pretrained(encoder, RUN_DIR/adapters/<task>)``
      heads/<task>.safetensors    the task's head
      parameters.json             per task: trainable and stored parameters and bytes (metrics.json
                                  keeps its task -> split -> metric form)

A run is complete once ``metrics.json`` is written and no resumable state is left
(``checkpoints/resume/``, removed at the end); until then ``incomplete_reason`` says why it is not,
``load_run`` warns (or refuses, before the first epoch ends) and ``mtdnn train --resume`` continues it.

Every file mtdnn replaces (here, in checkpoints, caches and prediction files) goes through
``atomic_path`` / ``atomic_write``: written to ``.<name>XXXX.tmp`` beside it, fsynced, renamed into
place, and the directory fsynced, so a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, atomic_write, replace_durably
from .errors import CheckpointError
from .tasks.schema import TaskDef, parse_task


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with this pid exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json(path: str | Path, data: Any) -> None:
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def save_weights(path: str | Path, model: torch.nn.Module | dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Save a model's weights, or a state dict (e.g. the full weights gathered from FSDP shards)."""
    source = model if isinstance(model, dict) else model.state_dict()
    state = {k: v.detach().to("cpu").contiguous() for k, v in source.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})})


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("weights file not found", path=str(path))
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"unreadable or corrupt safetensors file ({str(e).splitlines()[0]})",
                              path=str(path)) from None


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ---- paths
    config_file = property(lambda self: self.path / "config.yaml")
    tasks_file = property(lambda self: self.path / "tasks.yaml")
    encoder_dir = property(lambda self: self.path / "encoder")
    metrics_file = property(lambda self: self.path / "metrics.json")
    history_file = property(lambda self: self.path / "history.jsonl")
    selection_file = property(lambda self: self.path / "selection.json")
    error_log = property(lambda self: self.path / "error.log")
    resume_state_file = property(lambda self: self.path / "checkpoints" / "resume" / "state.json")
    owner_file = property(lambda self: self.path / "training.json")
    environment_file = property(lambda self: self.path / "environment.json")
    holdout_file = property(lambda self: self.path / "holdout.json")
    tb_dir = property(lambda self: self.path / "tb")
    submissions_dir = property(lambda self: self.path / "submissions")

    def checkpoint(self, epoch: int) -> Path:
        return self.path / "checkpoints" / f"epoch-{epoch}.safetensors"

    # ---- writing
    def write_setup(self, config: dict[str, Any], tasks: list[TaskDef], tokenizer, encoder_config) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.config_file) as f:
            yaml.safe_dump(config, f, sort_keys=False)
        self._write_tasks(tasks)
        self._write_encoder_files(tokenizer, encoder_config)

    def _write_tasks(self, tasks: list[TaskDef]) -> None:
        with atomic_write(self.tasks_file) as f:
            yaml.safe_dump([t.model_dump(mode="json", exclude_defaults=False) for t in tasks], f, sort_keys=False)

    def record_task_fields(self, fields: dict[str, dict[str, Any]]) -> None:
        """Set the task fields a finished run chose while it trained (``TaskKind.chosen_fields``,
        e.g. a span task's ``null_threshold``; task -> field -> value) in tasks.yaml, where every
        later use of the run reads its tasks."""
        self._write_tasks([t.model_copy(update=fields.get(t.name, {})) for t in self.read_tasks()])

    def _write_encoder_files(self, tokenizer, encoder_config) -> None:
        """The encoder config and tokenizer files, saved into a temporary folder beside and then
        each replaced durably (``replace_durably``) in ``encoder/``."""
        self.encoder_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.path, prefix=".encoder", suffix=".tmp") as tmp:
            encoder_config.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            for src in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
                dest = self.encoder_dir / src.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                replace_durably(src, dest)

    def append_history(self, record: dict[str, Any]) -> None:
        with open(self.history_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ---- reading
    def _require(self, p: Path) -> Path:
        if not p.exists():
            raise CheckpointError(f"not a complete mtdnn run directory ({p.name} missing)", path=str(self.path))
        return p

    def _load(self, p: Path, kind: str, parse) -> Any:
        """Read a run file (safe YAML or JSON only); anything unreadable is a CheckpointError."""
        try:
            return parse(self._require(p).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"unreadable {kind} ({first})", path=str(p)) from None

    def read_environment(self) -> list[dict[str, Any]]:
        """The environments of the attempts at the run, first to last ([] for a run of an older mtdnn)."""
        if not self.environment_file.is_file():
            return []
        data = self._load(self.environment_file, "environment record", json.loads)
        if not (isinstance(data, list) and all(isinstance(e, dict) for e in data)):
            raise CheckpointError("corrupt environment record", path=str(self.environment_file))
        return data

    def read_config(self) -> dict[str, Any]:
        data = self._load(self.config_file, "run config", yaml.safe_load)
        if not isinstance(data, dict):
            raise CheckpointError("a run config must be a mapping", path=str(self.config_file))
        return data

    def read_tasks(self) -> list[TaskDef]:
        data = self._load(self.tasks_file, "task list", yaml.safe_load)
        if not isinstance(data, list):
            raise CheckpointError("a run's tasks.yaml must be a list of tasks", path=str(self.tasks_file))
        return [parse_task(t, str(self.tasks_file)) for t in data]

    def read_selection(self) -> dict[str, Any]:
        sel = self._load(self.selection_file, "selection", json.loads)
        if not (isinstance(sel, dict) and isinstance(sel.get("tasks"), dict) and isinstance(sel.get("last"), int)):
            raise CheckpointError("corrupt selection file", path=str(self.selection_file))
        return sel

    # ---- the process training the run
    def claim_training(self) -> None:
        """Record this process as the one training the run (``training.json``)."""
        write_json(self.owner_file, {"pid": os.getpid(), "host": socket.gethostname(),
                                     "started": time.strftime("%Y-%m-%d %H:%M:%S")})

    def release_training(self) -> None:
        """Remove ``training.json`` if this process wrote it."""
        owner = self._owner()
        if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            self.owner_file.unlink(missing_ok=True)

    def _owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.owner_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None

    def training_now(self) -> str | None:
        """Who trains the run right now, in words (a living process of this machine), else None."""
        owner = self._owner()
        if owner is None or owner.get("host") != socket.gethostname() or not process_alive(owner["pid"]):
            return None
        return f"process {owner['pid']} of this machine has been training it since {owner.get('started', '?')}"

    def refuse_if_training(self) -> None:
        """A run another living process trains must not get a second writer (``--resume``, or a new
        run into its directory)."""
        busy = self.training_now()
        if busy is not None and self._owner().get("pid") != os.getpid():
            raise CheckpointError(f"the run is being trained now ({busy}): stop that process first; two "
                                  "processes must not write one run directory", path=str(self.path))

    def _stopped_how(self) -> str:
        """Why an incomplete run is not training, as far as the run directory tells."""
        busy = self.training_now()
        if busy is not None:
            return f" (it is still training: {busy})"
        if self.error_log.is_file():
            return f"; it stopped with an error, see {self.error_log}"
        owner = self._owner()
        if owner is None:
            return " (it is still training, or it was stopped)"  # a run of an older mtdnn: no training.json
        if owner.get("host") != socket.gethostname():
            return f" (it may still be training on {owner.get('host')}, process {owner['pid']})"
        return f" (it was stopped: process {owner['pid']}, which trained it, is gone)"

    def incomplete_reason(self) -> str | None:
        """None for a complete run (``metrics.json`` written, no resumable state left); else one line
        that says how far the run got, where its error log is, and how to continue it."""
        if self.metrics_file.is_file() and not self.resume_state_file.is_file():
            return None
        done = 0
        if self.selection_file.is_file():
            try:
                done = int(json.loads(self.selection_file.read_text(encoding="utf-8"))["last"])
            except (OSError, ValueError, KeyError, TypeError):
                done = 0
        epochs = ""
        if self.config_file.is_file():
            try:
                epochs = f" of {int(yaml.safe_load(self.config_file.read_text(encoding='utf-8'))['epochs'])}"
            except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
                epochs = ""
        progress = (f"it finished {done}{epochs} epochs" if done else "no epoch finished, so it has no weights")
        why = self._stopped_how()
        return (f"the run is incomplete: {progress}{why}; continue it with "
                f"`mtdnn train --resume {self.path}`")

    def weights_for(self, task: str | None = None) -> Path:
        """The checkpoint a task keeps (its best dev epoch), or the last epoch's."""
        sel = self.read_selection()
        epoch = sel["tasks"].get(task, sel["last"]) if task is not None else sel["last"]
        return self._require(self.checkpoint(epoch))
