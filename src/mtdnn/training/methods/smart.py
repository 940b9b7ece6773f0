"""SMART (Jiang et al. 2020, "SMART: Robust and efficient fine-tuning ... through principled
regularized optimization"): smoothness-inducing adversarial regularisation on the input
embeddings, and optionally the Bregman proximal point term. ``--adv`` turns it on; it is a loss
composition (``training/step.py``) that wraps another one (``base``: the task's own loss, or a
weighted one)::

    loss = base(batch) + adv_alpha * D(f(x + delta*), f(x)) [+ adv_proximal_weight * D(f(x), f_ema(x))]

- ``f(x)``: the model's output on the batch as ``base`` computed it (captured, not recomputed);
  ``f(x + delta)``: the same model run from the input WORD embeddings plus ``delta`` (position and
  token-type embeddings and the embedding LayerNorm follow as usual; padding is not perturbed).
- ``delta*``: ``delta_0 ~ N(0, adv_noise_var)`` per element, then ``adv_steps`` projected
  gradient-ascent steps on ``D(f(x + delta), f(x).detach())``:
  ``delta <- project(delta + adv_step_size * g / ||g||)``, the norm per example, ``adv_norm``:
  ``inf`` (the paper's: ``g / max|g|``, then every element clipped to ``[-adv_epsilon,
  adv_epsilon]``) or ``l2`` (``g / ||g||_2``, then ``delta`` scaled into the L2 ball of radius
  ``adv_epsilon`` over the example's tokens). The ascent takes the gradient with respect to
  ``delta`` alone (``torch.autograd.grad``): the model's parameters get no gradient from it.
- ``D``: the task's ``adv_loss`` (task YAML), by default by type: the symmetric KL divergence
  ``sum_c (p_c - q_c)(log p_c - log q_c)`` of the class distributions (classification; a SAN head's
  log step-averaged probabilities are its distribution); for ranking the same over each question's
  candidates, ``softmax(gamma * score)`` within the group (the distribution the ranking loss
  models); squared error of the scores for regression. ``mse`` on a classification task compares the
  class probabilities. Summed over the batch's units and scaled like the task loss (``per_unit``).
  In the final term both outputs carry gradients.
- Randomness: every forward of one batch (clean, each ascent step, the final perturbed one, the
  anchor) draws the SAME dropout and SAN step-dropout masks: the random state before the clean
  forward is restored before each of the others (``capture.RngState``), and the state after the
  noise draw is restored at the end. So the term measures the perturbation alone: it is exactly zero
  when ``delta`` is zero, with dropout on.
- Bregman proximal point (``--adv-proximal``): an exponential moving average of the trainable
  weights (``theta_ema <- decay * theta_ema + (1 - decay) * theta`` after every optimiser step,
  starting from the initial weights) is the anchor; ``D(f(x; theta), f(x; theta_ema))`` is added
  with weight ``adv_proximal_weight``. The average lives in ``EmaAnchor``, one flat buffer; it is
  saved in resumable states (the run's method state) and not in the epoch checkpoints.

All of it runs inside ``StepLoss.forward``: one DDP forward, whose backward synchronises every
gradient. bf16: the perturbation is added in float32 to the float32 word embeddings and the
divergences are computed in float32; a perturbation much below bf16's resolution of the
embeddings (about 0.4% of their size) is lost in the first matmul, which the default size is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ...config import TrainConfig
from ...errors import ConfigError
from ...tasks.schema import TaskDef
from ..step import LossComposition
from .base import Method, MethodContext, refuse_kinds
from .capture import RngState, base_output, model_device, unit_scale

Norm = Literal["inf", "l2"]
TINY = 1e-12


@dataclass(frozen=True)
class SmartSettings:
    alpha: float = 1.0
    epsilon: float = 1e-3
    step_size: float = 1e-3
    steps: int = 1
    noise_var: float = 1e-6
    norm: Norm = "inf"
    proximal: bool = False
    proximal_weight: float = 1.0
    ema_decay: float = 0.99

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "SmartSettings":
        return cls(cfg.adv_alpha, cfg.adv_epsilon, cfg.adv_step_size, cfg.adv_steps, cfg.adv_noise_var,
                   cfg.adv_norm, cfg.adv_proximal, cfg.adv_proximal_weight, cfg.adv_ema_decay)


# ----------------------------------------------------------------------------- divergences
def adversarial_loss_kind(task: TaskDef) -> str:
    """The task's ``adv_loss``, or its kind's default (sym_kl; mse for regression)."""
    if task.adv_loss is not None:
        return task.adv_loss
    return task.kind.adv_divergence(task)


def output_divergence(kind: str, task: TaskDef, a: torch.Tensor, b: torch.Tensor,
                      batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """D(a, b) of two outputs of the task's head on ``batch``, summed over the batch's units
    (``kind``: the divergence, sym_kl or mse, as the task's kind applies it)."""
    return task.kind.output_divergence(task, kind, a, b, batch)


# ----------------------------------------------------------------------------- the perturbation
def _per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def project(delta: torch.Tensor, epsilon: float, norm: Norm) -> torch.Tensor:
    """``delta`` moved into the ball of radius ``epsilon`` (per example: dim 0)."""
    if norm == "inf":
        return delta.clamp(-epsilon, epsilon)
    size = delta.flatten(1).norm(dim=1)
    return delta * _per_example((epsilon / size.clamp_min(TINY)).clamp(max=1.0), delta)


def ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """``grad`` divided by its norm per example (inf: its largest absolute element)."""
    flat = grad.flatten(1)
    size = flat.abs().amax(dim=1) if norm == "inf" else flat.norm(dim=1)
    return grad / _per_example(size.clamp_min(TINY), grad)


def initial_noise(shape: tuple[int, ...], mask: torch.Tensor, settings: SmartSettings) -> torch.Tensor:
    """``N(0, noise_var)`` per element on the real tokens (``mask`` (B, T, 1)), in the ball.
    Draws from torch's global random stream."""
    noise = torch.randn(shape, device=mask.device) * math.sqrt(settings.noise_var)
    return project(noise * mask, settings.epsilon, settings.norm)


def adversarial_perturbation(forward: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor,
                             diverge: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                             init: torch.Tensor, mask: torch.Tensor, settings: SmartSettings) -> torch.Tensor:
    """``settings.steps`` projected gradient-ascent steps on ``diverge(forward(delta), target)`` from
    ``init``; the gradient is taken with respect to ``delta`` only. Returns the final ``delta``,
    detached, inside the ball and zero where ``mask`` is."""
    delta = init.detach()
    for _ in range(settings.steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(diverge(forward(delta), target), delta)
        step = settings.step_size * ascent_direction(torch.nan_to_num(grad.float()) * mask, settings.norm)
        delta = project(delta.detach() + step, settings.epsilon, settings.norm) * mask
    return delta.detach()


# ----------------------------------------------------------------------------- the proximal anchor
class EmaAnchor(nn.Module):
    """An exponential moving average of a model's trainable weights (one flat float32 buffer
    ``weights``, in ``named_parameters`` order), and the model's output under those weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in params]
        self.shapes = [tuple(p.shape) for _, p in params]
        self.decay = decay
        self.register_buffer("weights", torch.cat([p.detach().float().reshape(-1) for _, p in params]).clone())

    def views(self) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = math.prod(shape)
            out[name] = self.weights[offset:offset + n].view(shape)
            offset += n
        return out

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards the model's current weights."""
        current = dict(model.named_parameters())
        for name, view in self.views().items():
            view.mul_(self.decay).add_(current[name].detach().float(), alpha=1.0 - self.decay)

    def follow(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Update the average after every step of ``optimizer`` (a step post-hook)."""
        optimizer.register_step_post_hook(lambda opt, args, kwargs: self.update(model))

    def output(self, model: nn.Module, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``model(task, batch)`` with the averaged weights (the model's own are left as they are)."""
        own = dict(model.named_parameters())
        weights = {n: v.to(own[n].dtype) for n, v in self.views().items()}
        return torch.func.functional_call(model, weights, (task, batch))


# ----------------------------------------------------------------------------- the composition
class SmartLoss(nn.Module):
    """``base``'s loss plus SMART's adversarial term (and the proximal term with an ``anchor``)."""

    def __init__(self, settings: SmartSettings, base: Any, anchor: EmaAnchor | None = None) -> None:
        super().__init__()
        self.settings, self.base, self.anchor = settings, base, anchor

    def forward(self, model: nn.Module, task: str, batch: dict[str, torch.Tensor],
                per_unit: float | None) -> torch.Tensor:
        t = model.tasks[task]
        start = RngState.capture(model_device(model))
        loss, clean = base_output(model, self.base, task, batch, per_unit)
        scale = unit_scale(t, batch, per_unit)
        kind = adversarial_loss_kind(t)
        total = loss
        after = RngState.capture(model_device(model))  # where the stream goes on after this batch
        if kind != "none" and self.settings.alpha > 0:
            adv, after = self.adversarial_term(model, t, batch, clean, kind, start)
            total = total + self.settings.alpha * scale * adv
        if self.anchor is not None:
            start.restore()
            with torch.no_grad():
                anchored = self.anchor.output(model, task, batch)
            prox_kind = kind if kind != "none" else t.kind.adv_divergence(t)
            total = total + self.settings.proximal_weight * scale * output_divergence(prox_kind, t, clean,
                                                                                      anchored, batch)
        after.restore()
        return total

    def adversarial_term(self, model: nn.Module, task: TaskDef, batch: dict[str, torch.Tensor],
                         clean: torch.Tensor, kind: str, start: RngState) -> tuple[torch.Tensor, RngState]:
        """D(f(x + delta*), f(x)) summed over the units, and the random state to continue from."""
        mask = batch["attention_mask"].unsqueeze(-1).float()
        width = model.encoder.get_input_embeddings().embedding_dim
        init = initial_noise((*batch["input_ids"].shape, width), mask, self.settings)
        after = RngState.capture(model_device(model))

        def forward(delta: torch.Tensor) -> torch.Tensor:
            start.restore()  # the clean forward's dropout masks
            return model(task.name, batch, perturbation=delta)

        def diverge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return output_divergence(kind, task, a, b, batch)

        delta = adversarial_perturbation(forward, clean.detach(), diverge, init, mask, self.settings)
        return diverge(forward(delta), clean), after


def smart_parts(cfg: TrainConfig, model: nn.Module, base: Any, fsdp: bool) -> tuple[SmartLoss, EmaAnchor | None]:
    """The SMART composition around ``base`` for ``cfg`` (``--adv``), and its proximal anchor (a
    module whose state resumable states must keep), if ``--adv-proximal``."""
    settings = SmartSettings.from_config(cfg)
    if settings.proximal and fsdp:
        raise ConfigError("--adv-proximal needs the full weights on every process: use --parallel ddp",
                          field="adv_proximal")
    anchor = EmaAnchor(model, settings.ema_decay) if settings.proximal else None
    return SmartLoss(settings, base, anchor), anchor


class Smart(Method):
    """``--adv``: SMART's composition around the run's, and its proximal anchor (``--adv-proximal``),
    which follows every optimiser step and is kept in resumable states."""

    name = "smart"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.anchor: EmaAnchor | None = None

    def compose(self, inner: LossComposition, run: MethodContext) -> LossComposition:
        refuse_kinds(self.name, run.model.tasks.values())
        loss, self.anchor = smart_parts(self.cfg, run.model, inner, run.dist.fsdp)
        return loss

    def state(self) -> nn.Module | None:
        return self.anchor

    def after_update(self, job: Any, state: Any) -> None:
        if self.anchor is not None:
            self.anchor.update(job.model)
