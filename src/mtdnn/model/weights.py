"""Loading saved weights into a model: the whole multi-task model from a checkpoint file
(``load_model_weights``), one module from a state dict (``load_strict``), or the encoder and the
matching heads of another run (``init_from_run``, ``--init-from``), with a one-line
``CheckpointError`` that names the file when they do not fit."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..run_dir import RunDir, load_weights
from ..tasks.schema import TaskDef


def load_error_line(e: Exception) -> str:
    """The informative line of a ``load_state_dict`` error (its first line only names the class)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = next((ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))),
                lines[0] if lines else type(e).__name__)
    return text if len(text) <= 200 else text[:200] + "..."


def load_model_weights(model: nn.Module, path: Path) -> None:
    """Every tensor of the model from the safetensors file ``path`` (no more, no fewer)."""
    state = load_weights(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"weights do not fit the model ({load_error_line(e)})", path=str(path)) from None
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit the model: {len(missing)} missing and {len(unexpected)} "
                              f"unexpected tensors (e.g. {(missing + unexpected)[0]})", path=str(path))


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``module.load_state_dict(state, strict=True)``; ``what`` names the part in the error."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{what} does not fit the model ({load_error_line(e)})", path=str(path)) from None


def init_from_run(model: nn.Module, run_path: str | Path, tasks: list[TaskDef]) -> list[str]:
    """Copy the encoder and every head whose task definition matches from another run's last epoch.
    Returns the names of the reused heads."""
    run = RunDir(run_path)
    old_tasks = {t.name: t for t in run.read_tasks()}
    weights = run.weights_for(None)
    state = load_weights(weights)
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    try:
        model.encoder.load_state_dict(enc, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"--init-from: the run's encoder does not match ({load_error_line(e)})",
                              path=str(weights)) from None
    reused = []
    for t in tasks:
        old = old_tasks.get(t.name)
        if old is None or t.head_from is not None:
            continue
        if old.head_signature() != t.head_signature():
            raise ConfigError(f"--init-from: task '{t.name}' is defined differently in {run_path} "
                              f"(head {old.head_signature()} vs {t.head_signature()})", field="init_from")
        prefix = f"heads.{t.name}."
        head_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            model.heads[t.name].load_state_dict(head_state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"--init-from: the head of task '{t.name}' does not match "
                                  f"({load_error_line(e)})", path=str(weights)) from None
        reused.append(t.name)
    return reused
