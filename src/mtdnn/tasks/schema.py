"""The task definition (TaskDef): everything mtdnn knows about a task is data in this schema.

A task is written as YAML (see ``tasks/builtin/*.yaml`` and docs/tasks.md)::

    name: rte
    type: classification          # its kind (mtdnn.kinds): classification | regression | ranking | tagging | span
    input: pair                   # single | pair | ranking (question + candidate answers) | words (tagging)
                                  # | question_context (span: question + the context holding the answer)
    labels: [entailment, not_entailment]
    metrics: [accuracy]
    head: {kind: san, steps: 5, step_dropout: 0.1}   # unset: linear (--pair-head san: SAN for pairs)
    dropout: 0.1
    splits:
      train: {path: glue/RTE/train.tsv, format: tsv, columns: {text_a: sentence1, text_b: sentence2, label: label}}
      dev:   {path: glue/RTE/dev.tsv,   format: tsv, columns: {...}}
      test:  {path: glue/RTE/test.tsv,  format: tsv, role: test, labeled: false, columns: {id: index, ...}}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from ..errors import ConfigError
from ..kinds import KINDS, TaskKind, get_kind, kind_of

# a task's ``type`` names its kind (``mtdnn.kinds``): classification, regression, ranking
TaskType = str
InputKind = Literal["single", "pair", "ranking", "words", "question_context"]
# the head of a pair classification task that names none (``--pair-head``, tasks.registry.with_pair_head)
PairHead = Literal["linear", "san"]
Metric = Literal["accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted", "mcc", "pearson", "spearman",
                 "precision", "recall", "exact"]
# a task that names no metrics reports its kind's defaults; each kind trains with one loss
DEFAULT_METRICS: dict[str, list[str]] = {name: list(k.default_metrics) for name, k in KINDS.items()}
DEFAULT_LOSS: dict[str, str] = {name: k.loss_name for name, k in KINDS.items()}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Columns(_Strict):
    """Where each field of an example lives in a file: a column name, or a 0-based index for files
    without a header. ``group`` (ranking only) names the column that groups the candidates of one
    question: rows with the same value form one group. Without it, rows with the same ``text_a``
    (the question) do."""

    text_a: str | int
    text_b: str | int | None = None
    label: str | int | None = None
    id: str | int | None = None
    group: str | int | None = None
    # span tasks (JSON lines, CSV): the answer's character start (default ``answer_start``)
    answer_start: str | int | None = None


class HubSource(_Strict):
    """A Hugging Face ``datasets`` source: ``load_dataset(path, name, split=split, data_files=...)``.

    Works for hub names (``nyu-mll/glue``) and for local files through the generic builders
    (``path: parquet`` with ``data_files``)."""

    path: str
    name: str | None = None
    split: str = "train"
    data_files: str | list[str] | None = None


class SplitDef(_Strict):
    """One split of a task: a local file (``path`` relative to the data dir, or absolute) and/or a
    ``hub`` source. When both are given, the local file wins and the hub is the fallback."""

    path: str | None = None
    # conll (tagging): word and tag columns by 0-based index in columns.text_a and columns.label
    # squad (span): a SQuAD JSON file, no columns to name
    format: Literal["tsv", "csv", "jsonl", "parquet", "conll", "squad"] = "tsv"
    header: bool = True
    columns: Columns
    # span: the articles (SQuAD titles) the split keeps: ``first:N`` (the first N in file order),
    # ``after:N`` (all after those) or a list of titles
    titles: str | list[str] | None = None
    hub: HubSource | None = None
    hub_columns: Columns | None = None
    role: Literal["train", "dev", "test"] = "dev"
    labeled: bool = True
    # raw label value -> label name, for files that store labels as codes ("0"/"1")
    label_map: dict[str, str] = Field(default_factory=dict)
    # label values that mean "no gold label": such rows are dropped with a count in the log
    missing_labels: list[str] = Field(default_factory=lambda: ["-", ""])
    # name of the GLUE submission file written for this split (test splits)
    submission: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _squad_columns(cls, data: Any) -> Any:
        """A SQuAD JSON file names its fields itself: its split may leave out ``columns``."""
        if isinstance(data, dict) and data.get("format") == "squad" and "columns" not in data:
            return {**data, "columns": {"text_a": "question", "text_b": "context", "label": "answers"}}
        return data

    @model_validator(mode="after")
    def _has_source(self) -> "SplitDef":
        if self.path is None and self.hub is None:
            raise ValueError("a split needs 'path' or 'hub'")
        if self.labeled and self.columns.label is None:
            raise ValueError("a labeled split needs columns.label")
        return self


class HeadDef(_Strict):
    """The task-specific output module. ``linear``: dropout + linear on [CLS].
    ``san``: the stochastic answer network (pair classification only): ``steps`` predictions
    (K in the paper), whole steps dropped per example with rate ``step_dropout`` while training.
    The task's ``dropout`` applies to the [CLS] vector (linear) or to the SAN memories.
    A task without ``head`` gets the linear one, except a pair classification task in a run with
    ``--pair-head san`` (``tasks.registry.with_pair_head``)."""

    kind: Literal["linear", "san"] = "linear"
    steps: int = Field(5, ge=1, le=20)
    step_dropout: float = Field(0.1, ge=0.0, lt=1.0)


class TaskDef(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    type: TaskType
    input: InputKind = "pair"
    labels: list[str] = Field(default_factory=list)
    metrics: list[Metric] = Field(default_factory=lambda: ["accuracy"])
    head: HeadDef = Field(default_factory=HeadDef)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # the task's loss is multiplied by this in multi-task training (--task-weights overrides it)
    loss_weight: float = Field(1.0, gt=0.0, le=1e6)
    # SMART (--adv): the divergence between clean and perturbed outputs; unset: by type (sym_kl for
    # classification and ranking, mse for regression); none: no adversarial term for this task
    adv_loss: Literal["sym_kl", "mse", "none"] | None = None
    splits: dict[str, SplitDef]
    # ranking: what to do with a training group that has no positive answer
    ranking_no_positive: Literal["error", "drop"] = "error"
    # ranking: gamma of P(A+|Q) = softmax(gamma * score); labels are [positive, negative]
    ranking_gamma: float = Field(1.0, gt=0.0)
    # tagging: the tag scheme of the files (iob1 is read into iob2; plain: tags without entities, POS)
    scheme: Literal["iob1", "iob2", "iobes", "plain"] | None = None
    # span: context tokens two windows of a long context share (unset: 128, at most a quarter of
    # --max-seq-len), the longest answer in tokens, the candidates kept per question, and the
    # SQuAD rules (v2.0: unanswerable questions)
    stride: int | None = Field(None, ge=0)
    max_answer_length: int | None = Field(None, ge=1)
    n_best: int | None = Field(None, ge=1)
    version: Literal["v1.1", "v2.0"] | None = None
    # span, v2.0: a question is answered "" when its null score exceeds its best span's score by more
    # than this (unset: 0)
    null_threshold: float | None = None
    # a test-only task evaluated with another task's head (GLUE AX uses MNLI's)
    head_from: str | None = None
    description: str = ""
    # the folder where a split's relative path is looked up first (then --data-dir, then as given):
    # set to the task file's folder when the file is read; None (built-in tasks): the data dir
    base_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_metrics(cls, data: Any) -> Any:
        """A task without ``metrics`` reports its kind's defaults (regression: Pearson, Spearman)."""
        if isinstance(data, dict) and "metrics" not in data and data.get("type") in DEFAULT_METRICS:
            return {**data, "metrics": DEFAULT_METRICS[data["type"]]}
        return data

    @field_validator("type")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        """``type`` names a registered kind (``mtdnn.kinds.KINDS``)."""
        if v not in KINDS:
            names = [f"'{k}'" for k in KINDS]
            raise PydanticCustomError("literal_error", "Input should be {expected}",
                                      {"expected": ", ".join(names[:-1]) + " or " + names[-1]})
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics_fit(cls, v: list[str], info: ValidationInfo) -> list[str]:
        """Every metric must be computable for the task's predictions, checked when the task file is
        loaded (not after an epoch of training)."""
        kind, labels = info.data.get("type"), info.data.get("labels") or []
        if kind not in KINDS:
            return v  # the type's error is reported
        get_kind(kind).check_metrics(v)
        names = get_kind(kind).reported_metric_names(len(labels), v)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"'{twice[0]}' is listed twice (with {len(labels)} labels, f1 is macro-F1, "
                             "reported as f1_macro)" if twice[0] == "f1_macro" else f"'{twice[0]}' is listed twice")
        return v

    @field_validator("splits")
    @classmethod
    def _splits_not_empty(cls, v: dict[str, SplitDef]) -> dict[str, SplitDef]:
        if not v:
            raise ValueError("a task needs at least one split")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TaskDef":
        kind = self.kind
        kind.validate(self)
        if self.head.kind == "san" and not kind.takes_pair_head(self.input):
            raise ValueError("head kind 'san' needs type: classification and input: pair")
        for name, split in self.splits.items():
            kind.validate_split(self, name, split)
        if self.head_from is None and not any(s.role == "train" for s in self.splits.values()):
            raise ValueError("a task needs a split with role: train (or head_from another task)")
        return self

    # ---- derived views -------------------------------------------------------------
    @property
    def kind(self) -> TaskKind:
        """The task's kind (``mtdnn.kinds``): what its type reads, trains, predicts and reports."""
        return kind_of(self)

    @property
    def has_text_b(self) -> bool:
        """Whether the task's rows have a second text (pairs, ranking candidates)."""
        return self.kind.has_text_b(self)

    @property
    def metric_names(self) -> list[str]:
        """The names the task's metrics are computed and reported under (metrics.json, history):
        ``f1`` is binary F1 with two labels, and macro-F1 named ``f1_macro`` with more."""
        return self.kind.reported_metric_names(len(self.labels), list(self.metrics))

    @property
    def loss_kind(self) -> str:
        """The training loss, fixed by the kind."""
        return self.kind.loss_name

    @property
    def num_outputs(self) -> int:
        return self.kind.num_outputs(self)

    @property
    def eval_splits(self) -> list[str]:
        """Labeled non-training splits, in definition order (the first dev split selects epochs)."""
        return [n for n, s in self.splits.items() if s.role != "train" and s.labeled]

    @property
    def selection_split(self) -> str | None:
        devs = [n for n in self.eval_splits if self.splits[n].role == "dev"]
        return devs[0] if devs else None

    def head_signature(self) -> dict[str, Any]:
        """What must match for a trained head to be reused by another run (``--init-from``)."""
        return {"type": self.type, "labels": list(self.labels), "head": self.head.model_dump(),
                "num_outputs": self.num_outputs}


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[a-z_-]+\[.*\])$")


