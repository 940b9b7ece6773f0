"""Build what a run needs from its config: task definitions, tokenizer, model (fresh, or started
from another run with ``init_from``), and tokenised data."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import TrainConfig
from ..data.pipeline import TaskData, load_task_data
from ..data.readers import data_dir_default
from ..errors import CheckpointError, ConfigError
from ..model.multitask import (HeadFactory, MultiTaskModel, encoder_from_config, load_encoder,
                               load_tokenizer,                               resolve_encoder_name)
from ..model.adapters import LoraHeads
from ..model.encoders import check_token_fit, named_splits, position_limit
from ..run_dir import RunDir, load_weights
from ..runtime import pick_device
from ..tasks.registry import TaskRegistry
from ..tasks.schema import TaskDef

log = logging.getLogger(__name__)


@dataclass
class Setup:
    cfg: TrainConfig
    tasks: list[TaskDef]
    tokenizer: object
    model: MultiTaskModel
    data: dict[str, TaskData]
    device: torch.device
    encoder_name: str
    # tasks the model serves without training them: carried over from --init-from (model/adapters.py)
    carried: list[TaskDef] = field(default_factory=list)


def _detail(e: Exception) -> str:
    """The informative line of a load_state_dict error (its first line only names the class)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = next((ln for ln in lines[1:] if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))),
                lines[0] if lines else type(e).__name__)
    return text if len(text) <= 200 else text[:200] + "..."


def load_model_weights(model: MultiTaskModel, path: Path) -> None:
    state = load_weights(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"weights do not fit the model ({_detail(e)})", path=str(path)) from None
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit the model: {len(missing)} missing and {len(unexpected)} "
                              f"unexpected tensors (e.g. {(missing + unexpected)[0]})", path=str(path))


def init_from_run(model: MultiTaskModel, run_path: str | Path, tasks: list[TaskDef]) -> list[str]:
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
        raise CheckpointError(f"--init-from: the run's encoder does not match ({_detail(e)})",
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
                                  f"({_detail(e)})", path=str(weights)) from None
        reused.append(t.name)
    return reused


def build_setup(cfg: TrainConfig, *, with_train: bool = True, factory: HeadFactory | None = None) -> Setup:
    """Tasks, tokenizer, model (its parts built by ``factory``, default ``PlainHeads``, or
    ``LoraHeads`` for ``--adapter lora``) on its device with the speed options of ``cfg``, and the
    tokenised data."""
    if factory is None and cfg.adapter != "none":
        factory = LoraHeads(cfg)
    registry = TaskRegistry(cfg.task_files)
    tasks = registry.resolve(cfg.tasks, cfg.pair_head)
    device = pick_device(cfg.device)

    if cfg.init_from:
        src = RunDir(cfg.init_from)
        src_cfg = src.read_config()
        src_encoder = src_cfg.get("encoder_resolved", src_cfg.get("encoder"))
        if cfg.encoder not in ("default", src_encoder, src_cfg.get("encoder")):
            raise ConfigError(f"--init-from {cfg.init_from} was trained with encoder '{src_encoder}', "
                              f"not '{cfg.encoder}'", field="encoder")
        if cfg.adapter == "none" and src_cfg.get("adapter", "none") != "none":
            raise ConfigError(f"{cfg.init_from} is an adapter run (a frozen encoder and an adapter per "
                              "task): add tasks to it with --adapter lora", field="init_from")
        encoder_name = src_encoder
        tokenizer = load_tokenizer(str(src.encoder_dir))
        encoder = encoder_from_config(src.encoder_dir)
    else:
        encoder_name = resolve_encoder_name(cfg.encoder)
        tokenizer = load_tokenizer(encoder_name)
        encoder = load_encoder(encoder_name)

    limit = position_limit(encoder)  # RoBERTa's 514 position embeddings hold 512 tokens
    if limit is not None and cfg.max_seq_len > limit:
        raise ConfigError(f"{cfg.max_seq_len} is above the encoder's limit of {limit} positions",
                          field="max_seq_len")

    carried = factory.carried if isinstance(factory, LoraHeads) else []
    model = MultiTaskModel(encoder, tasks + carried, factory)
    if cfg.init_from and not isinstance(factory, LoraHeads):  # LoraHeads loads the run's parts itself
        reused = init_from_run(model, cfg.init_from, tasks)
        log.info("init from %s: encoder%s", cfg.init_from,
                 f" and heads of {', '.join(reused)}" if reused else " (all heads new)")
    model.to(device)
    if cfg.activation_checkpointing:
        model.enable_activation_checkpointing()
    if cfg.cls_only_last_layer and not (cfg.compile or cfg.activation_checkpointing or cfg.parallel == "fsdp"
                                        or cfg.adapter != "none"):  # adapters: the full last layer
        log.info("last-layer [CLS] pruning for linear heads: %s", "on" if model.enable_cls_only() else
                 "not available for this encoder")
    if cfg.compile:  # in place (parameter names unchanged); dynamic: batches differ in length
        model.encoder.compile(dynamic=True)

    data = load_task_data(
        tasks, tokenizer, data_dir=cfg.data_dir or data_dir_default(), max_len=cfg.max_seq_len,
        cache_dir=cfg.cache_dir, max_train_examples={t.name: cfg.train_subset(t.name) for t in tasks},
        max_eval_examples=cfg.max_eval_examples, subset_seed=cfg.subset_seed, allow_hub=cfg.allow_hub,
        with_train=with_train, with_tests=cfg.predict_test)
    if with_train:
        missing = [t.name for t in tasks if t.head_from is None and data[t.name].train is None]
        if missing:
            raise ConfigError(f"no training split for {', '.join(missing)}", field="tasks")
    check_token_fit(encoder, named_splits(data), tokenizer.name_or_path, encoder_name)
    return Setup(cfg, tasks, tokenizer, model, data, device, encoder_name, carried)
