"""The task-kind interface: everything that differs between kinds of task, in one class.

A task's ``type`` names its kind (``classification``, ``regression``, ``ranking``, ``tagging``,
``span``);
the kind is a ``TaskKind`` object (``kinds.kind_of(task)``, or ``task.kind``) and every module
outside ``mtdnn/kinds/`` asks it instead of testing the type. Adding a kind is one module with a
``TaskKind`` subclass and one entry in ``kinds/__init__.py``'s registry.

The hooks, by stage (each has a default here where one fits most kinds):

- schema: ``inputs`` (the ``input`` values it takes), ``metric_choices``/``default_metrics``,
  ``validate`` (rules of the whole task), ``validate_split`` (rules of one split),
  ``check_metrics`` and ``reported_metric_names``, ``num_outputs``, ``takes_pair_head`` (SAN
  fits it), ``has_text_b``/``reads_pairs``.
- data: ``reads_own_files``/``read_file`` (a kind's own file formats), ``tokenize`` (its own
  encoder inputs, e.g. windows of words; cached with ``tokenize_key``, ``tokenized_arrays`` and
  ``from_tokenized_arrays``), ``parse_label`` (one raw label -> value or problem),
  ``after_read`` (rules over the whole split, e.g. ranking groups), ``keeps_groups`` (subsets,
  batches and held-out parts keep candidate groups whole), ``holdout_strata``, ``encode_labels``
  (label values -> arrays, with the group of each row).
- model: ``build_head``, ``loss`` and ``loss_units`` (what the mean loss averages over).
- evaluation: ``eval_outputs`` and ``stack_outputs`` (head output -> what predictions keep:
  probabilities, scores, per-token rows), ``decide`` (outputs -> predictions), ``score``
  (metrics), ``prediction_labels`` (submission file values), ``class_names``, ``has_report``,
  ``split_report`` and ``class_report`` (the per-class report).
- predictions of saved runs: ``api_rows``/``api_answers``/``api_values`` (``Run.predict``),
  ``predict_split``, ``prediction_file_lines``, ``prediction_columns``/``prediction_extras``
  (``Run.predict_file``, ``mtdnn predict``).
- export and serving: ``export_head`` (the head's output in an exported model: per row or per
  token), ``export_settings`` (what an exported config keeps of the task for serving),
  ``compared_outputs`` (what the export's self-check compares), ``present`` (the server's answer),
  ``serve_inputs``/``serve_answers`` (kinds that cut served inputs into rows of their own, e.g.
  windows, and decode the answers from all rows of an input), ``card_labels``/``pipeline_tag``/
  ``card_usage`` (the model card), ``standard_folder`` and ``standard_folder_class`` (``export
  --task``), ``onnx_predictions``/``onnx_metrics`` (the int8 check).
- ``tasks check``: ``label_stats`` (what the split's labels look like), ``check_warnings``,
  ``split_warnings``, ``long_rows``, ``window_stats`` and ``row_unit``, ``check_lines`` (the
  kind's own report lines), ``explain_read_error``; ``tasks init``: ``init_type_note``, ``init_label_problem``, ``init_labels``,
  ``init_metrics``, ``init_texts_needed``, ``init_input``, ``init_text_note``; kinds that read
  their own files: ``init_detect`` (a file of their shape) and ``init_draft`` (the whole draft).
- training methods: ``refuses`` (a method, or export, that cannot take the kind's tasks),
  ``adv_divergence`` and ``output_divergence`` (SMART), ``uncertainty_scale`` (uncertainty
  weighting), ``distill_targets``/``distill_divergence`` (knowledge distillation).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..metrics import compute_metrics
from ..model.heads import LinearHead, SANHead
from ..records import Column, InitOptions, Predictions, RawSplit, Source, SplitCheck, TokenizedSplit
from .classes import class_report
from .specs import ServedTask, SplitSpec, TaskSpec

# the segment id ``data/tokenized.py`` stores for special tokens (0, 1: the first and second text)
SEG_SPECIAL = 2
# the metrics of predicted classes (classification, ranking) and of predicted scores (regression)
CLASS_METRICS: tuple[str, ...] = ("accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted", "mcc")
SCORE_METRICS: tuple[str, ...] = ("pearson", "spearman")
# the task fields of span tasks (extractive question answering) only
SPAN_FIELDS: tuple[str, ...] = ("stride", "max_answer_length", "n_best", "version", "null_threshold")
# the evaluation split of the held-out training rows (--selection-split holdout, data/holdout.py)
HOLDOUT_SPLIT = "holdout"


@dataclass
class InitDraft:
    """The tasks a kind that reads its own files drafts (``TaskKind.init_draft``): the YAML lines
    after the draft's header comment (one task, or a list of tasks), the tasks' names, the
    training file's unit (``sentences``, ``questions``) and how many of each split were read."""

    lines: list[str]
    names: list[str]
    unit: str
    counts: dict[str, int] = field(default_factory=dict)  # split -> units read
    summary: str = ""                                      # what the command prints of the tasks


