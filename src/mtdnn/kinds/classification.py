"""``type: classification``: one label of a fixed set per input (single texts or pairs).

The head gives one logit per label (linear, or SAN for pairs), trained with cross-entropy; the
prediction is the most probable label, and predictions keep the class probabilities."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..model.objectives import symmetric_kl
from ..records import Column, InitOptions, Source, SplitCheck, TokenizedSplit
from .base import TaskKind
from .labels import class_label_names, label_values, parse_class_label, positive_last
from .specs import SplitSpec, TaskSpec

class Classification(TaskKind):
    name: ClassVar[str] = "classification"
    loss_name: ClassVar[str] = "cross_entropy"

    def validate(self, task: TaskSpec) -> None:
        super().validate(task)
        if len(task.labels) < 2:
            raise ValueError("a classification task needs at least 2 labels")

    def reported_metric_names(self, num_labels: int, metrics: list[str]) -> list[str]:
        return ["f1_macro" if m == "f1" and num_labels > 2 else m for m in metrics]

    def num_outputs(self, task: TaskSpec) -> int:
        return len(task.labels)

    def takes_pair_head(self, input_kind: str) -> bool:
        return input_kind == "pair"

    def parse_label(self, task: TaskSpec, split: SplitSpec, raw: Any, from_hub: bool) -> tuple[Any, str | None]:
        return parse_class_label(task, split, raw, from_hub)

    def label_array(self, task: TaskSpec, labels: list[Any]) -> np.ndarray:
        index = {name: i for i, name in enumerate(task.labels)}
        return np.asarray([index[y] for y in labels], dtype=np.int64)

    def loss(self, task: TaskSpec, output: torch.Tensor, batch: dict[str, torch.Tensor],
             reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(output.float(), batch["labels"], reduction=reduction)

    def eval_outputs(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.softmax(out, dim=-1)

    def decide(self, task: TaskSpec, outputs: np.ndarray, split: TokenizedSplit) -> np.ndarray:
        return outputs.argmax(-1)

    def prediction_labels(self, task: TaskSpec, preds: np.ndarray) -> list[str]:
        return [task.labels[i] for i in preds]

    def prediction_columns(self, task: TaskSpec) -> list[str]:
        return [f"p_{name}" for name in task.labels]

    def prediction_extras(self, task: TaskSpec, outputs: np.ndarray) -> list[str]:
        return [f"{p:.6f}" for p in outputs]

    def class_names(self, task: TaskSpec) -> list[str] | None:
        return list(task.labels)

    def output_divergence(self, task: TaskSpec, divergence: str, a: torch.Tensor, b: torch.Tensor,
                          batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if divergence == "mse":
            return ((F.softmax(a.float(), -1) - F.softmax(b.float(), -1)) ** 2).sum()
        return symmetric_kl(a, b).sum()

    def distill_targets(self, task: TaskSpec, outputs: list[tuple[np.ndarray, float]], groups: np.ndarray,
                        temperature: float) -> torch.Tensor:
        """The teachers' class probabilities re-tempered (softmax(log p / T)), averaged."""
        probs = [torch.from_numpy(o).double() for o, _ in outputs]
        return torch.stack([torch.softmax(p.clamp_min(1e-30).log() / temperature, -1) for p in probs]).mean(0).float()

    def distill_divergence(self, task: TaskSpec, output: torch.Tensor, target: torch.Tensor,
                           batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
        log_q = torch.log_softmax(output.float() / temperature, dim=-1)
        kl = torch.special.xlogy(target, target) - target * log_q
        return temperature ** 2 * kl.sum()

    def present(self, labels: list[str], row: np.ndarray) -> dict[str, Any]:
        z = np.asarray(row, dtype=np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        return {"label": labels[int(np.argmax(p))], "probabilities": dict(zip(labels, map(float, p)))}

    def card_labels(self, task: TaskSpec) -> str:
        return ", ".join(task.labels)

    def standard_folder(self, task: TaskSpec) -> tuple[dict[int, str], str]:
        return dict(enumerate(task.labels)), "single_label_classification"

    def onnx_predictions(self, task: TaskSpec, out: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return out.argmax(-1)

    def init_labels(self, train: Source, label: Column, opts: InitOptions) -> tuple[list[str], dict[str, str], str]:

        if label.name in train.class_names:
            return class_label_names(train, label)
        values = label_values(label)
        if opts.label_names:
            if len(opts.label_names) != len(values):
                raise ConfigError(f"--label-names gives {len(opts.label_names)} names for {len(values)} labels "
                                  f"({', '.join(values)})", field="label_names")
            return list(opts.label_names), dict(zip(values, opts.label_names)), "named with --label-names"
        if len(values) == 2 and label.kind != "int":
            values = positive_last(values)
        order = ("numeric" if label.kind == "int" else "the positive-sounding one second" if len(values) == 2
                 else "alphabetical")
        return values, {}, f"the label column's values ({order} order = class index)"

    def init_metrics(self, labels: list[str]) -> tuple[list[str], str]:
        if len(labels) == 2:
            return ["accuracy", "f1"], f"f1: binary F1 of the second label, '{labels[1]}'"
        return ["accuracy", "f1_macro"], "f1_macro: the mean of the per-class F1"

    def check_warnings(self, task: TaskSpec, train: SplitCheck) -> list[str]:
        unseen = [label for label, n in train.labels.items() if n == 0]
        return [f"{task.name}/{train.split}: no training rows labeled {', '.join(unseen)}"] if unseen else []
