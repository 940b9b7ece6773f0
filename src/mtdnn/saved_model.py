"""A trained run's model for prediction (``SavedModel``): what ``mtdnn.api.Run`` builds on, and
what the training layer uses to predict with a finished run (distillation's teachers)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from .data.tokenized import tokenize_split
from .errors import CheckpointError, ConfigError
from .evaluation import predict
from .export.folder import ExportedModel, ExportedWeights, open_model_dir
from .model.adapters import load_adapter_model
from .model.encoders import check_token_fit
from .model.multitask import MultiTaskModel, encoder_from_config, load_tokenizer
from .model.weights import load_model_weights
from .records import Predictions, RawSplit
from .run_dir import RunDir
from .runtime import pick_device
from .tasks.schema import TaskDef

log = logging.getLogger(__name__)


class SavedModel:
    """A trained run's model loaded from its directory (or from a whole-model folder written by
    ``mtdnn export --format hf``), without the hub or the original encoder files: its raw
    predictions with the weights each task keeps (``mtdnn.api.Run`` adds evaluation and labels)."""

    def __init__(self, path: str | Path, device: str = "auto", precision: str = "fp32") -> None:
        self.dir: RunDir | ExportedModel = open_model_dir(path)
        self.config = self.dir.read_config()
        # None for a finished run (and an exported model); else why not (stopped by an error, or training)
        self.incomplete: str | None = self.dir.incomplete_reason() if isinstance(self.dir, RunDir) else None
        if self.incomplete is not None:
            if not self.dir.selection_file.is_file():
                raise CheckpointError(self.incomplete, path=str(self.dir.path))  # no weights to use
            log.warning("%s: %s; using the epochs it finished", self.dir.path, self.incomplete)
        self.tasks = {t.name: t for t in self.dir.read_tasks()}
        self.tokenizer = load_tokenizer(str(self.dir.encoder_dir))
        self.device = pick_device(device)
        self.precision = precision
        # an adapter run: one model holds every task (frozen encoder, adapters, heads; model/adapters.py)
        self.adapters = isinstance(self.dir, RunDir) and self.config.get("adapter", "none") != "none"
        if self.adapters:
            self.model = load_adapter_model(self.dir, list(self.tasks.values()))
        else:
            encoder = (self.dir.build_encoder() if isinstance(self.dir, ExportedModel)
                       else encoder_from_config(self.dir.encoder_dir))
            self.model = MultiTaskModel(encoder, list(self.tasks.values()))
        self.model.to(self.device)
        if not self.adapters:  # linear heads: the last layer computes [CLS] only (same outputs)
            self.model.enable_cls_only()
        self._loaded: Path | ExportedWeights | None = None

    @property
    def max_len(self) -> int:
        return int(self.config["max_seq_len"])

    def task(self, name: str) -> TaskDef:
        if name not in self.tasks:
            raise ConfigError(f"the run has no task '{name}' (it has: {', '.join(self.tasks)})", field="task")
        return self.tasks[name]

    def _check_tokens(self, splits: dict[str, Any]) -> None:
        """Token ids the encoder has no embeddings for: a one-line error (model/encoders.py)."""
        check_token_fit(self.model.encoder, splits, self.tokenizer.name_or_path, str(self.dir.encoder_dir),
                        token_types=self.model.token_types, announce=False)

    def _use_weights_of(self, task: str) -> None:
        if self.adapters:  # every task's weights are loaded; the model switches adapters per task
            return
        path = self.dir.weights_for(self.model.head_name(task))
        if path != self._loaded:
            if isinstance(self.dir, ExportedModel):  # path: the task's encoder (and adapter) in the export
                self.dir.load_into(self.model, path)
            else:
                load_model_weights(self.model, path)
            self._loaded = path

    def _predict(self, task: TaskDef, raw: RawSplit, batch_size: int) -> tuple[Any, Predictions]:
        self._use_weights_of(task.name)
        tok = tokenize_split(task, raw, self.tokenizer, self.max_len, cache_dir=None)
        self._check_tokens({f"{task.name}/{raw.split}": tok})
        return tok, predict(self.model, task, tok, batch_size=batch_size, device=self.device,
                            precision=self.precision, pad_id=self.tokenizer.pad_token_id or 0)

    def predictions(self, task: str, raw: RawSplit, batch_size: int = 128) -> Predictions:
        """The raw predictions (outputs and classes or scores) of ``task`` on rows read by mtdnn's
        readers, with the weights the task keeps."""
        return self._predict(self.task(task), raw, batch_size)[1]

    def weights_digest(self, task: str) -> str:
        """SHA-256 of the model's tensors as it predicts ``task`` (names, dtypes, shapes, values):
        which weights made a prediction, for a run directory, an export or an adapter run alike."""
        self._use_weights_of(task)
        h = hashlib.sha256(self.model.head_name(task).encode())  # an adapter run holds every task's adapter
        for name, t in sorted(self.model.state_dict().items()):
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()
