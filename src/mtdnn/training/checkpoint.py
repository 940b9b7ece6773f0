"""Resumable training state: save it atomically, load it back, and continue a killed run.

::

    RUN_DIR/checkpoints/resume/
      state.json                    the commit point: loop position, optimiser/scheduler non-tensor
                                    parts, Python and NumPy RNG states, and the names of the two
                                    tensor files below (a state is used only once this file names it)
      model-<tag>.safetensors       model weights (encoder + heads)
      train-<tag>.safetensors       optimiser tensors ("optim.<param>.<name>") and torch RNG states

Tensors go through safetensors and everything else through JSON: nothing is unpickled or evaluated.
Each file is written to a temporary name and renamed into place; ``state.json`` is written last, so a
crash at any moment leaves the previous complete state in use. Files of older states are deleted
after the commit.

A state is saved at the end of every epoch (after evaluation) and, with ``checkpoint_every N``,
after every N-th optimiser step inside an epoch. ``mtdnn train --resume RUN_DIR`` rebuilds the run
from its ``config.yaml``, restores the state and skips the batches of the epoch already done: the
epoch schedule depends only on (seed, epoch), and the torch RNG (dropout) is restored, so a resumed
run ends with the same weights and metrics as an uninterrupted one (bitwise on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from ..config import TrainConfig
from ..errors import CheckpointError, ConfigError
from ..model.adapters import remove_adapter_files
from ..model.weights import load_model_weights
from ..run_dir import RunDir, atomic_path, atomic_write, load_weights, write_json
from ..tasks.schema import TaskDef
from .state import LoopState

log = logging.getLogger(__name__)

STATE_VERSION = 1


def state_dir(run: RunDir) -> Path:
    return run.path / "checkpoints" / "resume"


def has_train_state(run: RunDir) -> bool:
    return (state_dir(run) / "state.json").is_file()


# ----------------------------------------------------------------------------- saving
def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = v
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _rng_json() -> dict[str, Any]:
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {"python": [py[0], list(py[1]), py[2]],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = st
    return out


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:  # .<name>XXXX.tmp beside it, fsynced, renamed, directory fsynced
        save_file(tensors, str(tmp))


def save_train_state(run: RunDir, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, loop: LoopState, method: torch.nn.Module | None = None) -> None:
    """Write a complete resumable state (model, optimiser, scheduler, RNGs, loop position, and the
    learned state of a method beyond the paper, ``method``, e.g. uncertainty weights)."""
    d = state_dir(run)
    d.mkdir(parents=True, exist_ok=True)
    tag = f"e{loop.epoch}b{loop.batch}-{uuid.uuid4().hex[:8]}"
    model_file, train_file = f"model-{tag}.safetensors", f"train-{tag}.safetensors"
    _save_tensors(d / model_file, {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()})
    optim_tensors, optim_json = _optimizer_parts(optimizer)
    method_tensors = {f"method.{k}": v.detach().to("cpu").contiguous()
                      for k, v in (method.state_dict() if method is not None else {}).items()}
    _save_tensors(d / train_file, {**optim_tensors, **_rng_tensors(), **method_tensors})
    state = {"version": STATE_VERSION, "model_file": model_file, "train_file": train_file,
             "sizes": {model_file: (d / model_file).stat().st_size, train_file: (d / train_file).stat().st_size},
             "loop": loop.saved(), "optimizer": optim_json, "scheduler": scheduler.state_dict(),
             "rng": _rng_json()}
    write_json(d / "state.json", state)  # the commit point
    for p in d.iterdir():
        if p.name not in ("state.json", model_file, train_file):
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- loading
def _bad(message: str, path: Path) -> CheckpointError:
    return CheckpointError(f"cannot resume: {message}", path=str(path))


def load_train_state(run: RunDir, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, batches_per_epoch: int, method: torch.nn.Module | None = None) -> LoopState | None:
    """Restore model, optimiser, scheduler and RNG states from the run's resume state; returns the
    loop position, or None when the run has none yet (killed before its first checkpoint)."""
    d = state_dir(run)
    state_file = d / "state.json"
    if not state_file.is_file():
        return None
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _bad(f"unreadable state ({e})", state_file) from None
    try:
        if state.get("version") != STATE_VERSION:
            raise _bad(f"state version {state.get('version')!r}, expected {STATE_VERSION}", state_file)
        model_path, train_path = d / Path(state["model_file"]).name, d / Path(state["train_file"]).name
        for p in (model_path, train_path):
            if not p.is_file():
                raise _bad("file missing", p)
            if p.stat().st_size != state["sizes"][p.name]:
                raise _bad("truncated or modified file (size differs from the state)", p)
        loop = LoopState.from_saved(state["loop"])
        if loop.batches_per_epoch != batches_per_epoch:
            raise _bad(f"the run had {loop.batches_per_epoch} batches per epoch, the data now gives "
                       f"{batches_per_epoch} (the training data changed)", state_file)
        load_model_weights(model, model_path)
        tensors = load_weights(train_path)
        _restore_optimizer(optimizer, tensors, state["optimizer"], train_path)
        scheduler.load_state_dict(state["scheduler"])
        _restore_rng(tensors, state["rng"])
        if method is not None:
            method.load_state_dict({k[len("method."):]: v for k, v in tensors.items() if k.startswith("method.")})
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise _bad(f"corrupt state ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                   state_file) from None
    return loop


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                       parts: dict[str, Any], path: Path) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, values in parts["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    groups = parts["param_groups"]
    for g in groups:
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
    current = optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current]:
        raise _bad("the optimiser state does not fit the model's parameters", path)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _restore_rng(tensors: dict[str, torch.Tensor], rng: dict[str, Any]) -> None:
    py = rng["python"]
    random.setstate((int(py[0]), tuple(int(x) for x in py[1]), py[2]))
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                       key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("the run saved %d CUDA RNG states, this machine has %d GPUs: dropout differs "
                        "from an uninterrupted run", len(cuda), torch.cuda.device_count())


# ----------------------------------------------------------------------------- run directory
def read_history(run: RunDir, completed_epochs: int) -> list[dict[str, Any]]:
    """The history records of the completed epochs, once each and in order; ``history.jsonl`` is
    rewritten to hold exactly those (a crash may have left a later or a half-written line)."""
    records: dict[int, dict[str, Any]] = {}
    if run.history_file.is_file():
        for line in run.history_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
                epoch = int(rec["epoch"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the crash
            if 1 <= epoch <= completed_epochs:
                records[epoch] = rec
    missing = [e for e in range(1, completed_epochs + 1) if e not in records]
    if missing:
        raise CheckpointError(f"cannot resume: history of epoch {missing[0]} missing", path=str(run.history_file))
    history = [records[e] for e in range(1, completed_epochs + 1)]
    with atomic_write(run.history_file) as f:
        for rec in history:
            f.write(json.dumps(rec) + "\n")
    return history


def remove_train_state(run: RunDir) -> None:
    """Drop the resume state (a finished run has nothing to continue)."""
    d = state_dir(run)
    if d.is_dir():
        for p in d.iterdir():
            p.unlink(missing_ok=True)
        d.rmdir()


def reset_run_state(run: RunDir) -> None:
    """A fresh run in a directory that holds an earlier run: drop that run's results and states, so
    nothing of it is mistaken for this run's (its config, tasks and encoder files are rewritten)."""
    for p in (run.history_file, run.metrics_file, run.selection_file, run.holdout_file, run.error_log):
        p.unlink(missing_ok=True)
    ckpt = run.path / "checkpoints"
    if ckpt.is_dir():
        for p in list(ckpt.glob("epoch-*.safetensors")) + list(ckpt.glob(".*.tmp")):
            p.unlink(missing_ok=True)
    for d in run.path.glob(".encoder*.tmp"):  # the temporary folder of a write_setup cut short
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
    remove_adapter_files(run)  # an earlier adapter run's adapters/, heads/, encoder weights
    remove_train_state(run)


