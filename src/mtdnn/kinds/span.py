"""``type: span``: extractive question answering (SQuAD-style): the answer is a span of the context.

A span task takes ``input: question_context`` and reads SQuAD JSON (``format: squad``, no columns
to name) or JSON lines / CSV (``columns: {text_a: QUESTION, text_b: CONTEXT, label: ANSWER_TEXT,
answer_start: START, id: ID}``; ``answer_start`` defaults to the column ``answer_start``). A split
may keep some articles only (``titles: first:N``, ``after:N`` or a list of titles). It has no
``labels``; its fields are ``stride`` (context tokens two windows share; unset: 128, at most a
quarter of ``--max-seq-len``), ``max_answer_length`` (tokens, default 30), ``n_best`` (candidates
per question, default 20) and ``version`` (``v1.1``, the default: every question has an answer;
``v2.0``: unanswerable questions too).

Each question and its context are cut into windows of ``--max-seq-len`` tokens (``span/windows.py``;
the window is the unit of a batch); the log counts windows per question and the answers that no
window can target (unmappable, unheld: their windows target the null position, never dropped). The
head gives each token a start and an end logit, masked outside the context but for the null
position; the loss is the mean of the start and end cross-entropies per window. Evaluation pools
the n-best spans of a question's windows (``span/decoding.py``) and scores the best answers with
the official SQuAD exact match and F1 (``rules`` by ``version``; F1 selects epochs). With v2.0 a
question is answered "" when its null score exceeds its best span's score by more than the task's
``null_threshold``. Without one, each evaluation chooses it (``score_splits``): on the held-out
training questions (``--selection-split holdout``), else on a fixed quarter of the articles of the
selection split (``span.decoding.threshold_part``), whose other questions alone are reported; a
finished run records the kept epoch's threshold in its tasks.yaml (``chosen_fields``)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..records import InitOptions, Predictions, RawSplit, SplitCheck, TokenizedSplit
from ..span.decoding import SpanPrediction, choose_null_threshold, decode_predictions, threshold_part
from ..span.draft import (ANSWER_FIELDS, CONTEXT_FIELDS, ID_FIELDS, QUESTION_FIELDS, START_FIELDS, TABLE_FORMATS,
                          flow, looks_like_span_table, looks_like_squad, named, table_fields)
from ..span.head import SpanHead
from ..span.metrics import squad_scores
from ..span.readers import (SpanColumns, SpanExample, article_titles, first_article_titles, gold_answers,
                            misplaced_answers, read_span_csv, read_span_jsonl, read_squad_json, split_by_articles)
from ..span.windows import build_windows
from .base import HOLDOUT_SPLIT, SEG_SPECIAL, EncodedInputs, InitDraft, TaskKind, relative_path, stack_rows, token_rows
from .specs import ServedTask, SplitSpec, TaskSpec

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn


log = logging.getLogger(__name__)

DEFAULT_STRIDE = 128
DEFAULT_MAX_ANSWER_LENGTH = 30
DEFAULT_N_BEST = 20
MAX_QUESTION_TOKENS = 64
SPAN_METRICS = ("exact", "f1")
PAD_LOGIT = -1e9  # the logits of a window's padding (never a candidate)
NULL_INDEX = 0  # the null answer's position in every window ([CLS] or <s>)


class Span(TaskKind):
    name: ClassVar[str] = "span"
    inputs: ClassVar[tuple[str, ...]] = ("question_context",)
    loss_name: ClassVar[str] = "span_cross_entropy"
    metric_choices: ClassVar[tuple[str, ...]] = SPAN_METRICS
    default_metrics: ClassVar[tuple[str, ...]] = SPAN_METRICS
    reads_own_files: ClassVar[bool] = True
    long_rows: ClassVar[str] = "are split into overlapping windows (answers pooled per question)"
    row_unit: ClassVar[str] = "questions"
    refused_methods: ClassVar[dict[str, str]] = {
        "smart": "SMART (--adv) compares one output per row; span tasks have a start and an end per token",
        "distillation": "distillation (--teachers) averages one output per row; span tasks have one per token"}
    pipeline_tag: ClassVar[str] = "question-answering"

    # ---- schema --------------------------------------------------------------------
    def validate(self, task: TaskSpec) -> None:
        if task.input != "question_context":
            raise ValueError("a span task needs input: question_context")
        if task.labels:
            raise ValueError("a span task has no labels (its answers are spans of the context)")
        if task.scheme is not None:
            raise ValueError("scheme is for tagging tasks only")
        if task.head.kind != "linear":
            raise ValueError("a span task has its own head (start and end logits): leave out head")
        if task.null_threshold is not None and task.version != "v2.0":
            raise ValueError("null_threshold is for tasks with version: v2.0 (unanswerable questions)")

    def validate_split(self, task: TaskSpec, name: str, split: SplitSpec) -> None:
        if split.format not in ("squad", "jsonl", "csv"):
            raise ValueError(f"split '{name}': a span task reads format squad, jsonl or csv, not {split.format}")
        if split.path is None or split.hub is not None:
            raise ValueError(f"split '{name}': a span task reads a local file (path), not the hub")
        if split.format != "squad" and split.columns.text_b is None:
            raise ValueError(f"split '{name}': a span task needs columns.text_b (the context)")
        if isinstance(split.titles, str):
            parse_titles(split.titles)

    def num_outputs(self, task: TaskSpec) -> int:
        return 2

    # ---- data ----------------------------------------------------------------------
    def read_file(self, task: TaskSpec, name: str, split: SplitSpec, path: Path) -> dict[str, Any]:
        """A row per question: ``text_a`` the question, ``text_b`` the context, ``labels`` the
        gold answers ((text, start) pairs) or None (unlabeled)."""
        examples = _select_titles(_read_examples(split, path), split.titles, path)
        if split.labeled and (task.version or "v1.1") == "v1.1":
            bad = next((ex for ex in examples if ex.is_impossible), None)
            if bad is not None:
                raise DataError("an unanswerable question in a task with version v1.1 (set version: v2.0)",
                                path=str(path), line=bad.line, field="answers")  # type: ignore[arg-type]
        if not examples:
            raise DataError(f"no questions (task '{task.name}', split '{name}')", path=str(path))
        return _rows(examples, split.labeled)

    def tokenize(self, task: TaskSpec, raw: RawSplit, tokenizer: Any, max_len: int) -> dict[str, Any]:

        examples = raw.examples or []
        windows = build_windows(examples, tokenizer, max_length=max_len, stride=window_stride(task, max_len),
                                max_question_tokens=question_tokens(max_len))
        per_example = np.bincount(windows.example_index, minlength=len(examples))
        log.info("%s/%s: %d questions in %d windows of %d tokens (%d questions in several windows, at most %d "
                 "each); answers that no window targets (all its windows target null): %d unmappable, %d longer "
                 "than a window holds; %d answers inside tokens, %d questions cut", task.name, raw.split,
                 len(examples), len(windows), max_len, int((per_example > 1).sum()), int(per_example.max()),
                 len(windows.unmappable), len(windows.unheld), len(windows.inexact), len(windows.truncated_questions))
        return _tokenized(raw, tokenizer, windows)

    def label_array(self, task: TaskSpec, labels: list[Any]) -> np.ndarray:
        return np.zeros(len(labels), dtype=np.int64)

    def holdout_strata(self, task: TaskSpec, raw: RawSplit) -> np.ndarray:
        return np.zeros(len(raw), dtype=np.int64)

    # ---- model ---------------------------------------------------------------------
    def build_head(self, task: TaskSpec, hidden: int) -> nn.Module:

        return SpanHead(hidden, task.dropout)

    def loss(self, task: TaskSpec, output: torch.Tensor, batch: dict[str, torch.Tensor],
             reduction: str = "mean") -> torch.Tensor:
        """The mean of the start and end cross-entropies of each window (null: position 0)."""

        labels, logits = batch["labels"], output.float()
        start = F.cross_entropy(logits[..., 0], labels[:, 0], reduction=reduction)
        end = F.cross_entropy(logits[..., 1], labels[:, 1], reduction=reduction)
        return (start + end) / 2

    def loss_units(self, labels: torch.Tensor, groups: torch.Tensor) -> int:
        """Windows: the rows of a batch's (B, 2) start and end targets."""
        return int(labels.shape[0])

    # ---- evaluation ----------------------------------------------------------------
    def eval_outputs(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> Any:
        """Each window's (tokens, 2) start and end logits, on the host."""
        return token_rows(out.cpu().numpy(), batch)

    def stack_outputs(self, outs: list[Any]) -> np.ndarray:
        return stack_rows(outs)

    def decide(self, task: TaskSpec, outputs: np.ndarray, split: TokenizedSplit) -> np.ndarray:
        """The answer text of every question (in the order of ``split.uids``)."""
        decoded = decode(task, outputs, split)
        return np.asarray([answer_text(task, decoded[ex.id]) for ex in split.examples or []], dtype=object)

    def score(self, task: TaskSpec, split: TokenizedSplit, preds: np.ndarray) -> dict[str, float]:
        return question_metrics(task, split.examples or [], preds)

    def score_splits(self, task: TaskSpec, evaluated: dict[str, tuple[TokenizedSplit, Predictions]]
                     ) -> dict[str, dict[str, float]]:
        """With v2.0 and no ``null_threshold``, the threshold that maximises F1
        (``choose_null_threshold``) is chosen on the held-out training questions (split
        ``holdout``) where they are evaluated, else on ``threshold_part`` of the selection split
        (its first dev split), whose other questions alone are then scored. Every split is decided
        with it; its metrics add ``null_threshold``, ``null_threshold_questions`` (the questions it
        was chosen on) and ``questions`` (those scored)."""
        if task.version != "v2.0" or task.null_threshold is not None or not evaluated:
            return super().score_splits(task, evaluated)
        decoded = {name: decode(task, preds.outputs, split) for name, (split, preds) in evaluated.items()}
        held = HOLDOUT_SPLIT in evaluated
        source = HOLDOUT_SPLIT if held else \
            task.selection_split if task.selection_split in evaluated else next(iter(evaluated))
        examples = evaluated[source][0].examples or []
        part = np.ones(len(examples), dtype=bool) if held else threshold_part(examples)
        chosen = [ex for ex, m in zip(examples, part) if m]
        threshold = choose_null_threshold(decoded[source], gold_answers(chosen))[0] if chosen else 0.0
        tuned = task.model_copy(update={"null_threshold": threshold})
        out = {}
        for name, (split, preds) in evaluated.items():
            exs = split.examples or []
            preds.preds = np.asarray([answer_text(tuned, decoded[name][ex.id]) for ex in exs], dtype=object)
            scored = ~part if name == source and not held else np.ones(len(exs), dtype=bool)
            got = question_metrics(task, [ex for ex, k in zip(exs, scored) if k], preds.preds[scored])
            out[name] = {**got, "null_threshold": threshold, "null_threshold_questions": float(len(chosen)),
                         "questions": float(scored.sum())}
        return out

    def chosen_fields(self, task: TaskSpec, metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
        """``null_threshold``, where ``score_splits`` chose it."""
        if task.version != "v2.0" or task.null_threshold is not None:
            return {}
        found = next((m["null_threshold"] for m in metrics.values() if "null_threshold" in m), None)
        return {} if found is None else {"null_threshold": float(found)}

    def prediction_labels(self, task: TaskSpec, preds: np.ndarray) -> list[str]:
        return [str(p) for p in preds]

    def api_rows(self, task: TaskSpec, text_a: list[str], text_b: list[str] | None) -> dict[str, Any]:
        """Questions (``text_a``) on contexts (``text_b``); pairs with an empty question or context
        are left out (their answer is None)."""

        kept = [i for i, (q, c) in enumerate(zip(text_a, text_b or [])) if q.strip() and c.strip()]
        examples = [SpanExample(str(i), "", text_a[i], (text_b or [])[i], (), True) for i in kept]
        return {**_rows(examples, labeled=False), "lines": [i + 1 for i in kept]}

    def api_answers(self, task: TaskSpec, texts: list[str], raw: RawSplit, split: TokenizedSplit | None,
                    preds: Predictions | None) -> list[Any]:
        """Each question's answer: ``text``, character ``start`` and ``end`` in its context, and
        ``score`` (start + end logit); with v2.0 an unanswered question gets text "" and no start."""
        out: list[Any] = [None for _ in texts]
        if split is None or preds is None:
            return out
        for uid, p in decode(task, preds.outputs, split).items():
            out[int(uid)] = answer_dict(task.version or "v1.1", p, task.null_threshold)
        return out

    def predict_split(self, task: TaskSpec, path: Path, text_a: str | int | None) -> dict[str, Any] | None:
        """A SQuAD JSON file (``.json``), else JSON lines or CSV with the task's own columns."""
        if path.suffix == ".json":
            return {"format": "squad"}
        fmt = "csv" if path.suffix == ".csv" else "jsonl"
        own = next((s.columns for s in task.splits.values() if s.format == fmt), None)
        cols = own.model_dump(exclude_none=True) if own is not None else \
            {"text_a": "question", "text_b": "context", "label": "answer_text"}
        return {"format": fmt, "columns": {**cols, **({"text_a": text_a} if text_a is not None else {})}}

    def prediction_file_lines(self, task: TaskSpec, raw: RawSplit, preds: Predictions, path: Path) -> list[str]:
        """The official predictions file: one JSON object ``{question id: answer text}``, as
        ``span.metrics.write_predictions_json`` writes it."""
        answers = {str(uid): str(p) for uid, p in zip(raw.ids, preds.preds)}
        return [json.dumps(answers, ensure_ascii=False)]

    # ---- export and serving ----------------------------------------------------------
    def export_head(self, task: TaskSpec) -> dict[str, Any]:
        """Start and end logits of every token, masked outside the context but at the null position."""
        return {"outputs": 2, "per": "token", "context_only": True}

    def export_settings(self, task: TaskSpec, max_len: int) -> dict[str, Any]:
        """The windows and decoding of the task's questions: ``stride``, ``max_question_tokens``,
        ``max_answer_length``, ``n_best`` and ``version``, defaults filled in; with v2.0 also
        ``null_threshold`` (a saved run's recorded one; unset: 0)."""
        return {"stride": window_stride(task, max_len), "max_question_tokens": question_tokens(max_len),
                "max_answer_length": task.max_answer_length or DEFAULT_MAX_ANSWER_LENGTH,
                "n_best": task.n_best or DEFAULT_N_BEST, "version": task.version or "v1.1",
                **({"null_threshold": task.null_threshold or 0.0} if task.version == "v2.0" else {})}

    def compared_outputs(self, task: TaskSpec, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The (tokens, 2) start and end logits of the tokens an answer can start or end at (the
        context tokens with characters) and of the null position: the only ones decoding reads."""
        keep = batch["seg"] == 1
        keep[:, NULL_INDEX] = True
        return output.reshape(*keep.shape, 2)[keep]

    def present(self, labels: list[str], row: Any) -> dict[str, Any] | None:
        """The decoded answer (``serve_answers``) as it is; None for an empty question or context."""
        if row is None:
            return None
        score = row["score"]
        return {**row, "score": float(score) if np.isfinite(score) else None}  # no span at all: JSON has no inf

    def serve_inputs(self, info: ServedTask, tokenizer: Any, max_len: int, text_a: list[str],
                     text_b: list[str] | None) -> EncodedInputs:
        """The windows of every question (``text_a``) on its context (``text_b``), cut as for
        training and ``Run.predict``; pairs with an empty question or context have none."""
        contexts = list(text_b or [""] * len(text_a))
        kept = [i for i, (q, c) in enumerate(zip(text_a, contexts)) if q.strip() and c.strip()]
        examples = [SpanExample(str(i), "", text_a[i], contexts[i], (), True) for i in kept]
        if not examples:
            return EncodedInputs({"input_ids": [], "attention_mask": []}, (len(text_a), examples, None))
        settings = info.settings
        windows = build_windows(examples, tokenizer, max_length=max_len, stride=int(settings["stride"]),
                                max_question_tokens=int(settings["max_question_tokens"]))
        lengths = windows.attention_mask.sum(axis=1)
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if windows.token_type_ids is not None else [])
        rows = {n: [getattr(windows, n)[w, :int(k)].tolist() for w, k in enumerate(lengths)] for n in names}
        return EncodedInputs(rows, (len(text_a), examples, windows))

    def serve_answers(self, info: ServedTask, encoded: EncodedInputs, outputs: list[np.ndarray]) -> list[Any]:
        """Each question's answer from the (tokens, 2) logits of its windows, decoded together as
        ``Run.predict`` decodes them (``api_answers``); None for an empty question or context."""
        n, examples, windows = encoded.state
        out: list[Any] = [None] * n
        if not examples:
            return out
        settings = info.settings
        decoded = decode_windows(outputs, windows, examples, int(settings["n_best"]),
                                 int(settings["max_answer_length"]))
        for uid, p in decoded.items():
            out[int(uid)] = answer_dict(str(settings["version"]), p, settings.get("null_threshold"))
        return out

    def card_labels(self, task: TaskSpec) -> str:
        return "answer span (start and end logits per token)"

    def card_usage(self, task: TaskSpec, name: str, max_len: int) -> list[str] | None:
        s = self.export_settings(task, max_len)
        return ["```python", "from transformers import pipeline  # transformers 4.x (5.0 removed this pipeline)", "",
                f'qa = pipeline("question-answering", model="{name}")',
                'qa(question="Where is the treasure?", context="The treasure is under the old oak tree.",',
                f"   max_seq_len={max_len}, doc_stride={s['stride']}, max_answer_len={s['max_answer_length']},",
                f"   handle_impossible_answer={s['version'] == 'v2.0'}, align_to_words=False)", "```", "",
                "With these settings the pipeline cuts a context into the windows mtdnn cuts it into and "
                "picks, in each window, the best span mtdnn's decoding can pick; a question whose context "
                "takes several windows may get another answer (the pipeline compares spans of different "
                "windows by their probabilities within their own window, mtdnn by the sum of their start "
                "and end logits) and its `score` is a probability, not mtdnn's logit sum. "
                "`AutoModelForQuestionAnswering` gives the start and end logits themselves."]

    def standard_folder(self, task: TaskSpec) -> tuple[dict[int, str], str | None]:
        return {0: "start", 1: "end"}, None

    def standard_folder_class(self, task: TaskSpec) -> tuple[str, str]:
        return "AutoModelForQuestionAnswering", "qa_outputs"

    def onnx_metrics(self, task: TaskSpec, out: np.ndarray, batch: dict[str, torch.Tensor],
                    split: TokenizedSplit) -> dict[str, float]:
        """Exact match and F1 of the questions of ``split`` decoded from the ONNX logits of its windows."""
        outputs = self.stack_outputs([self.eval_outputs(torch.from_numpy(np.asarray(out)), batch)])
        return self.score(task, split, self.decide(task, outputs, split))

    # ---- tasks check ---------------------------------------------------------------
    def label_stats(self, task: TaskSpec, raw: RawSplit, out: SplitCheck) -> None:
        """Questions, unanswerable ones and gold answers."""
        examples = raw.examples or []
        out.extra["unanswerable"] = sum(1 for ex in examples if ex.is_impossible)
        out.extra["answers"] = sum(len(ex.answers) for ex in examples)

    def window_stats(self, task: TaskSpec, raw: RawSplit, tokenizer: Any, max_len: int) -> dict[str, float]:
        """Windows per question, and the answers no window can target (their windows target null)."""
        examples = raw.examples or []
        windows = build_windows(examples, tokenizer, max_length=max_len, stride=window_stride(task, max_len),
                                max_question_tokens=question_tokens(max_len))
        per = np.bincount(windows.example_index, minlength=len(examples))
        return {"rows": len(examples), "windows": len(windows), "split": int((per > 1).sum()), "max": int(per.max()),
                "unmappable": len(windows.unmappable), "unheld": len(windows.unheld),
                "inexact": len(windows.inexact)}

    def check_lines(self, task: TaskSpec, split: SplitCheck) -> list[str]:
        lines = []
        if "unanswerable" in split.extra:
            n, rows = split.extra["unanswerable"], max(split.rows, 1)
            lines.append(f"    answers: {split.extra['answers']} gold answers; unanswerable questions: {n} "
                         f"({100.0 * n / rows:.1f}%)")
        w = split.windows
        if w and split.labeled:
            lines.append(f"    answers no window can target: {int(w['unmappable'] + w['unheld'])} (not on token "
                         f"boundaries: {int(w['unmappable'])}, longer than a window holds: {int(w['unheld'])}); "
                         f"answers that start or end inside a token: {int(w['inexact'])}")
        return lines

    def split_warnings(self, task: TaskSpec, split: SplitCheck, train: SplitCheck | None) -> list[str]:
        where, w, out = f"{task.name}/{split.split}", split.windows, []
        lost = int(w.get("unmappable", 0) + w.get("unheld", 0))
        if lost:
            out.append(f"{where}: {lost} answers no window can target (their windows are trained to answer null)")
        if split is train and task.version == "v2.0" and not split.extra.get("unanswerable"):
            out.append(f"{where}: version v2.0 but no unanswerable question in training")
        return out

    def explain_read_error(self, task: TaskSpec, name: str, path: Path | None, error: str) -> str:
        """With the count of every answer whose text is not the context's at its start."""
        if path is None or not path.is_file() or "differs from the context" not in error:
            return error
        try:
            examples = _read_examples(task.splits[name], path, strict=False)
        except DataError:
            return error
        bad = misplaced_answers(examples)
        total = sum(len(ex.answers) for ex in examples)
        shown = ", ".join(str(ex.line) for ex, _ in bad[:3]) + (", ..." if len(bad) > 3 else "")
        return f"{error} (in all, {len(bad)} of {total} answers are not found at their start: {shown})"

    # ---- tasks init ----------------------------------------------------------------
    def init_detect(self, path: Path) -> bool:
        """A SQuAD JSON file, or JSON lines / CSV with a question and a context field."""
        return looks_like_squad(path) or (path.suffix.lower() in TABLE_FORMATS and looks_like_span_table(path))

    def init_draft(self, opts: InitOptions, files: dict[str, Path], name: str, folder: Path) -> InitDraft:
        """One task: the SQuAD version from the unanswerable questions; for JSON lines and CSV the
        question, context, answer text, answer start and id columns by name (or ``--text Q,C``,
        ``--label``, ``--id``)."""
        train = next(iter(files.values()))
        squad = train.suffix.lower() == ".json"
        if not squad and train.suffix.lower() not in TABLE_FORMATS:
            raise ConfigError("a span task reads a SQuAD JSON file (.json), JSON lines (.jsonl) or CSV (.csv)",
                              path=str(train))
        if squad and (opts.text or opts.label or opts.id):
            raise ConfigError("a SQuAD JSON file names its fields itself: leave out --text, --label and --id",
                              path=str(train))
        columns, notes = ({}, {}) if squad else _span_columns(train, opts)
        split_lines, counts, unanswerable, total = [], {}, 0, 0
        for role, path in files.items():
            fmt = "squad" if squad else TABLE_FORMATS.get(path.suffix.lower(), "jsonl")
            labeled = squad or columns["label"] in table_fields(path)
            split = _draft_split(fmt, columns if not squad else None, labeled=False)
            try:
                examples = _read_examples(split, path, strict=False)
            except DataError as e:
                raise DataError(str(e).split(": ", 1)[-1], path=str(path)) from None
            labeled = labeled and (not squad or any(ex.answers or ex.is_impossible for ex in examples))
            counts[role] = len(examples)
            if labeled:
                unanswerable += sum(1 for ex in examples if ex.is_impossible)
                total += len(examples)
            n_articles = len(article_titles(examples))
            where = (f"  # {len(examples)} questions in {n_articles} article{'' if n_articles == 1 else 's'}"
                     if squad else
                     f"  # {len(examples)} questions")
            split_lines += [f"  {role}:", f"    role: {role}",
                            f"    path: {json.dumps(relative_path(path, folder), ensure_ascii=False)}"
                            "  # relative to this file's folder", f"    format: {fmt}{where}"]
            if not squad:
                cols = {k: v for k, v in columns.items() if labeled or k not in ("label", "answer_start")}
                split_lines.append(f"    columns: {flow(cols)}" + (f"  # {notes['columns']}" if role == "train" else ""))
            if not labeled:
                split_lines.append("    labeled: false  # no answers: predictions only")
        version = (("v2.0", f"{unanswerable} of {total} questions are unanswerable") if unanswerable
                   else ("v1.1", "every question has an answer"))
        shape = "a SQuAD JSON file (data > paragraphs > qas)" if squad else "a question and a context per row"
        lines = [f"name: {name}", f"type: span  # {shape}", "input: question_context",
                 f"version: {version[0]}  # {version[1]}",
                 "metrics: [exact, f1]  # SQuAD exact match and F1 of the answer texts (f1 selects the epoch)",
                 "dropout: 0.1", "splits:" + ("" if "dev" in files else "  # no dev split found: training keeps the "
                                               "last epoch"), *split_lines]
        summary = f"task {name}, span ({version[0]}), input question_context"
        return InitDraft(lines, [name], "questions", counts, summary)

def _span_columns(train: Path, opts: InitOptions) -> tuple[dict[str, str], dict[str, str]]:
    """The columns of a JSON-lines or CSV span file, and the comment saying where they come from."""
    fields = table_fields(train)
    given = list(opts.text or [])
    question = given[0] if given else named(fields, QUESTION_FIELDS)
    context = given[1] if len(given) > 1 else named(fields, CONTEXT_FIELDS)
    answer = opts.label or named(fields, ANSWER_FIELDS)
    start = named(fields, START_FIELDS)
    qid = opts.id or named(fields, ID_FIELDS)
    for flag, value in (("--text QUESTION,CONTEXT", question), ("--text QUESTION,CONTEXT", context),
                        ("--label ANSWER_TEXT", answer)):
        if value is None or value not in fields:
            raise ConfigError(f"cannot tell the {'answer text' if flag.startswith('--label') else 'question or context'}"
                              f" column: pass {flag} (fields: {', '.join(fields)})", path=str(train))
    if start is None:
        raise ConfigError(f"no answer start column (named {', '.join(START_FIELDS)}; fields: {', '.join(fields)})",
                          path=str(train))
    columns = {"text_a": question, "text_b": context, "label": answer, "answer_start": start}
    if qid is not None:
        columns["id"] = qid
    how = "given with --text" if given else "by their names"
    return columns, {"columns": f"question, context: {how}; answer text{' (--label)' if opts.label else ''} "
                                "and start: by their names"}


def _draft_split(fmt: str, columns: dict[str, str] | None, labeled: bool) -> Any:
    """A stand-in for a split definition, enough for ``_read_examples``."""
    cols = SimpleNamespace(**{**dict.fromkeys(("text_a", "text_b", "label", "answer_start", "id")), **(columns or {})})
    return SimpleNamespace(format=fmt, columns=cols, labeled=labeled)


def parse_titles(spec: str) -> tuple[str, int]:
    """``first:N`` or ``after:N`` -> (which, N)."""
    which, _, n = spec.partition(":")
    if which not in ("first", "after") or not n.strip().isdigit() or int(n) < 1:
        raise ValueError(f"titles '{spec}': use first:N, after:N (N >= 1) or a list of article titles")
    return which, int(n)


def _read_examples(split: SplitSpec, path: Path, strict: bool = True) -> list[SpanExample]:
    """The split's questions (``strict=False``: unchecked, ``tasks check`` counts what is wrong)."""

    if split.format == "squad":
        return read_squad_json(path, strict=strict, labeled=split.labeled)
    c = split.columns
    names = {"question": c.text_a, "context": c.text_b, "answer_text": c.label, "answer_start": c.answer_start,
             "id": c.id}
    columns = SpanColumns(**{k: str(v) for k, v in names.items() if v is not None})
    return (read_span_csv if split.format == "csv" else read_span_jsonl)(path, columns, strict=strict,
                                                                        labeled=split.labeled)


def _select_titles(examples: list[SpanExample], titles: str | list[str] | None, path: Path) -> list[SpanExample]:
    """The examples of the split's articles (all without ``titles``)."""

    if titles is None:
        return examples
    if isinstance(titles, str):
        which, n = parse_titles(titles)
        first, rest = split_by_articles(examples, first_article_titles(examples, n))
        return first if which == "first" else rest
    try:
        return split_by_articles(examples, titles)[0]
    except DataError as e:
        raise DataError(str(e), path=str(path)) from None


def _rows(examples: list[SpanExample], labeled: bool) -> dict[str, Any]:
    return {"ids": [ex.id for ex in examples], "text_a": [ex.question for ex in examples],
            "text_b": [ex.context for ex in examples],
            "labels": [tuple(ex.answers) if labeled else None for ex in examples],
            "lines": [ex.line if isinstance(ex.line, int) else i + 1 for i, ex in enumerate(examples)],
            "examples": list(examples)}


def _tokenized(raw: RawSplit, tokenizer: Any, windows: Any) -> dict[str, Any]:
    """The windows, padding cut, as the fields of a ``TokenizedSplit``: a row per window, segment
    1 at the tokens that can start or end an answer, ``labels`` (W, 2) start and end targets."""
    lengths = windows.attention_mask.sum(axis=1)
    rows = [slice(0, int(n)) for n in lengths]
    special = np.isin(windows.input_ids, list(tokenizer.all_special_ids))
    seg_all = np.where(special, SEG_SPECIAL, np.where(windows.context_mask(), 1, 0)).astype(np.int8)
    offsets = np.zeros(len(windows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    types = windows.token_type_ids
    return {"ids": np.concatenate([windows.input_ids[w, r] for w, r in enumerate(rows)]).astype(np.int32),
            "type_ids": None if types is None else
            np.concatenate([types[w, r] for w, r in enumerate(rows)]).astype(np.int8),
            "seg": np.concatenate([seg_all[w, r] for w, r in enumerate(rows)]), "offsets": offsets,
            "labels": np.stack([windows.start_positions, windows.end_positions], axis=1).astype(np.int64),
            "groups": np.arange(len(windows), dtype=np.int64), "uids": list(raw.ids),
            "examples": list(raw.examples or []), "span_windows": windows}


def window_stride(task: TaskSpec, max_len: int) -> int:
    """The context tokens two windows of the task's questions share (``stride``; unset: 128, at
    most a quarter of ``max_len``)."""
    return task.stride if task.stride is not None else min(DEFAULT_STRIDE, max_len // 4)


def question_tokens(max_len: int) -> int:
    """The tokens a question keeps in windows of ``max_len`` tokens (the rest is cut)."""
    return min(MAX_QUESTION_TOKENS, max_len // 2)


def decode(task: TaskSpec, outputs: np.ndarray, split: TokenizedSplit) -> dict[str, SpanPrediction]:
    """``{question id: SpanPrediction}`` from the kept outputs of all windows of a split."""
    return decode_windows(outputs, split.span_windows, split.examples or [], task.n_best or DEFAULT_N_BEST,
                          task.max_answer_length or DEFAULT_MAX_ANSWER_LENGTH)


def decode_windows(outputs: Any, windows: Any, examples: list[SpanExample], n_best: int,
                   max_answer_length: int) -> dict[str, SpanPrediction]:
    """``{question id: SpanPrediction}`` from the (tokens, 2) logits of each of ``windows`` (a
    ``SpanWindows``; rows cut to their tokens), the windows of one question decoded together."""
    width = windows.offsets.shape[1]
    logits = np.full((len(outputs), width, 2), PAD_LOGIT, dtype=np.float64)
    for w, row in enumerate(outputs):
        logits[w, :len(row)] = row
    return decode_predictions(examples, windows.example_index, windows.offsets, logits[..., 0], logits[..., 1],
                              n_best=n_best, max_answer_length=max_answer_length)


def answer_dict(version: str, prediction: SpanPrediction, null_threshold: float | None = None) -> dict[str, Any]:
    """A question's answer as ``Run.predict`` and the server give it: ``text``, character ``start``
    and ``end`` in its context, ``score`` (start + end logit); with v2.0 an unanswered question (null
    margin above ``null_threshold``, unset: 0) gets text "", no start or end, and the negated null
    margin as its score."""
    best = prediction.best
    threshold = (null_threshold if null_threshold is not None else 0.0) if version == "v2.0" else None
    if best is None or prediction.answer(threshold) == "":
        return {"text": "", "start": None, "end": None, "score": -prediction.null_margin}
    return {"text": best.text, "start": best.char_start, "end": best.char_end, "score": best.score}


def question_metrics(task: TaskSpec, examples: list[SpanExample], preds: Any) -> dict[str, float]:
    """The task's metrics (and ``score``: F1, else exact match) of the answers ``preds`` to ``examples``."""
    got = squad_scores({ex.id: str(p) for ex, p in zip(examples, preds)}, gold_answers(examples),
                       rules=task.version or "v1.1")
    out = {m: float(got[m]) for m in task.metrics}
    out["score"] = out["f1"] if "f1" in out else out["exact"]
    return out


def answer_text(task: TaskSpec, prediction: SpanPrediction) -> str:
    """The answer of a question: its best span; with v2.0 "" where the null score beats it by more
    than the task's ``null_threshold`` (unset: 0)."""
    if task.version != "v2.0":
        return prediction.answer(None)
    return prediction.answer(task.null_threshold if task.null_threshold is not None else 0.0)