def _loc_text(loc: tuple) -> str:
    """A field's place (``splits.train.columns``); a key with line breaks or other unprintable
    characters is shown escaped, so the message stays on one line."""
    return ".".join(repr(x)[1:-1] if isinstance(x, str) and not x.isprintable() else str(x) for x in loc)


def format_validation_error(err: ValidationError) -> str:
    errors = err.errors()
    # a value that fits no member of a union (``str | int``) gets one error per member, located
    # under a type tag (columns.label.str, columns.label.int): report them as one, at the field
    tagged: dict[tuple, int] = {}
    for e in errors:
        loc = tuple(e["loc"])
        if loc and isinstance(loc[-1], str) and _UNION_TAG.match(loc[-1]):
            tagged[loc[:-1]] = tagged.get(loc[:-1], 0) + 1
    merged: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for e in errors:
        loc_t = tuple(e["loc"])
        if loc_t and loc_t[:-1] in tagged and tagged[loc_t[:-1]] > 1 and isinstance(loc_t[-1], str) \
                and _UNION_TAG.match(loc_t[-1]):
            loc_t = loc_t[:-1]
            text = repr(e.get("input"))
            got[_loc_text(loc_t)] = text if len(text) <= 40 else text[:40] + "..."
        loc = _loc_text(loc_t) or "(top level)"
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "missing required field"
        elif e["type"] == "extra_forbidden":
            msg = "unknown field"
        msgs = merged.setdefault(loc, [])
        if msg not in msgs:
            msgs.append(msg)
    parts = []
    for loc, msgs in merged.items():
        if loc in got:  # "Input should be a valid string or a valid integer (got 3.5)"
            msgs = [msgs[0].split(", ")[0]] + [m.split(", ")[0].replace("Input should be ", "") for m in msgs[1:]]
            parts.append(f"field '{loc}': {' or '.join(msgs)} (got {got[loc]})")
        else:
            parts.append(f"field '{loc}': {'; '.join(msgs)}")
    return "; ".join(parts)


