"""Exporting (and so serving) a run trained with per-task LoRA adapters (``mtdnn train --adapter lora``,
``model/adapters.py``).

Such a run has one frozen encoder shared by all tasks, and per task a LoRA adapter (peft's format)
and a head, both of the epoch the task keeps; its epoch checkpoints are removed when it finishes.
Its export holds exactly that:

- the whole model (``--format hf``, ``--format onnx``, ``mtdnn serve`` on the run directory): the
  frozen encoder once, under the key ``LORA_ENCODER``, with each adapter's A and B matrices beside the
  layers they adapt (``modeling_mtdnn.LoraLinear``). Tasks that use the same adapter (a task and the
  tasks borrowing its head) share one encoder pass, tasks of different adapters take one pass each,
  and tasks without an adapter (carried over from a fully fine-tuned run) run the plain encoder.
  The computation is peft's, operation for operation.
- one task (``--task T``): a standard folder (sequence or token classification, question
  answering) whose encoder has the task's adapter merged into its weights (``W + scaling * B A``:
  LoRA's merge, as peft's ``merge_and_unload`` does it), so that no peft and no custom code is
  needed to load it.

``LoraExport`` holds what the export takes from the run's model (``lora_export``; the plan of the
export reads the run through mtdnn's own loading, ``plan.py``); ``merged_encoder`` merges one adapter
into exported encoder weights (also used by ``mtdnn predict`` on an exported folder,
``folder.ExportedModel``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..model.adapters import TaskAdapters, require_peft
from ..model.multitask import MultiTaskModel

LORA_ENCODER = "frozen"  # the encoder key of an adapter run's export: its one frozen encoder


@dataclass(frozen=True)
class LoraExport:
    """``adapter_of``: task -> the adapter its encoder pass uses (None: the plain encoder);
    ``specs``: adapter -> ``{rank, scaling, layers}`` (``modeling_mtdnn.MtdnnConfig.adapters``);
    ``state``: the exported weights (``encoders.<LORA_ENCODER>.*`` with the adapters' matrices,
    ``heads.<task>.*``); ``origin``: the run the carried-over tasks come from."""

    adapter_of: dict[str, str | None]
    specs: dict[str, dict[str, Any]]
    state: dict[str, torch.Tensor]
    origin: str | None
    encoder_key: str = LORA_ENCODER


def lora_export(model: MultiTaskModel, origin: str | None) -> LoraExport:
    """The weights and adapter specs of a finished adapter run's model (``load_adapter_model``)."""
    enc = model.encoder
    if not isinstance(enc, TaskAdapters):
        raise TypeError("lora_export needs the model of an adapter run")
    prefix = f"encoders.{LORA_ENCODER}."
    state = {prefix + k: v.detach().clone() for k, v in enc.base_state_dict().items()}
    specs: dict[str, dict[str, Any]] = {}
    for path, name, a, b, scaling in _lora_layers(enc):
        state[f"{prefix}{path}.lora_A.{name}"] = a
        state[f"{prefix}{path}.lora_B.{name}"] = b
        spec = specs.setdefault(name, {"rank": int(a.shape[0]), "scaling": scaling, "layers": []})
        if (spec["rank"], spec["scaling"]) != (int(a.shape[0]), scaling):
            raise ConfigError(f"the adapter of task '{name}' has a rank or scaling that differs between layers "
                              "(rank or alpha patterns), which the export does not hold", field="adapter")
        spec["layers"].append(path)
    for task, head in model.heads.items():
        state.update({f"heads.{task}.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    adapter_of = {name: (model.head_name(name) if model.head_name(name) in specs else None) for name in model.tasks}
    return LoraExport(adapter_of, specs, state, origin)


def _lora_layers(enc: TaskAdapters) -> list[tuple[str, str, torch.Tensor, torch.Tensor, float]]:
    """(layer path in the encoder, adapter, A, B, scaling) of every adapted layer; an adapter kind the
    export does not reproduce (DoRA, LoRA on embeddings or convolutions, a LoRA bias) is an error."""
    lora = require_peft().tuners.lora
    found = []
    for path, layer in enc.peft.get_base_model().named_modules():
        if not isinstance(layer, lora.LoraLayer):
            continue
        for name in layer.lora_A:
            kind = type(layer).__name__
            special = [what for what, on in (("DoRA", layer.use_dora.get(name)),
                                             ("a LoRA bias", getattr(layer, "lora_bias", {}).get(name)),
                                             ("a LoRA variant", name in getattr(layer, "lora_variant", {})),
                                             ("fan_in_fan_out", getattr(layer, "fan_in_fan_out", False))) if on]
            if type(layer) is not lora.Linear or special:
                what = ", ".join(special) or f"a {kind} layer"
                raise CheckpointError(f"the adapter of task '{name}' on {path} uses {what}: the export holds plain "
                                      "LoRA on linear layers only", field="adapter")
            found.append((path, name, layer.lora_A[name].weight.detach().clone(),
                          layer.lora_B[name].weight.detach().clone(), float(layer.scaling[name])))
        for name in getattr(layer, "lora_embedding_A", {}):
            raise CheckpointError(f"the adapter of task '{name}' adapts the embedding layer {path}: the export "
                                  "holds LoRA on linear layers only", field="adapter")
    return found


def merged_encoder(state: dict[str, torch.Tensor], specs: dict[str, dict[str, Any]],
                   adapter: str | None) -> dict[str, torch.Tensor]:
    """Encoder weights (exported names without the ``encoders.<key>.`` prefix) with ``adapter`` merged
    into the layers it adapts, ``W + scaling * B A``, and every adapter's matrices dropped (``adapter``
    None: the plain encoder)."""
    merged = {k: v for k, v in state.items() if ".lora_A." not in k and ".lora_B." not in k}
    if adapter is None:
        return merged
    spec = specs[adapter]
    for path in spec["layers"]:
        a, b = state[f"{path}.lora_A.{adapter}"], state[f"{path}.lora_B.{adapter}"]
        merged[f"{path}.weight"] = merged[f"{path}.weight"] + (b @ a) * float(spec["scaling"])
    return merged
