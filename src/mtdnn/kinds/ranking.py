"""``type: ranking``: a question with candidate answers (``input: ranking``), labels
``[positive, negative]``.

Rows of one question form a candidate group (the ``group`` column, else the same ``text_a``);
groups stay whole in subsets and batches. The head scores each candidate; the loss is the
softmax over the group's scores (``model/objectives.ranking_loss``), and the best-scored candidate
of each group is predicted positive."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..model.objectives import group_log_softmax, group_symmetric_kl, rank_predictions, ranking_loss
from ..records import Column, InitOptions, RawSplit, Source, SplitCheck, TokenizedSplit
from .base import TaskKind
from .labels import class_label_names, label_values, parse_class_label, positive_last, show
from .specs import SplitSpec, TaskSpec

log = logging.getLogger(__name__)


class Ranking(TaskKind):
    name: ClassVar[str] = "ranking"
    inputs: ClassVar[tuple[str, ...]] = ("ranking",)
    loss_name: ClassVar[str] = "ranking_softmax"
    keeps_groups: ClassVar[bool] = True

    def validate(self, task: TaskSpec) -> None:
        if task.input != "ranking":
            raise ValueError("a ranking task needs input: ranking")
        if len(task.labels) != 2:
            raise ValueError("a ranking task needs labels: [positive_label, negative_label]")

    def parse_label(self, task: TaskSpec, split: SplitSpec, raw: Any, from_hub: bool) -> tuple[Any, str | None]:
        return parse_class_label(task, split, raw, from_hub)

    def after_read(self, task: TaskSpec, split: SplitSpec, raw: RawSplit) -> RawSplit:
        return _check_groups(task, split, raw)

    def encode_labels(self, task: TaskSpec, raw: RawSplit) -> tuple[np.ndarray, np.ndarray]:
        labels, _ = super().encode_labels(task, raw)
        return labels, raw.group_ids()

    def holdout_strata(self, task: TaskSpec, raw: RawSplit) -> np.ndarray:
        """Each row's question (candidate group)."""
        return raw.group_ids()

    def label_array(self, task: TaskSpec, labels: list[Any]) -> np.ndarray:
        return np.asarray([1 if y == task.labels[0] else 0 for y in labels], dtype=np.int64)

    def loss(self, task: TaskSpec, output: torch.Tensor, batch: dict[str, torch.Tensor],
             reduction: str = "mean") -> torch.Tensor:
        return ranking_loss(output.squeeze(-1), batch["labels"], batch["groups"], task.ranking_gamma, reduction)

    def loss_units(self, labels: torch.Tensor, groups: torch.Tensor) -> int:
        """Questions with a positive answer."""
        return int(torch.unique(groups[labels == 1]).numel())

    def decide(self, task: TaskSpec, outputs: np.ndarray, split: TokenizedSplit) -> np.ndarray:
        return _best_of_groups(outputs, split.groups)

    def prediction_labels(self, task: TaskSpec, preds: np.ndarray) -> list[str]:
        return [task.labels[0] if p == 1 else task.labels[1] for p in preds]

    def class_names(self, task: TaskSpec) -> list[str] | None:
        """Index 0 = not the best candidate (``labels[1]``), 1 = the best (``labels[0]``)."""
        return [task.labels[1], task.labels[0]]

    def output_divergence(self, task: TaskSpec, divergence: str, a: torch.Tensor, b: torch.Tensor,
                          batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """On the gamma-scaled scores: squared difference, or the symmetric KL of each group's
        softmax."""
        sa, sb = task.ranking_gamma * a.float().squeeze(-1), task.ranking_gamma * b.float().squeeze(-1)
        if divergence == "mse":
            return ((sa - sb) ** 2).sum()
        return group_symmetric_kl(sa, sb, batch["groups"]).sum()

    def distill_targets(self, task: TaskSpec, outputs: list[tuple[np.ndarray, float]], groups: np.ndarray,
                        temperature: float) -> torch.Tensor:
        """Each teacher's within-group softmax of its gamma-scaled scores at ``temperature``, averaged."""
        g = torch.from_numpy(groups)
        per_teacher = [group_log_softmax(gamma * torch.from_numpy(o).double() / temperature, g).exp()
                       for o, gamma in outputs]
        return torch.stack(per_teacher).mean(0).float()

    def distill_divergence(self, task: TaskSpec, output: torch.Tensor, target: torch.Tensor,
                           batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
        log_q = group_log_softmax(task.ranking_gamma * output.float().squeeze(-1) / temperature, batch["groups"])
        kl = torch.special.xlogy(target, target) - target * log_q
        return temperature ** 2 * kl.sum()

    def card_labels(self, task: TaskSpec) -> str:
        return "score (higher: more relevant)"

    def standard_folder(self, task: TaskSpec) -> tuple[dict[int, str], str]:
        raise ConfigError(f"task '{task.name}' ranks the candidate answers of a question, which a standard "
                          f"text-classification folder cannot (its score means something only against the "
                          f"question's other candidates): export the whole model instead (mtdnn export RUN_DIR "
                          "--format hf --output DIR, without --task; load it with trust_remote_code=True); "
                          "mtdnn predict ranks each question's candidates with it (or with the run itself)",
                          field="task")

    def onnx_predictions(self, task: TaskSpec, out: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return _best_of_groups(out.reshape(-1), groups)

    def init_type_note(self) -> str:
        return "given with --type; the rows of one question (text_a) are one candidate group"

    def init_labels(self, train: Source, label: Column, opts: InitOptions) -> tuple[list[str], dict[str, str], str]:
        if label.name in train.class_names:
            return class_label_names(train, label)
        values = label_values(label)
        if len(values) != 2:
            raise ConfigError(f"a ranking label has two values (positive, negative); '{label.name}' has "
                              f"{len(values)}: {', '.join(values[:5])}", path=str(train.path or train.hub))
        neg, pos = positive_last(values)
        return [pos, neg], {}, f"[positive, negative]: GUESS that '{pos}' marks a right answer"

    def init_metrics(self, labels: list[str]) -> tuple[list[str], str]:
        return ["accuracy"], "the best-scored candidate of a group counts as its positive"

    def init_texts_needed(self) -> int:
        return 2

    def init_input(self, n_texts: int) -> str:
        return "ranking"

    def init_text_note(self) -> str:
        return " (question, candidate answer)"

    def label_stats(self, task: TaskSpec, raw: RawSplit, out: SplitCheck) -> None:
        super().label_stats(task, raw, out)
        gid = raw.group_ids()
        sizes = np.bincount(gid)
        positives = np.bincount(gid, weights=np.asarray([y == task.labels[0] for y in raw.labels], dtype=float),
                                minlength=len(sizes))
        out.groups = {"groups": float(len(sizes)), "min": float(sizes.min()), "median": float(np.median(sizes)),
                      "max": float(sizes.max()), "single": float((sizes == 1).sum()),
                      "no_positive": float((positives == 0).sum()), "several_positive": float((positives > 1).sum())}


def _best_of_groups(scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """1 for the best-scored candidate of each group, 0 for the others."""
    return rank_predictions(torch.from_numpy(scores), torch.from_numpy(groups)).numpy()


def _check_groups(task: TaskSpec, split: SplitSpec, raw: RawSplit) -> RawSplit:
    """Every training group needs a positive answer (labels[0]); error or drop by the task's rule."""
    positive = task.labels[0]
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(raw.group_ids().tolist()):
        groups.setdefault(g, []).append(i)
    no_pos = [idx for idx in groups.values() if not any(raw.labels[i] == positive for i in idx)]
    if not no_pos or split.role != "train":
        return raw
    if task.ranking_no_positive == "error":
        first = no_pos[0][0]
        which = (f"group {show(raw.group_keys[first])}, question {show(raw.text_a[first], 60)}"
                 if raw.group_keys is not None else f"question {show(raw.text_a[first], 60)}")
        raise DataError(f"ranking group ({which}) has no positive answer "
                        f"'{positive}' ({len(no_pos)} such groups)", path=raw.source,
                        line=raw.lines[first], field="label")
    drop = {i for idx in no_pos for i in idx}
    log.warning("%s/%s: dropped %d ranking groups (%d rows) without a positive answer",
                task.name, raw.split, len(no_pos), len(drop))
    kept = raw.select([i for i in range(len(raw)) if i not in drop])
    kept.dropped_no_positive = len(drop)
    return kept
