"""Exported folders on disk: writing one in a staging folder that replaces the output only when
complete, the marker file that tells an export from a run directory, and reading an exported
whole-model folder back for ``mtdnn predict``/``evaluate`` (``ExportedModel``, used by ``Run``).

::

    EXPORT_DIR/
      mtdnn_export.json     {"format": "hf" | "hf-task" | "onnx", "tasks": {task: epoch}, "source": RUN_DIR}
      mtdnn_tasks.yaml      the full task definitions (data splits included: `mtdnn evaluate` reads them)
      mtdnn_run.yaml        the training config of the run
      README.md             the model card
      tokenizer files; config.json + model.safetensors + modeling_mtdnn.py (hf), model.onnx (onnx)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from transformers import AutoConfig, AutoModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from ..errors import CheckpointError, ConfigError
from ..model.encoders import attention_implementation
from ..run_dir import RunDir, atomic_write, load_weights
from ..tasks.schema import TaskDef, parse_task
from .adapters import merged_encoder
from .modeling_mtdnn import MtdnnConfig

MARKER = "mtdnn_export.json"


def export_format(path: str | Path) -> str | None:
    """The format of the export at ``path`` ("hf", "hf-task", "onnx"), None for anything else."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    try:
        fmt = json.loads(marker.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"unreadable export marker ({e})", path=str(marker)) from None
    return fmt if isinstance(fmt, str) else None


@contextmanager
def staged_folder(output: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``output`` to write an export into; once the block ends it replaces
    ``output``. An existing ``output`` must be empty or an earlier export."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and export_format(output) is None)):
        raise ConfigError("the output exists and is not an empty folder or an earlier mtdnn export; "
                          "choose another --output", path=str(output))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        yield tmp
        _default_modes(tmp)
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _default_modes(folder: Path) -> None:
    """The permissions a plain ``mkdir``/``open`` would give (temporary files are created private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for p in folder.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def write_metadata(folder: Path, fmt: str, epochs: dict[str, int | None], source: Path, config: dict[str, Any],
                   tasks: list[TaskDef]) -> None:
    """The marker, the full task definitions and the training config of an export."""
    with atomic_write(folder / MARKER) as f:
        json.dump({"format": fmt, "tasks": epochs, "source": str(source)}, f, indent=2)
    with atomic_write(folder / "mtdnn_tasks.yaml") as f:
        yaml.safe_dump([t.model_dump(mode="json") for t in tasks], f, sort_keys=False)
    with atomic_write(folder / "mtdnn_run.yaml") as f:
        yaml.safe_dump(config, f, sort_keys=False)


@dataclass(frozen=True)
class ExportedWeights:
    """The weights of an exported model a task runs with: an encoder (its key) and the LoRA adapter
    merged into it for ``mtdnn predict``/``evaluate`` (None: none; runs trained with ``--adapter lora``)."""

    encoder: str
    adapter: str | None = None


class ExportedModel:
    """A whole-model Hugging Face export read back as ``Run`` reads a run directory: its config,
    tasks, tokenizer folder, encoder, and the weights of each task (``ExportedWeights``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        fmt = export_format(self.path)
        if fmt != "hf":
            hint = (" (a one-task folder: load it with transformers, or export the whole model)"
                    if fmt == "hf-task" else " (an ONNX export: use `mtdnn serve --backend onnx`)" if fmt else "")
            raise CheckpointError(f"not a whole-model mtdnn export{hint}", path=str(self.path))
        register_config()
        self._hf_config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))

    encoder_dir = property(lambda self: self.path)  # the tokenizer files

    def incomplete_reason(self) -> None:
        """An export is written whole (``staged_folder``): never incomplete."""
        return None

    def read_config(self) -> dict[str, Any]:
        data = yaml.safe_load((self.path / "mtdnn_run.yaml").read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise CheckpointError("mtdnn_run.yaml must be a mapping", path=str(self.path))
        return data

    def read_tasks(self) -> list[TaskDef]:
        source = self.path / "mtdnn_tasks.yaml"
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise CheckpointError("mtdnn_tasks.yaml must be a list of tasks", path=str(source))
        return [parse_task(t, str(source)) for t in data]

    def build_encoder(self) -> torch.nn.Module:
        """The encoder architecture (random weights; ``load_into`` fills them)."""
        enc = dict(self._hf_config["encoder"])
        cfg = AutoConfig.for_model(enc.pop("model_type"), **enc)
        attn = attention_implementation(cfg)  # SDPA where the class has it (not DeBERTa), else eager
        try:
            return AutoModel.from_config(cfg, add_pooling_layer=False, attn_implementation=attn)
        except TypeError:
            return AutoModel.from_config(cfg, attn_implementation=attn)

    def weights_for(self, task: str | None = None) -> ExportedWeights:
        """The weights a task runs with (what ``load_into`` loads)."""
        tasks = self._hf_config["tasks"]
        if task not in tasks:
            return ExportedWeights(self._hf_config["encoder_keys"][-1])
        return ExportedWeights(tasks[task]["encoder"], tasks[task].get("adapter"))

    def load_into(self, model: torch.nn.Module, weights: ExportedWeights) -> None:
        """Load an encoder (with an adapter merged into it) and every head into mtdnn's ``MultiTaskModel``."""
        state = load_weights(self.path / "model.safetensors")
        prefix = f"encoders.{weights.encoder}."
        encoder = merged_encoder({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                                 self._hf_config.get("adapters") or {}, weights.adapter)
        mapped = {"encoder." + k: v for k, v in encoder.items()}
        mapped.update({k: v for k, v in state.items() if k.startswith("heads.")})
        missing, unexpected = model.load_state_dict(mapped, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"weights do not fit the model: {len(missing)} missing and {len(unexpected)} "
                                  f"unexpected tensors (e.g. {(missing + unexpected)[0]})", path=str(self.path))


def register_config() -> None:
    """Let ``AutoConfig`` (and so ``AutoTokenizer``) of this process read an export's config.json
    with mtdnn's copy of the modelling code, instead of asking whether to run the folder's copy."""
    if MtdnnConfig.model_type not in CONFIG_MAPPING:
        AutoConfig.register(MtdnnConfig.model_type, MtdnnConfig)


def open_model_dir(path: str | Path) -> RunDir | ExportedModel:
    """A run directory, or a whole-model folder written by ``mtdnn export --format hf``."""
    return ExportedModel(path) if export_format(path) is not None else RunDir(path)
