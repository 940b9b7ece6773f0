"""The modelling code of a multi-task model exported by ``mtdnn export --format hf``.

This file is copied into every exported folder and named in its ``config.json`` (``auto_map``), so
that ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` builds the model in any Python
process with torch and transformers, without mtdnn. It imports nothing else.

The model holds one or more encoders (one per distinct training epoch the tasks keep; usually one)
and one head per task, with the same parameter names and the same computation as mtdnn's own
model: ``encoders.<key>.*`` (a Hugging Face encoder), ``heads.<task>.*``:

- ``linear``: dropout + linear on the [CLS] vector: (batch, labels) logits for classification,
  (batch, 1) a score for regression and ranking.
- ``san``: the stochastic answer network over the premise and hypothesis tokens: (batch, labels)
  log-probabilities (the log of the probabilities averaged over the answer steps).
- a per-token head (a task's ``output.per`` is ``token``): dropout + linear on every token's
  vector, (batch, tokens, outputs). Tagging: the tags' logits. Span tasks (extractive question
  answering; ``output.context_only``): ``[..., 0]`` the start logits, ``[..., 1]`` the end logits
  of one window (question + part of the context) per row; tokens that cannot start or end an
  answer (outside the second text, i.e. the context) get -1e4, but for the null position 0 ([CLS]
  or <s>). Decoding a window's answer (the best start <= end within
  ``settings.max_answer_length`` tokens, pooled over a question's windows) is left to the caller
  (``mtdnn serve`` does it, as ``mtdnn predict``).

A run trained with per-task LoRA adapters (``mtdnn train --adapter lora``) is exported with its one
frozen encoder and each task's adapter: the encoder's adapted linear layers become ``LoraLinear``
(``W x + b + scaling * B A x`` with the A and B of the adapter active, as peft computes it), their
matrices named ``<layer>.lora_A.<adapter>`` and ``<layer>.lora_B.<adapter>``; ``config.adapters``
gives each adapter's rank, scaling and layers, and a task's ``adapter`` the one its encoder pass uses
(none: the plain encoder).

``model(**tokenizer(a, b, return_tensors="pt"), task="rte").logits`` is that task's output;
``task=None`` or a list of names fills ``task_logits`` (name -> output), with one encoder pass per
distinct (encoder, adapter) among the tasks asked.
SAN needs the segment of each token (0 first text, 1 second text, 2 special tokens); it is derived
from the input ids (the tokens between the [CLS]/[SEP]-like boundaries: the first run is the first
text, later runs the second) unless ``seg`` is given.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import PreTrainedModel

try:  # transformers >= 5
    from transformers.configuration_utils import PreTrainedConfig as _BaseConfig
except ImportError:  # transformers 4
    from transformers.configuration_utils import PretrainedConfig as _BaseConfig


class MtdnnConfig(_BaseConfig):
    """``encoder``: the shared encoder's config (a dict with its ``model_type``); ``encoder_keys``:
    the names of the encoders the model holds (one per exported epoch); ``tasks``: task name ->
    ``{type, input, labels, head: {kind, steps, step_dropout}, output: {outputs, per, context_only},
    dropout, head_of, encoder, adapter, settings}`` (``output``: the head's output per row or per
    token; ``settings``: what serving the task needs, e.g. a tagging task's scheme);
    ``segment_boundary_ids``: the token ids that separate the texts of a pair ([CLS], [SEP], ...);
    ``task_order``: the tasks in the run's order (config.json sorts the keys of ``tasks``);
    ``adapters``: LoRA adapter name -> ``{rank, scaling, layers}`` (the encoder's module paths it
    adapts), where a task's ``adapter`` names one."""

    model_type = "mtdnn"

    def __init__(self, encoder: dict | None = None, encoder_keys: list | None = None,
                 tasks: dict | None = None, segment_boundary_ids: list | None = None,
                 max_seq_len: int = 512, task_order: list | None = None, adapters: dict | None = None,
                 **kwargs: Any) -> None:
        self.encoder = dict(encoder or {})
        self.adapters = dict(adapters or {})
        self.encoder_keys = list(encoder_keys or [])
        self.tasks = dict(tasks or {})
        self.task_order = [t for t in (task_order or list(self.tasks)) if t in self.tasks]
        self.segment_boundary_ids = list(segment_boundary_ids or [])
        self.max_seq_len = max_seq_len
        super().__init__(**kwargs)


@dataclass
class MtdnnOutput(ModelOutput):
    """``logits``: the output of the task asked for; ``task_logits``: task name -> output, when
    several tasks (or all) were asked for."""

    logits: torch.Tensor | None = None
    task_logits: dict | None = None


class LinearHead(nn.Module):
    def __init__(self, hidden: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, n_out)

    def forward(self, hidden_states: torch.Tensor, seg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(hidden_states[:, 0]))


SPAN_MASKED = -1e4  # mtdnn's span head gives this logit to tokens that cannot start or end an answer


class TokenHead(nn.Module):
    """(batch, tokens, outputs); ``context_only``: ``SPAN_MASKED`` outside the context (seg 1) but at
    position 0 (a span task's null answer)."""

    def __init__(self, hidden: int, n_out: int, dropout: float, context_only: bool = False) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, n_out)
        self.context_only = context_only

    def forward(self, hidden_states: torch.Tensor, seg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.proj(self.dropout(hidden_states))
        if not self.context_only:
            return logits
        first = torch.arange(seg.shape[1], device=seg.device) == 0
        keep = (seg == 1) | first.unsqueeze(0)
        return logits.masked_fill(~keep.unsqueeze(-1), SPAN_MASKED)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)


