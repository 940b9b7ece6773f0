"""What a kind reads of a task, of a split's definition and of a served task.

The kinds' hooks take ``tasks.schema.TaskDef`` and ``SplitDef`` objects and the server's
``export.engine.TaskInfo``, but the schema imports the kinds (a task's ``type`` names one), so the
kinds name the fields they use here instead of importing those classes. A kind that reads a new
field of a task adds it here; ``tests/test_kinds.py`` holds the schema's classes to these
protocols and these protocols to what the kinds read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SplitSpec(Protocol):
    """The fields of a split's definition (``tasks.schema.SplitDef``) that kinds read."""

    role: str                        # train, dev or test
    path: str | None                 # a local file (or None: ``hub``)
    hub: Any                         # a ``datasets`` source (``tasks.schema.HubSource``)
    hub_columns: Any                 # its columns, where they differ from ``columns``
    format: str                      # tsv, csv, jsonl, parquet, conll (tagging), squad (span)
    columns: Any                     # which column holds what (``tasks.schema.Columns``)
    labeled: bool
    label_map: dict[str, str]        # raw label value -> label name
    missing_labels: list[str]        # label values that mean "no gold label"
    titles: str | list[str] | None   # span: the articles of a SQuAD file the split keeps


@runtime_checkable
class TaskSpec(Protocol):
    """The fields of a task (``tasks.schema.TaskDef``) that kinds read."""

    name: str
    type: str                        # the kind's name
    input: str                       # single or pair
    labels: list[str]
    metrics: list[str]
    head: Any                        # ``tasks.schema.HeadDef``: kind, steps, step_dropout
    dropout: float
    adv_loss: str | None
    splits: Mapping[str, SplitSpec]
    ranking_no_positive: str
    ranking_gamma: float
    scheme: str | None               # tagging
    stride: int | None               # span
    max_answer_length: int | None
    n_best: int | None
    version: str | None
    null_threshold: float | None

    @property
    def kind(self) -> Any:
        """The task's kind (``TaskKind``)."""

    @property
    def metric_names(self) -> list[str]:
        """The names its metrics are reported under."""

    @property
    def selection_split(self) -> str | None:
        """The dev split that selects epochs."""

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy with ``update``'s fields replaced (pydantic)."""


@runtime_checkable
class ServedTask(Protocol):
    """What a kind that cuts served inputs itself reads of a served task (``export.engine.TaskInfo``)."""

    labels: list[str]
    settings: dict[str, Any]         # ``TaskKind.export_settings``
