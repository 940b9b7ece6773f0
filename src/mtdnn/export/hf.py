"""``mtdnn export --format hf``: a run as Hugging Face folders.

- The whole multi-task model (``write_hf_folder``): ``config.json`` with ``auto_map`` pointing at
  ``modeling_mtdnn.py`` (copied into the folder; it needs only torch and transformers),
  ``model.safetensors``, the tokenizer (its ``model_max_length`` is the run's max length, so
  ``truncation=True`` cuts where mtdnn does) and a model card.
- One task as a standard folder (``write_task_folder``): the encoder family's own class, no custom
  code; ``AutoModelForSequenceClassification`` for sentence tasks, the class the task's kind names
  otherwise (``standard_folder_class``), whose output layer reads every token as mtdnn's head does
  and takes the head's weights as they are: tagging ``AutoModelForTokenClassification`` (its
  ``classifier``), span tasks ``AutoModelForQuestionAnswering`` (the head's start/end layer copied
  into ``qa_outputs``; its logits are not masked outside the context: decoding reads context
  tokens only). The sequence classifier reads the pooler's output
  ``tanh(W h + b)``, while mtdnn's linear head reads the [CLS] vector ``h`` itself, so the pooler is
  set to ``W = eps * I``, ``b = 0`` and the classifier to ``V / eps``: ``tanh(eps * h) / eps = h``
  up to ``(eps * h)^2 / 3`` relative (eps = 2^-13: about 1e-7 for |h| <= 4). The export checks the
  result against mtdnn's head on real dev rows. SAN heads have no standard equivalent, and a ranking
  task's score means something only against its question's other candidates. A task of a
  run trained with LoRA adapters gets its adapter merged into the encoder (``export/adapters.py``).

Both check themselves against mtdnn's own model on real dev rows (``verify``).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import AutoConfig

from ..errors import CheckpointError, ConfigError
from ..model.multitask import load_tokenizer
from ..tasks.schema import TaskDef
from . import modeling_mtdnn as modeling
from .adapters import merged_encoder
from .card import model_card
from .folder import staged_folder, write_metadata
from .plan import ExportPlan, export_state
from .verify import check_against_mtdnn, require_close

log = logging.getLogger(__name__)

POOLER_EPS = 2.0 ** -13  # a power of two: scaling by it and by its inverse is exact
SEQUENCE_CLASSIFIER = "AutoModelForSequenceClassification"
AUTO_MAP = {"AutoConfig": "modeling_mtdnn.MtdnnConfig", "AutoModel": "modeling_mtdnn.MtdnnMultiTaskModel"}


def boundary_ids(tokenizer) -> list[int]:
    """The ids of the tokens that frame the texts of an input ([CLS], [SEP], <s>, </s>, padding)."""
    ids = [getattr(tokenizer, f"{name}_token_id", None) for name in ("cls", "sep", "bos", "eos", "pad")]
    return sorted({int(i) for i in ids if i is not None})


def task_spec(plan: ExportPlan, t: TaskDef) -> dict:
    return {"type": t.type, "input": t.input, "labels": list(t.labels),
            "head": t.head.model_dump(), "output": t.kind.export_head(t),
            "dropout": t.dropout, "head_of": plan.head_of(t), "encoder": plan.encoder_of(t.name),
            "adapter": plan.adapter_of(t.name), "epoch": plan.epochs[t.name], "metrics": plan.metrics.get(t.name) or {},
            "settings": t.kind.export_settings(t, int(plan.config["max_seq_len"]))}


def hf_config(plan: ExportPlan, tokenizer) -> modeling.MtdnnConfig:
    encoder = AutoConfig.from_pretrained(str(plan.run.encoder_dir)).to_dict()
    for key in ("architectures", "transformers_version", "_name_or_path"):
        encoder.pop(key, None)
    cfg = modeling.MtdnnConfig(encoder=encoder, encoder_keys=plan.encoder_keys,
                               tasks={t.name: task_spec(plan, t) for t in plan.tasks},
                               segment_boundary_ids=boundary_ids(tokenizer),
                               max_seq_len=int(plan.config["max_seq_len"]), task_order=[t.name for t in plan.tasks],
                               adapters=plan.lora.specs if plan.lora is not None else {})
    cfg.auto_map = dict(AUTO_MAP)
    cfg.architectures = ["MtdnnMultiTaskModel"]
    return cfg


def build_hf_model(plan: ExportPlan, tokenizer) -> modeling.MtdnnMultiTaskModel:
    """The exported model in memory (eval mode), with the plan's weights."""
    model = modeling.MtdnnMultiTaskModel(hf_config(plan, tokenizer))
    missing, unexpected = model.load_state_dict(export_state(plan), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"the run's weights do not fit the exported model: {len(missing)} missing, "
                              f"{len(unexpected)} unexpected (e.g. {(missing + unexpected)[0]})",
                              path=str(plan.run.path))
    return model.eval()


def export_tokenizer(plan: ExportPlan):
    tokenizer = load_tokenizer(str(plan.run.encoder_dir))
    tokenizer.model_max_length = int(plan.config["max_seq_len"])
    return tokenizer


