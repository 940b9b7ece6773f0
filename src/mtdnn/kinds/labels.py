"""Reading label values shared by the kinds that predict one of a fixed set of labels."""

from __future__ import annotations

from typing import Any

from ..records import Column, Source
from .specs import SplitSpec, TaskSpec

# label values that sound like the positive class (``tasks init`` puts such a label second)
POSITIVE = {"1", "true", "yes", "y", "pos", "positive", "relevant", "entailment", "entails", "correct",
            "match", "duplicate", "paraphrase", "acceptable", "good"}


def show(value: Any, limit: int = 40) -> str:
    """A value from a file as it appears in a message: quoted, escaped, cut short."""
    text = value if isinstance(value, str) else str(value)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def as_text(value: Any) -> str | None:
    """A cell as text; None for a missing value (None, NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value if isinstance(value, str) else str(value)


def parse_class_label(task: TaskSpec, split: SplitSpec, raw: Any, from_hub: bool) -> tuple[Any, str | None]:
    """A raw label -> (label name, problem); problem is None, 'missing', or a message.

    An integer from datasets (hub, parquet) is a class index (a ClassLabel), unless the split's
    label_map or the task's labels name it as a value ("0", "1", ...): then it is read as text."""
    named = isinstance(raw, int) and (str(raw) in split.label_map or str(raw) in task.labels)
    if from_hub and isinstance(raw, int) and not isinstance(raw, bool) and not named:
        if raw < 0:
            return None, "missing"
        if raw >= len(task.labels):
            return None, f"label index {raw} outside 0..{len(task.labels) - 1}"
        return task.labels[raw], None
    text = as_text(raw)
    text = text.strip() if text is not None else ""
    text = split.label_map.get(text, text)
    if text in split.missing_labels:
        return None, "missing"
    if text not in task.labels:
        return None, f"unknown label {show(text)} (expected one of: {', '.join(task.labels)})"
    return text, None


def positive_last(pair: list[str]) -> list[str]:
    """Two labels with the positive-sounding one second (binary F1 scores label index 1)."""
    if pair[0].lower() in POSITIVE and pair[1].lower() not in POSITIVE:
        return [pair[1], pair[0]]
    return pair


def class_label_names(train: Source, label: Column) -> tuple[list[str], dict[str, str], str]:
    """The labels of a datasets ClassLabel column: its names, in class-index order."""
    return train.class_names[label.name], {}, "the ClassLabel's names, in class-index order"


def label_values(label: Column) -> list[str]:
    """The distinct values of a label column: integers in numeric order, else alphabetical."""
    return sorted(set(label.values), key=int) if label.kind == "int" else sorted(set(label.values))
