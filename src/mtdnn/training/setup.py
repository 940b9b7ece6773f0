"""Build what a run needs from its config: task definitions, tokenizer, model (fresh, or started
from another run with ``init_from``), and tokenised data. The model's parts come from the run's
head factory (``head_factory``: ``PlainHeads``, or ``LoraHeads`` for ``--adapter lora``), which
also loads what ``--init-from`` gives them and finishes the run (``model/multitask.py: RunHeads``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..data.pipeline import TaskData, load_task_data
from ..data.readers import data_dir_default
from ..errors import ConfigError
from ..model.adapters import LoraHeads
from ..model.encoders import check_token_fit, named_splits, position_limit
from ..model.multitask import (MultiTaskModel, PlainHeads, RunHeads, encoder_from_config, load_encoder,
                               load_tokenizer, resolve_encoder_name)
from ..run_dir import RunDir
from ..runtime import pick_device
from ..tasks.registry import TaskRegistry
from ..tasks.schema import TaskDef

log = logging.getLogger(__name__)

# ``--adapter`` -> the head factory of the run
HEAD_FACTORIES: dict[str, Callable[[TrainConfig], RunHeads]] = {"none": lambda cfg: PlainHeads(), "lora": LoraHeads}


def head_factory(cfg: TrainConfig) -> RunHeads:
    return HEAD_FACTORIES[cfg.adapter](cfg)


@dataclass
class Setup:
    cfg: TrainConfig
    tasks: list[TaskDef]
    tokenizer: object
    model: MultiTaskModel
    data: dict[str, TaskData]
    device: torch.device
    encoder_name: str
    factory: RunHeads  # built the model's parts; loads --init-from, finishes the run

    @property
    def carried(self) -> list[TaskDef]:
        """Tasks the model serves without training them: carried over from --init-from (model/adapters.py)."""
        return self.factory.carried


def _encoder_and_tokenizer(cfg: TrainConfig) -> tuple[str, object, torch.nn.Module]:
    """The encoder's name, tokenizer and encoder: those of the ``--init-from`` run (its weights are
    loaded later, by the head factory), else the pretrained ones of ``cfg.encoder``."""
    if not cfg.init_from:
        encoder_name = resolve_encoder_name(cfg.encoder)
        return encoder_name, load_tokenizer(encoder_name), load_encoder(encoder_name)
    src = RunDir(cfg.init_from)
    src_cfg = src.read_config()
    src_encoder = src_cfg.get("encoder_resolved", src_cfg.get("encoder"))
    if cfg.encoder not in ("default", src_encoder, src_cfg.get("encoder")):
        raise ConfigError(f"--init-from {cfg.init_from} was trained with encoder '{src_encoder}', "
                          f"not '{cfg.encoder}'", field="encoder")
    return src_encoder, load_tokenizer(str(src.encoder_dir)), encoder_from_config(src.encoder_dir)


def build_setup(cfg: TrainConfig, *, with_train: bool = True, factory: RunHeads | None = None) -> Setup:
    """Tasks, tokenizer, model (its parts built by ``factory``, by default ``head_factory(cfg)``,
    which loads ``--init-from``'s weights into them) on its device with the speed options of
    ``cfg``, and the tokenised data."""
    factory = factory or head_factory(cfg)
    tasks = TaskRegistry(cfg.task_files).resolve(cfg.tasks, cfg.pair_head)
    device = pick_device(cfg.device)
    encoder_name, tokenizer, encoder = _encoder_and_tokenizer(cfg)
    limit = position_limit(encoder)  # RoBERTa's 514 position embeddings hold 512 tokens
    if limit is not None and cfg.max_seq_len > limit:
        raise ConfigError(f"{cfg.max_seq_len} is above the encoder's limit of {limit} positions",
                          field="max_seq_len")

    model = MultiTaskModel(encoder, tasks + factory.carried, factory)
    if cfg.init_from:
        factory.load_init(model, cfg.init_from, tasks)
    model.to(device)
    if cfg.activation_checkpointing:
        model.enable_activation_checkpointing()
    if cfg.cls_only_last_layer and factory.prunes_last_layer and not (
            cfg.compile or cfg.activation_checkpointing or cfg.parallel == "fsdp"):
        log.info("last-layer [CLS] pruning for linear heads: %s", "on" if model.enable_cls_only() else
                 "not available for this encoder")
    if cfg.compile:  # in place (parameter names unchanged); dynamic: batches differ in length
        model.encoder.compile(dynamic=True)

    data = load_task_data(
        tasks, tokenizer, data_dir=cfg.data_dir or data_dir_default(), max_len=cfg.max_seq_len,
        cache_dir=cfg.cache_dir, max_train_examples={t.name: cfg.train_subset(t.name) for t in tasks},
        max_eval_examples=cfg.max_eval_examples, subset_seed=cfg.subset_seed, allow_hub=cfg.allow_hub,
        with_train=with_train, with_tests=cfg.predict_test,
        holdout_fraction=cfg.held_out_fraction() if with_train else None)
    if with_train:
        missing = [t.name for t in tasks if t.head_from is None and data[t.name].train is None]
        if missing:
            raise ConfigError(f"no training split for {', '.join(missing)}", field="tasks")
    check_token_fit(encoder, named_splits(data), tokenizer.name_or_path, encoder_name)
    return Setup(cfg, tasks, tokenizer, model, data, device, encoder_name, factory)