def write_hf_folder(plan: ExportPlan, output: str | Path, check_rows: int = 32) -> dict[str, float]:
    """Write the whole-model folder; returns each task's largest difference from mtdnn's model."""
    tokenizer = export_tokenizer(plan)
    model = build_hf_model(plan, tokenizer)
    diffs = check_against_mtdnn(plan, lambda batch, task: model(**batch, task=task).logits, tokenizer, check_rows)
    require_close(diffs, 1e-4, "exported model")
    with staged_folder(output) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        shutil.copyfile(Path(modeling.__file__), tmp / "modeling_mtdnn.py")
        tokenizer.save_pretrained(str(tmp))
        write_metadata(tmp, "hf", plan.epochs, plan.run.path, plan.config, plan.tasks)
        (tmp / "README.md").write_text(model_card(plan, plan.tasks, Path(output).name), encoding="utf-8")
    return diffs


def _task(plan: ExportPlan, name: str) -> TaskDef:
    found = {t.name: t for t in plan.tasks}
    if name not in found:
        raise ConfigError(f"the run has no task '{name}' (it has: {', '.join(found)})", field="task")
    t = found[name]
    whole = ("export the whole model instead (mtdnn export RUN_DIR --format hf --output DIR, without --task; "
             "load it with trust_remote_code=True)")
    if t.head.kind == "san":
        raise ConfigError(f"task '{name}' has a SAN head, which has no standard Hugging Face equivalent "
                          f"(pair tasks get a linear head, which has one, with --pair-head linear, the default): {whole}", field="task")
    t.kind.standard_folder(t)  # a kind without a standard folder says why
    return t


def standard_model(plan: ExportPlan, t: TaskDef) -> nn.Module:
    """The encoder family's standard model of the task's kind (``standard_folder_class``) holding the
    run's encoder and the task's linear head (see the module docstring)."""
    auto_class, layer = t.kind.standard_folder_class(t)
    cfg = AutoConfig.from_pretrained(str(plan.run.encoder_dir))
    id2label, problem_type = t.kind.standard_folder(t)
    cfg.num_labels = len(id2label)
    cfg.id2label = id2label
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    cfg.problem_type = problem_type
    cfg.classifier_dropout = t.dropout
    model = getattr(transformers, auto_class).from_config(cfg)
    state = export_state(plan)
    key = f"encoders.{plan.encoder_of(t.name)}."
    encoder = {k[len(key):]: v for k, v in state.items() if k.startswith(key)}
    if plan.lora is not None:  # the task's adapter merged into the encoder's weights
        encoder = merged_encoder(encoder, plan.lora.specs, plan.adapter_of(t.name))
    base = getattr(model, model.base_model_prefix)
    missing, unexpected = base.load_state_dict(encoder, strict=False)
    head = {k.split(".")[-1]: v for k, v in state.items() if k.startswith(f"heads.{plan.head_of(t)}.proj.")}
    output = getattr(model, layer, None)
    if auto_class != SEQUENCE_CLASSIFIER:  # the output layer reads every token, as the head does
        if unexpected or any(not m.startswith("pooler.") for m in missing) or not (
                isinstance(output, nn.Linear) and output.weight.shape == head["weight"].shape):
            raise ConfigError(f"{type(model).__name__} has no linear {layer} on the encoder's tokens that can hold "
                              "mtdnn's head: export the whole model instead (without --task)", field="task")
        with torch.no_grad():
            output.weight.copy_(head["weight"])
            output.bias.copy_(head["bias"])
        return model.eval()
    pooler = getattr(base, "pooler", None)
    if unexpected or any(not m.startswith("pooler.") for m in missing) or not (
            isinstance(getattr(pooler, "dense", None), nn.Linear) and isinstance(getattr(pooler, "activation", None),
                                                                                   nn.Tanh)
            and isinstance(output, nn.Linear)):
        raise ConfigError(f"{type(model).__name__} has no [CLS] pooler + linear classifier that can hold mtdnn's "
                          "head: export the whole model instead (without --task)", field="task")
    with torch.no_grad():
        pooler.dense.weight.copy_(torch.eye(cfg.hidden_size) * POOLER_EPS)
        pooler.dense.bias.zero_()
        output.weight.copy_(head["weight"] / POOLER_EPS)
        output.bias.copy_(head["bias"])
    return model.eval()


def standard_outputs(out) -> torch.Tensor:
    """A standard model's output as mtdnn's head gives it: the logits, or (batch, tokens, 2) start
    and end logits of a question-answering model."""
    if getattr(out, "start_logits", None) is not None:
        return torch.stack([out.start_logits, out.end_logits], dim=-1)
    return out.logits


def write_task_folder(plan: ExportPlan, task: str, output: str | Path, check_rows: int = 32) -> dict[str, float]:
    """Write one task as a standard folder (``standard_model``); returns its largest difference
    from mtdnn's model on real dev rows."""
    t = _task(plan, task)
    one = dataclasses.replace(plan, tasks=[t], epochs={t.name: plan.epochs[t.name]},
                              metrics={t.name: plan.metrics.get(t.name, {})})
    tokenizer = export_tokenizer(plan)
    model = standard_model(plan, t)
    diffs = check_against_mtdnn(plan, lambda batch, _: standard_outputs(model(**batch)),
                                tokenizer, check_rows, tasks=[t])
    require_close(diffs, 1e-4, f"standard {type(model).__name__}")
    with staged_folder(output) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_metadata(tmp, "hf-task", one.epochs, plan.run.path, plan.config, [t])
        (tmp / "README.md").write_text(model_card(one, one.tasks, Path(output).name, single=True), encoding="utf-8")
    return diffs
