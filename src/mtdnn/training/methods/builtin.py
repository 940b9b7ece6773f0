"""The built-in methods, registered in the order their loss compositions nest (each wraps the ones
before it) and their epoch records appear::

    sampling      --sampling, max_epoch_examples_per_task: the schedule, the mixture   sampling.py
    pcgrad        --mtl-method pcgrad: grouped schedule, projected gradients           pcgrad.py
    weighting     loss_weight/--task-weights, or --mtl-method uncertainty              weighting.py
    distillation  --teachers                                                            distill.py
    smart         --adv (--adv-proximal: the anchor)                                    smart.py
    grad_cosine   --log-grad-cosine                                                     monitor.py
    early_stopping  --early-stopping-patience: stops when the selection score stalls    early_stopping.py

so a run with all of them computes ``SmartLoss(DistillLoss(UncertaintyWeighting(TaskLoss)))``.
"""

from __future__ import annotations

from ...config import TrainConfig
from .base import Method
from .distill import Distillation
from .early_stopping import early_stopping
from .monitor import gradient_monitor
from .pcgrad import PCGrad
from .registry import register_method
from .sampling import task_sampling
from .smart import Smart
from .weighting import task_weighting


def _pcgrad(cfg: TrainConfig) -> Method | None:
    return PCGrad(cfg) if cfg.mtl_method == "pcgrad" else None


def _distillation(cfg: TrainConfig) -> Method | None:
    return Distillation(cfg) if cfg.teachers else None


def _smart(cfg: TrainConfig) -> Method | None:
    return Smart(cfg) if cfg.adv else None


for _name, _build in (("sampling", task_sampling), ("pcgrad", _pcgrad), ("weighting", task_weighting),
                      ("distillation", _distillation), ("smart", _smart), ("grad_cosine", gradient_monitor),
                      ("early_stopping", early_stopping)):
    register_method(_name, _build)