class SANHead(nn.Module):
    """s0 = sum_j alpha_j Mh_j with alpha = softmax(w1 Mh); for each step k: beta = softmax(s W2 Mp),
    x = sum_j beta_j Mp_j, P_k = softmax(W3 [s; x; |s - x|; s * x]), s = GRU(x, s);
    output = log(mean over the kept steps of P_k) (all steps outside training)."""

    def __init__(self, hidden: int, n_labels: int, steps: int, step_dropout: float, dropout: float) -> None:
        super().__init__()
        self.steps = steps
        self.step_dropout = step_dropout
        self.dropout = nn.Dropout(dropout)
        self.w1 = nn.Linear(hidden, 1, bias=False)
        self.w2 = nn.Linear(hidden, hidden, bias=False)
        self.gru = nn.GRUCell(hidden, hidden)
        self.w3 = nn.Linear(4 * hidden, n_labels)

    def forward(self, hidden_states: torch.Tensor, seg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attn = mask.bool()
        prem, hyp = (seg == 0) & attn, (seg == 1) & attn
        # a text truncated away: all tokens instead (logical ops, not a boolean where: onnxruntime has none)
        prem = prem | (attn & ~prem.any(1, keepdim=True))
        hyp = hyp | (attn & ~hyp.any(1, keepdim=True))
        mem = self.dropout(hidden_states)
        alpha = _masked_softmax(self.w1(mem).squeeze(-1), hyp)
        s = torch.bmm(alpha.unsqueeze(1), mem).squeeze(1)
        log_probs = []
        for k in range(self.steps):
            beta = _masked_softmax(torch.bmm(mem, self.w2(s).unsqueeze(-1)).squeeze(-1), prem)
            x = torch.bmm(beta.unsqueeze(1), mem).squeeze(1)
            feats = torch.cat([s, x, (s - x).abs(), s * x], dim=-1)
            log_probs.append(F.log_softmax(self.w3(feats).float(), dim=-1))
            if k + 1 < self.steps:
                s = self.gru(x, s)
        lp = torch.stack(log_probs, dim=1)
        if self.training and self.step_dropout > 0:
            keep = torch.rand(lp.shape[:2], device=lp.device) >= self.step_dropout
            keep[~keep.any(1), 0] = True
            lp = lp.masked_fill(~keep.unsqueeze(-1), float("-inf"))
            return torch.logsumexp(lp, dim=1) - keep.sum(1, keepdim=True).to(lp.dtype).log()
        return torch.logsumexp(lp, dim=1) - torch.log(torch.tensor(float(self.steps), device=lp.device))


def segment_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor, boundary_ids: list) -> torch.Tensor:
    """0 for the tokens of the first text, 1 for those of the second, 2 for boundary and padding
    tokens: the first run of tokens between boundaries is the first text, every later run the second."""
    bounds = torch.tensor(boundary_ids or [-1], dtype=input_ids.dtype, device=input_ids.device)
    boundary = (input_ids.unsqueeze(-1) == bounds).any(-1) | (attention_mask == 0)
    content = ~boundary
    before = torch.cat([torch.zeros_like(content[:, :1]), content[:, :-1]], dim=1)
    run = torch.cumsum((content & ~before).long(), dim=1)
    return torch.where(content, (run >= 2).long(), torch.full_like(run, 2))


class LoraLinear(nn.Linear):
    """A linear layer of the shared encoder with LoRA adapters: ``W x + b`` plus, while adapter ``a``
    is active, ``(B_a (A_a x)) * scaling_a`` (peft's order of operations, so the same numbers). The
    layer keeps its own parameter names (``weight``, ``bias``); ``lora_A.<a>`` is (rank, in),
    ``lora_B.<a>`` is (out, rank). No adapter active (or one that does not adapt this layer): the
    plain layer. There is no LoRA dropout: it is the identity outside training, as here."""

    def __init__(self, base: nn.Linear, adapters: dict) -> None:
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.ParameterDict({name: nn.Parameter(torch.zeros(int(spec["rank"]), base.in_features, **like))
                                        for name, spec in adapters.items()})
        self.lora_B = nn.ParameterDict({name: nn.Parameter(torch.zeros(base.out_features, int(spec["rank"]), **like))
                                        for name, spec in adapters.items()})
        self.scaling = {name: float(spec["scaling"]) for name, spec in adapters.items()}
        self.active: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = F.linear(x, self.weight, self.bias)
        name = self.active
        if name is None or name not in self.scaling:
            return result
        return result + F.linear(F.linear(x, self.lora_A[name]), self.lora_B[name]) * self.scaling[name]