def config_difference(cfg: TrainConfig, saved: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first field that decides what a run computes (every field but those marked may-change,
    ``TrainConfig.resume_may_change``) on which ``cfg`` and a run's saved config.yaml ``saved``
    disagree, as (field, value here, value there); None when they agree. Fields the saved config
    lacks (written before they existed) are not compared; floats equal up to rounding are equal.
    Used by ``--resume`` and by the experiment runners that take an equal finished run."""
    mine_all = cfg.model_dump(mode="json")
    for name in sorted(set(TrainConfig.model_fields) - TrainConfig.resume_may_change()):
        if name not in saved:
            continue
        mine, theirs = mine_all.get(name), saved[name]
        if isinstance(mine, float) and isinstance(theirs, (int, float)) and math.isclose(mine, theirs):
            continue
        if mine != theirs:
            return name, mine, theirs
    return None


def tasks_difference(tasks: list[TaskDef], run: RunDir) -> str | None:
    """The first of ``tasks`` (resolved definitions) that the run's tasks.yaml defines differently
    or lacks; None when all are defined as there."""
    saved = {t.name: t.model_dump(mode="json") for t in run.read_tasks()}
    return next((t.name for t in tasks if saved.get(t.name) != t.model_dump(mode="json")), None)


def check_resume_config(cfg: TrainConfig, run: RunDir) -> None:
    """A resumed run must compute what the killed run computed: every field that matters must be
    the one in the run's config.yaml (``config_difference``)."""
    if run.metrics_file.is_file() and not has_train_state(run):
        raise CheckpointError("the run is complete (metrics.json written): nothing to resume",
                              path=str(run.path))
    diff = config_difference(cfg, run.read_config())
    if diff is not None:
        name, mine, saved = diff
        raise ConfigError(f"is {mine!r} but the run to resume has {saved!r} (a resumed run keeps its config)",
                          path=str(run.config_file), field=name)


def check_resume_tasks(tasks: list[TaskDef], run: RunDir) -> None:
    """The resolved task definitions must be those of the run's tasks.yaml."""
    name = tasks_difference(tasks, run)
    if name is not None:
        saved = next((t for t in run.read_tasks() if t.name == name), None)
        mine = next(t for t in tasks if t.name == name)
        hint = ""
        if saved is not None and saved.head.kind != mine.head.kind and "pair_head" not in run.read_config():
            # a run from before --pair-head existed: its pair tasks' default head was SAN
            hint = f"; its head is {saved.head.kind} there: resume with --pair-head {saved.head.kind}"
        raise ConfigError(f"task '{name}' is not defined as in the run to resume ({run.tasks_file}){hint}",
                          field="tasks")