def _drop_removed_loss(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``loss`` field was removed (each type has one loss). Files that still name it (run
    directories of older versions write ``loss: null``) load when it is null or the type's loss;
    any other value is an error."""
    if "loss" not in data:
        return data
    rest = {k: v for k, v in data.items() if k != "loss"}
    value, kind = data["loss"], data.get("type")
    if value is None or not isinstance(kind, str) or kind not in DEFAULT_LOSS or value == DEFAULT_LOSS[kind]:
        return rest  # an invalid or missing type is reported by the validation
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    raise ConfigError(f"the field was removed: a task's loss follows its type, and {shown} does not fit "
                      f"type '{kind}' (which trains with '{DEFAULT_LOSS[kind]}'); delete the field",
                      path=source, field="loss")


def parse_task(data: Any, source: str) -> TaskDef:
    """Validate a task definition (a mapping); errors name the source and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"a task definition must be a mapping, got {type(data).__name__}",
                          path=source)
    data = _drop_removed_loss(data, source)
    try:
        return TaskDef.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err), path=source) from None


def yaml_tag_hint(e: Exception) -> str:
    """mtdnn reads YAML with the safe loader: tags that would build Python objects are refused."""
    return (" (mtdnn reads YAML with the safe loader: Python tags are never run)"
            if "python/" in str(getattr(e, "problem", "")) else "")