def add_lora_layers(encoder: nn.Module, adapters: dict) -> None:
    """Replace each linear layer that an adapter of ``adapters`` (``MtdnnConfig.adapters``) adapts by a
    ``LoraLinear`` holding every adapter of that layer."""
    per_layer: dict = {}
    for name, spec in adapters.items():
        for path in spec["layers"]:
            per_layer.setdefault(path, {})[name] = spec
    for path, specs in per_layer.items():
        parent_path, _, child = path.rpartition(".")
        parent = encoder.get_submodule(parent_path)
        base = getattr(parent, child)
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRA layer {path!r} of the encoder is a {type(base).__name__}, not a linear layer")
        setattr(parent, child, LoraLinear(base, specs))


@contextmanager
def active_adapter(encoder: nn.Module, name: str | None) -> Iterator[None]:
    """Run the encoder's forward passes in the block through adapter ``name`` (None: none). The
    choice is a flag on the encoder's layers (as peft's ``set_adapter``): one forward pass of a model
    at a time."""
    layers = [m for m in encoder.modules() if isinstance(m, LoraLinear)]
    for m in layers:
        m.active = name
    try:
        yield
    finally:
        for m in layers:
            m.active = None


class MtdnnMultiTaskModel(PreTrainedModel):
    """Shared encoder(s) + one head per task; see the module docstring."""

    config_class = MtdnnConfig
    base_model_prefix = "mtdnn"
    _no_split_modules: list = []

    def __init__(self, config: MtdnnConfig) -> None:
        super().__init__(config)
        enc_cfg = dict(config.encoder)
        encoder_config = AutoConfig.for_model(enc_cfg.pop("model_type"), **enc_cfg)
        self.encoders = nn.ModuleDict({key: _build_encoder(encoder_config) for key in config.encoder_keys})
        for encoder in self.encoders.values():
            add_lora_layers(encoder, config.adapters)
        hidden = encoder_config.hidden_size
        # token type ids only where the encoder has room for a second segment (RoBERTa, XLM-R: 1 type,
        # DeBERTa-v3: 0, DistilBERT/ModernBERT: no such input), as mtdnn's model/encoders.py decides
        first = next(iter(self.encoders.values()))
        self.token_types = (int(getattr(encoder_config, "type_vocab_size", 0) or 0) >= 2
                            and "token_type_ids" in inspect.signature(first.forward).parameters)
        self.heads = nn.ModuleDict({name: _build_head(spec, hidden) for name, spec in config.tasks.items()
                                    if spec.get("head_of", name) == name})
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Weights come from model.safetensors; nothing to initialise."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, task: str | list | None = None,
                seg: torch.Tensor | None = None, **kwargs: Any) -> MtdnnOutput:
        names = list(self.config.task_order) if task is None else [task] if isinstance(task, str) else list(task)
        unknown = [n for n in names if n not in self.config.tasks]
        if unknown:
            raise ValueError(f"unknown task {unknown[0]!r}; this model has: {', '.join(self.config.tasks)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if seg is None:
            seg = segment_ids(input_ids, attention_mask, self.config.segment_boundary_ids)
        enc_kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.token_types:
            enc_kwargs["token_type_ids"] = token_type_ids
        hidden: dict = {}
        outputs = {}
        for name in names:
            spec = self.config.tasks[name]
            key = (spec["encoder"], spec.get("adapter"))  # one encoder pass per encoder and adapter
            if key not in hidden:
                with active_adapter(self.encoders[key[0]], key[1]):
                    hidden[key] = self.encoders[key[0]](**enc_kwargs).last_hidden_state
            outputs[name] = self.heads[spec.get("head_of", name)](hidden[key], seg, attention_mask)
        if isinstance(task, str):
            return MtdnnOutput(logits=outputs[task])
        return MtdnnOutput(task_logits=outputs)


def _build_encoder(encoder_config: Any) -> nn.Module:
    try:
        return AutoModel.from_config(encoder_config, add_pooling_layer=False)
    except TypeError:  # encoder classes without a pooler
        return AutoModel.from_config(encoder_config)


def _build_head(spec: dict, hidden: int) -> nn.Module:
    # ``output``: {outputs, per: row | token, context_only}; exports without it hold row heads, or span heads
    output = spec.get("output") or (
        {"outputs": 2, "per": "token", "context_only": True} if spec["type"] == "span" else
        {"outputs": len(spec["labels"]) if spec["type"] == "classification" else 1, "per": "row"})
    n_out = int(output["outputs"])
    head = spec.get("head", {})
    if output.get("per") == "token":
        return TokenHead(hidden, n_out, float(spec.get("dropout", 0.1)), bool(output.get("context_only")))
    if head.get("kind") == "san":
        return SANHead(hidden, n_out, int(head.get("steps", 5)), float(head.get("step_dropout", 0.1)),
                       float(spec.get("dropout", 0.1)))
    return LinearHead(hidden, n_out, float(spec.get("dropout", 0.1)))