@dataclass
class EncodedInputs:
    """A kind's own encoder rows for a batch of served inputs (``TaskKind.serve_inputs``):
    ``rows``: ``input_ids``, ``attention_mask`` (and ``token_type_ids``), one unpadded list of ids per
    row, several rows per input where the kind cuts an input into windows; ``state``: what
    ``serve_answers`` needs to turn the rows' outputs into one answer per input."""

    rows: dict[str, list[list[int]]]
    state: Any


def token_rows(values: np.ndarray, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """Per-token values of a batch (rows, tokens, ...) cut to each row's real tokens (the kept
    outputs of kinds with an output per token)."""
    lengths = batch["attention_mask"].sum(dim=1).cpu().numpy()
    return [values[r, :int(n)] for r, n in enumerate(lengths)]


def stack_rows(outs: list[list[np.ndarray]]) -> np.ndarray:
    """The rows of all batches (arrays of different lengths) as one object array, a row each."""
    flat = [row for batch in outs for row in batch]
    stacked = np.empty(len(flat), dtype=object)
    for i, row in enumerate(flat):
        stacked[i] = row
    return stacked


class TaskKind:
    """One kind of task. Subclasses set the class attributes and override the hooks that differ;
    kinds keep no state (one shared instance each)."""

    name: ClassVar[str] = ""
    # the ``input`` values the kind takes (the first is the one a task file may leave out)
    inputs: ClassVar[tuple[str, ...]] = ("single", "pair")
    loss_name: ClassVar[str] = ""
    metric_choices: ClassVar[tuple[str, ...]] = CLASS_METRICS
    default_metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    # ranking: subsets of the training rows and batches keep each candidate group whole
    keeps_groups: ClassVar[bool] = False
    # what happens to a row longer than --max-seq-len (``tasks check`` says it)
    long_rows: ClassVar[str] = "get cut"
    # the integer label of an unlabeled row (float kinds: NaN)
    missing_label: ClassVar[int] = -1
    # what a row of the kind's splits is (``tasks check`` counts them)
    row_unit: ClassVar[str] = "rows"
    #: method -> why this kind refuses it (one line); see ``refuses``
    refused_methods: ClassVar[dict[str, str]] = {}

    # ---- schema --------------------------------------------------------------------
    def validate(self, task: TaskSpec) -> None:
        """Rules of the whole task; raise ValueError with the one-line message."""
        if task.input not in self.inputs:
            raise ValueError(f"a {self.name} task takes input: {' or '.join(self.inputs)}, not {task.input}")
        if task.scheme is not None:
            raise ValueError("scheme is for tagging tasks only")
        for name in SPAN_FIELDS:
            if getattr(task, name) is not None:
                raise ValueError(f"{name} is for span tasks only")

    def validate_split(self, task: TaskSpec, name: str, split: SplitSpec) -> None:
        """Rules of one split (the text columns its input needs, the columns it may name)."""
        if split.format == "conll":
            raise ValueError(f"split '{name}': format conll is for tagging tasks")
        if split.format == "squad" or split.titles is not None or split.columns.answer_start is not None:
            raise ValueError(f"split '{name}': format squad, titles and columns.answer_start are for span tasks")
        if self.has_text_b(task) and split.columns.text_b is None:
            raise ValueError(f"split '{name}': input '{task.input}' needs columns.text_b")
        if not self.keeps_groups and any(c is not None and c.group is not None
                                         for c in (split.columns, split.hub_columns)):
            raise ValueError(f"split '{name}': columns.group is for ranking tasks only")

    def check_metrics(self, metrics: list[str]) -> None:
        """Every metric must be computable from the kind's predictions."""
        for m in metrics:
            if m in SCORE_METRICS and m not in self.metric_choices:
                raise ValueError(f"'{m}' is for regression scores, a {self.name} task predicts classes: "
                                 f"use {', '.join(self.metric_choices)}")
            if m not in self.metric_choices:
                raise ValueError(f"'{m}' is not a metric of {self.name} tasks: use {', '.join(self.metric_choices)}")

    def reported_metric_names(self, num_labels: int, metrics: list[str]) -> list[str]:
        """The names the metrics are reported under (classification: ``f1`` with more than two
        labels is ``f1_macro``)."""
        return list(metrics)

    def num_outputs(self, task: TaskSpec) -> int:
        """The width of the head's output per unit (row, token)."""
        return 1

    def takes_pair_head(self, input_kind: str) -> bool:
        """Whether a SAN head fits a task of this kind with ``input: <input_kind>`` (and so
        ``--pair-head san`` applies to one that names no head)."""
        return False

    def has_text_b(self, task: TaskSpec) -> bool:
        """Whether rows have a second text (pairs, ranking candidates)."""
        return self.reads_pairs(task.input)

    def reads_pairs(self, input_kind: str) -> bool:
        """Whether a task of this kind with ``input: <input_kind>`` reads two texts per row."""
        return input_kind != "single"

    # ---- data ----------------------------------------------------------------------
    # whether the kind reads its split files itself (``read_file``) instead of the table readers
    reads_own_files: ClassVar[bool] = False

    def read_file(self, task: TaskSpec, name: str, split: SplitSpec, path: Path) -> dict[str, Any]:
        """A split's rows from its local file (kinds with ``reads_own_files``): the fields of its
        ``RawSplit`` beyond task, split and source (ids, text_a, text_b, labels, lines, ...)."""
        raise NotImplementedError

    def tokenize(self, task: TaskSpec, raw: RawSplit, tokenizer: Any, max_len: int) -> dict[str, Any] | None:
        """The kind's own tokenisation of a split: the fields of its ``TokenizedSplit`` beyond task
        and split (cached where ``tokenize_key`` says how); or None: texts (and pairs) are
        tokenised and cached the one way (``data/tokenized.py``)."""
        return None

    def tokenize_key(self, task: TaskSpec, raw: RawSplit, max_len: int) -> str | None:
        """What, beside the tokenizer and ``max_len``, the kind's own tokenisation of ``raw``
        depends on (its rows and settings, as a digest), for the cache key; None: not cached.
        A cached kind turns its ``tokenize`` fields into plain arrays (``tokenized_arrays``) and
        back (``from_tokenized_arrays``)."""
        return None

    def tokenized_arrays(self, fields: dict[str, Any]) -> dict[str, np.ndarray]:
        """``tokenize``'s fields as plain integer arrays, for the cache."""
        raise NotImplementedError

    def from_tokenized_arrays(self, task: TaskSpec, raw: RawSplit, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        """``tokenize``'s fields again from ``tokenized_arrays`` and the split's rows."""
        raise NotImplementedError

    def parse_label(self, task: TaskSpec, split: SplitSpec, raw: Any, from_hub: bool) -> tuple[Any, str | None]:
        """One raw label -> (value, problem); problem is None, 'missing', or a message."""
        raise NotImplementedError

    def after_read(self, task: TaskSpec, split: SplitSpec, raw: RawSplit) -> RawSplit:
        """Rules over a whole labeled split once read (ranking: every group has a positive)."""
        return raw

    def encode_labels(self, task: TaskSpec, raw: RawSplit) -> tuple[np.ndarray, np.ndarray]:
        """(labels, groups) arrays of a split: the label of each row (``missing_label`` where the
        split is unlabeled) and its group (each row its own but for ranking)."""
        n = len(raw)
        if raw.labels and raw.labels[0] is None:
            return np.full(n, self.missing_label, dtype=np.int64), np.arange(n, dtype=np.int64)
        return self.label_array(task, raw.labels), np.arange(n, dtype=np.int64)

    def holdout_strata(self, task: TaskSpec, raw: RawSplit) -> np.ndarray:
        """The stratum of each row of a labeled split (``data/holdout.py``): its label by default;
        a kind that ``keeps_groups`` gives each row's group."""
        names = sorted({str(v) for v in raw.labels})
        return np.array([names.index(str(v)) for v in raw.labels], dtype=np.int64)

    def label_array(self, task: TaskSpec, labels: list[Any]) -> np.ndarray:
        """The encoded labels of a labeled split."""
        raise NotImplementedError

    # ---- model ---------------------------------------------------------------------
    def build_head(self, task: TaskSpec, hidden: int) -> nn.Module:
        """The task's output module (``model/heads.py``): SAN where the task names it, else linear."""
        if task.head.kind == "san":
            return SANHead(hidden, self.num_outputs(task), task.head.steps, task.head.step_dropout, task.dropout)
        return LinearHead(hidden, self.num_outputs(task), task.dropout)

    def loss(self, task: TaskSpec, output: torch.Tensor, batch: dict[str, torch.Tensor],
             reduction: str = "mean") -> torch.Tensor:
        """The loss of a batch, averaged over its units or summed (``reduction="sum"``)."""
        raise NotImplementedError

    def loss_units(self, labels: torch.Tensor, groups: torch.Tensor) -> int:
        """How many terms the mean loss averages over (rows by default)."""
        return int(labels.numel())

    # ---- evaluation ----------------------------------------------------------------
    def eval_outputs(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> Any:
        """The head's float output on a batch -> what predictions keep of its rows (scores by
        default), a tensor that stays on the device or, for rows of different sizes, a list."""
        return out.squeeze(-1)

    def stack_outputs(self, outs: list[Any]) -> np.ndarray:
        """The kept outputs of all batches as one array, a row per split row."""
        return torch.cat(outs).cpu().numpy()

    def decide(self, task: TaskSpec, outputs: np.ndarray, split: TokenizedSplit) -> np.ndarray:
        """Kept outputs of a whole split -> its predictions (scores by default)."""
        return outputs

    def score(self, task: TaskSpec, split: TokenizedSplit, preds: np.ndarray) -> dict[str, float]:
        """The split's metrics in percent, and ``score`` (GLUE's figure: their mean)."""
        return compute_metrics(task.metric_names, preds, split.labels)

    def score_splits(self, task: TaskSpec, evaluated: dict[str, tuple[TokenizedSplit, Predictions]]
                     ) -> dict[str, dict[str, float]]:
        """The metrics of each of a task's evaluated labeled splits at one evaluation
        (``evaluation.evaluate_tasks``), given all their predictions at once: each split's own
        ``score`` by default. A kind that chooses a decision setting on held-out predictions (span
        v2.0: the null threshold) chooses it here, re-decides every split's ``preds`` with it and
        records it in the metrics (``chosen_fields`` reads it back)."""
        return {name: self.score(task, split, preds.preds) for name, (split, preds) in evaluated.items()}

    def chosen_fields(self, task: TaskSpec, metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
        """The task fields that ``score_splits`` chose at the evaluation whose metrics (split ->
        metric -> value) are given, which a finished run records in its tasks.yaml: none by default."""
        return {}

    def prediction_labels(self, task: TaskSpec, preds: np.ndarray) -> list[str]:
        """Predictions as submission files hold them."""
        return [f"{v:.3f}" for v in preds]

    def api_values(self, task: TaskSpec, labels: list[str]) -> list[Any]:
        """``Run.predict``'s values from ``prediction_labels``."""
        return labels

    def api_rows(self, task: TaskSpec, text_a: list[str], text_b: list[str] | None) -> dict[str, Any]:
        """``Run.predict``'s raw texts as the fields of a ``RawSplit`` (beyond task, split, source)."""
        n = len(text_a)
        return {"ids": [str(i) for i in range(n)], "text_a": list(text_a),
                "text_b": list(text_b) if text_b is not None else [None] * n, "labels": [None] * n,
                "lines": list(range(1, n + 1))}

    def api_answers(self, task: TaskSpec, texts: list[str], raw: RawSplit, split: TokenizedSplit | None,
                    preds: Predictions | None) -> list[Any]:
        """``Run.predict``'s answer for each of ``texts`` from the predictions on ``api_rows``
        (``split`` and ``preds`` are None where those rows are empty)."""
        return self.api_values(task, self.prediction_labels(task, preds.preds)) if preds is not None else []

    def predict_split(self, task: TaskSpec, path: Path, text_a: str | int | None) -> dict[str, Any] | None:
        """``format`` and ``columns`` of the split ``predict_file`` reads ``path`` as, or None: a
        table whose columns are guessed."""
        return None

    def prediction_file_lines(self, task: TaskSpec, raw: RawSplit, preds: Predictions, path: Path) -> list[str] | None:
        """The lines of ``predict_file``'s output for the input file ``path``, or None: the TSV of
        ``index``, ``prediction`` and ``prediction_columns``."""
        return None

    def prediction_columns(self, task: TaskSpec) -> list[str]:
        """Columns ``predict_file`` writes after ``index`` and ``prediction``."""
        return []

    def prediction_extras(self, task: TaskSpec, outputs: np.ndarray) -> list[str]:
        """The values of ``prediction_columns`` for one row's kept outputs."""
        return []

    def class_names(self, task: TaskSpec) -> list[str] | None:
        """The label of each predicted class index; None: the kind predicts no classes and has no
        per-class report."""
        return None

    def has_report(self, task: TaskSpec) -> bool:
        """Whether a finished run writes the per-class report of the task's dev/test splits."""
        return self.class_names(task) is not None

    def split_report(self, task: TaskSpec, split: TokenizedSplit, preds: np.ndarray) -> dict[str, Any] | None:
        """The per-class report of a tokenised split from its predictions (``has_report``)."""
        return self.class_report(task, split.labels, preds)

    def class_report(self, task: TaskSpec, gold: np.ndarray, preds: np.ndarray) -> dict[str, Any] | None:
        """The per-class report of a split (``reports.py``), or None."""
        names = self.class_names(task)
        if names is None:
            return None
        return class_report(task.name, names, gold, preds)

    # ---- export and serving ----------------------------------------------------------
    # the Hugging Face pipeline a standard folder of the kind's tasks is used with (the model card)
    pipeline_tag: ClassVar[str] = "text-classification"

    def export_head(self, task: TaskSpec) -> dict[str, Any]:
        """The head's output in an exported model (``modeling_mtdnn``, the ONNX graph, the
        server): ``outputs`` values per unit and ``per`` unit: ``row`` (a (batch, outputs) output
        read from the [CLS] vector or by SAN) or ``token`` (a (batch, tokens, outputs) output, the
        head applied to every token; the server cuts it to each row's tokens)."""
        return {"outputs": self.num_outputs(task), "per": "row"}

    def export_settings(self, task: TaskSpec, max_len: int) -> dict[str, Any]:
        """The kind's own settings of a task that an exported config keeps (``settings`` of its
        entry in ``tasks``; what serving the task needs beyond its labels), for inputs of at most
        ``max_len`` tokens."""
        return {}

    def compared_outputs(self, task: TaskSpec, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The values of a head output on mtdnn's ``batch`` that an export must reproduce (its
        self-check, ``export/verify.py``): all of them by default."""
        return output

    def present(self, labels: list[str], row: Any) -> Any:
        """The server's answer for one input from the head's raw output row (a score by default);
        for a kind with ``serve_inputs``, from its ``serve_answers`` item."""
        return {"score": float(np.asarray(row).reshape(-1)[0])}

    def serve_inputs(self, info: ServedTask, tokenizer: Any, max_len: int, text_a: list[str],
                     text_b: list[str] | None) -> EncodedInputs | None:
        """The kind's own encoder rows for served inputs (``info``: the exported task, its
        ``settings`` from ``export_settings``), or None: one row per input, its texts tokenised and
        truncated to ``max_len`` (sentence kinds), answered by ``present`` from its output row.
        Rows equal to another task's (of the same call) share its encoder pass."""
        return None

    def serve_answers(self, info: ServedTask, encoded: EncodedInputs, outputs: list[np.ndarray]) -> list[Any]:
        """One answer per input from the head's outputs on each of ``encoded.rows`` (a per-token
        output cut to the row's tokens); for kinds with ``serve_inputs``."""
        raise NotImplementedError

    def card_labels(self, task: TaskSpec) -> str:
        """What the model card's task table says the task predicts."""
        return "score"

    def card_usage(self, task: TaskSpec, name: str, max_len: int) -> list[str] | None:
        """The model card's lines on using the task's standard folder (``export --task``) named
        ``name``, of inputs up to ``max_len`` tokens, or None: a text-classification pipeline."""
        return None

    def standard_folder(self, task: TaskSpec) -> tuple[dict[int, str], str | None]:
        """(id2label, problem_type) of the task's standard folder (``mtdnn export --task``); a kind
        without one raises the one-line ConfigError saying why."""
        raise self.refuse("a standard Hugging Face folder (export --task)")

    def standard_folder_class(self, task: TaskSpec) -> tuple[str, str]:
        """(transformers auto class, its output layer) of the task's standard folder. The
        sequence-classification ``classifier`` reads the pooler, which the export sets to pass the
        [CLS] vector through; any other class's output layer reads every token's vector and takes
        the head's linear weights as they are."""
        return "AutoModelForSequenceClassification", "classifier"

    def onnx_predictions(self, task: TaskSpec, out: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Predictions from the ONNX model's raw outputs of a batch (scores by default)."""
        return out.reshape(-1)

    def onnx_metrics(self, task: TaskSpec, out: np.ndarray, batch: dict[str, torch.Tensor],
                     split: TokenizedSplit) -> dict[str, float]:
        """The metrics of dev rows (``split``, collated as ``batch``) from the ONNX model's raw
        outputs ``out`` on them (the int8 check): ``onnx_predictions`` against the labels by default."""
        preds = self.onnx_predictions(task, out, batch["groups"].numpy())
        return compute_metrics(task.metrics, preds, batch["labels"].numpy())

    # ---- tasks check ---------------------------------------------------------------
    def label_stats(self, task: TaskSpec, raw: RawSplit, out: SplitCheck) -> None:
        """Fill ``out`` with what the labels of a labeled split look like."""
        counts = Counter(raw.labels)
        out.labels = {label: counts.get(label, 0) for label in task.labels}

    def check_warnings(self, task: TaskSpec, train: SplitCheck) -> list[str]:
        """Warnings about a readable training split."""
        return []

    def split_warnings(self, task: TaskSpec, split: SplitCheck, train: SplitCheck | None) -> list[str]:
        """Warnings about a readable labeled split (``train``: the labeled training split's check,
        None without one)."""
        return []

    def window_stats(self, task: TaskSpec, raw: RawSplit, tokenizer: Any, max_len: int) -> dict[str, float]:
        """Kinds that split a long row into overlapping windows instead of cutting it: ``rows``,
        ``windows``, ``split`` (rows in several windows) and ``max`` (the most windows of one row)
        at ``max_len`` tokens; empty: rows longer than ``max_len`` get cut."""
        return {}

    def check_lines(self, task: TaskSpec, split: SplitCheck) -> list[str]:
        """The lines the kind adds to a split's report (from what ``label_stats`` put in
        ``split.extra``), indented by four spaces."""
        return []

    def explain_read_error(self, task: TaskSpec, name: str, path: Path | None, error: str) -> str:
        """What ``tasks check`` says of a split that cannot be read (``path``: its file, where
        found): the reader's error, to which a kind may add what else is wrong in the file."""
        return error

    # ---- tasks init ----------------------------------------------------------------
    def init_type_note(self) -> str:
        """The draft's comment on ``type`` when ``--type`` named the kind."""
        return "given with --type"

    def init_label_problem(self, label: Column) -> str | None:
        """Why the guessed label column cannot hold this kind's labels (None: it can)."""
        return None

    def init_labels(self, train: Source, label: Column, opts: InitOptions) -> tuple[list[str], dict[str, str], str]:
        """(labels, label_map, why) of the draft from the label column's values."""
        return [], {}, ""

    def init_metrics(self, labels: list[str]) -> tuple[list[str], str]:
        """(metrics, why) of the draft."""
        return list(self.default_metrics), ""

    def init_texts_needed(self) -> int:
        """How many text columns a task of this kind needs."""
        return 1

    def init_input(self, n_texts: int) -> str:
        """The draft's ``input`` with ``n_texts`` text columns found."""
        return "pair" if n_texts >= 2 else "single"

    def init_text_note(self) -> str:
        """What the draft's comment on ``input`` adds about the text columns."""
        return ""

    def init_detect(self, path: Path) -> bool:
        """Whether the file ``path`` has the shape of this kind's own files (a kind that
        ``reads_own_files``: ``tasks init`` drafts it with ``init_draft`` without ``--type``)."""
        return False

    def init_draft(self, opts: InitOptions, files: dict[str, Path], name: str, folder: Path) -> InitDraft:
        """The draft of a kind that reads its own files: ``files`` role -> file (train first),
        ``name`` the task's name, ``folder`` where the draft is written (its paths are relative to
        it)."""
        raise self.refuse("tasks init")

    # ---- training methods ----------------------------------------------------------
    def adv_divergence(self, task: TaskSpec) -> str:
        """SMART's divergence for a task that names no ``adv_loss``."""
        return "sym_kl"

    def uncertainty_scale(self) -> float:
        """The factor of uncertainty weighting: 1/2 for Gaussian likelihoods (scores), 1 else."""
        return 1.0

    def output_divergence(self, task: TaskSpec, divergence: str, a: torch.Tensor, b: torch.Tensor,
                          batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """SMART: D(a, b) of two head outputs on ``batch`` (``divergence``: sym_kl or mse), summed
        over the batch's units."""
        raise self.refuse("SMART (--adv) and its proximal term")

    def distill_targets(self, task: TaskSpec, outputs: list[tuple[np.ndarray, float]], groups: np.ndarray,
                        temperature: float) -> torch.Tensor:
        """Distillation: the soft target of each row from the teachers' (outputs, ranking gamma)."""
        raise self.refuse("knowledge distillation (--teachers)")

    def distill_divergence(self, task: TaskSpec, output: torch.Tensor, target: torch.Tensor,
                           batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
        """Distillation: the divergence of the student's output from the soft targets, summed."""
        raise self.refuse("knowledge distillation (--teachers)")

    def refuses(self, method: str) -> str | None:
        """Why ``method`` (the training methods ``smart``, ``distillation``; ``export``, serving
        included) cannot take a task of this kind (one line), or None: it can."""
        return self.refused_methods.get(method)

    def refuse(self, what: str) -> Exception:
        """The one-line error of a method this kind does not support."""
        return ConfigError(f"{what} is not available for {self.name} tasks")


def relative_path(path: Path, folder: Path) -> str:
    """``path`` as a task file in ``folder`` names it: relative where it can be, else absolute."""
    try:
        return os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())