def read_yaml_file(path: str | Path, what: str) -> Any:
    """Parse a YAML file with the safe loader; every failure is a one-line ConfigError naming the
    file (and the line where YAML knows it). ``what`` names the file in 'not found' errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found", path=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.start})", path=str(path)) from None
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", path=str(path)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {_yaml_problem(e)}{yaml_tag_hint(e)}", path=str(path),
                          line=_yaml_line(e, text)) from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    """The first line of what YAML says is wrong (a ReaderError's text runs over two lines)."""
    problem = getattr(e, "problem", None) or str(e)
    lines = str(problem).splitlines()
    return lines[0] if lines else type(e).__name__


def _yaml_line(e: yaml.YAMLError, text: str) -> int | None:
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        return mark.line + 1
    position = getattr(e, "position", None)  # ReaderError: a character offset
    return text[:position].count("\n") + 1 if isinstance(position, int) else None


def load_task_file(path: str | Path) -> list[TaskDef]:
    """Read one YAML file holding a task or a list of tasks (safe loader only). Each task's
    ``base_dir`` is the file's folder (or, when the file sets it, that folder relative to the file's),
    so relative data paths are looked up beside the task file first."""
    data = read_yaml_file(path, "task file")
    if data is None:
        raise ConfigError("empty task file", path=str(path))
    items = data if isinstance(data, list) else [data]
    folder = Path(path).resolve().parent
    return [parse_task(_with_base_dir(item, folder), str(path)) for item in items]


def _with_base_dir(item: Any, folder: Path) -> Any:
    if not isinstance(item, dict):
        return item  # parse_task reports it
    given = item.get("base_dir")
    if given is None:
        return {**item, "base_dir": str(folder)}
    return {**item, "base_dir": str(folder / given)} if isinstance(given, str) else item
