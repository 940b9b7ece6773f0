"""The Python API: train, and use a saved run (evaluate, predict).

>>> import mtdnn
>>> run_dir = mtdnn.train(mtdnn.make_config(overrides={"tasks": "rte,mrpc", "epochs": 1}))
>>> run = mtdnn.load_run(run_dir)
>>> run.evaluate()                                   # task -> split -> metric -> value
>>> run.evaluation().reports["rte"]["dev"]["per_class"]  # and per-class reports (classes, ranking)
>>> run.predict("rte", ["A man sleeps."], ["Nobody sleeps."])   # ['not_entailment']
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .data.pipeline import load_task_data
from .data.readers import data_dir_default, decode_file, read_split
from .errors import ConfigError
from .evaluation import Metrics, evaluate_tasks, prediction_labels
from .model.encoders import named_splits
from .records import Predictions, RawSplit
from .run_dir import atomic_write
from .saved_model import SavedModel
from .tasks.schema import Columns, SplitDef, TaskDef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """What ``Run.evaluation`` measures in one pass over the data: ``metrics`` (task -> split ->
    metric -> value, as ``Run.evaluate``) and ``reports`` (task -> split -> the per-class report of
    ``mtdnn.reports.class_report``: precision, recall, F1, support per label, confusion matrix) of
    the tasks that predict classes (classification and ranking)."""

    metrics: Metrics
    reports: dict[str, dict[str, dict[str, Any]]]


class Run(SavedModel):
    """A trained run loaded from its directory (or from a whole-model folder written by
    ``mtdnn export --format hf``), without the hub or the original encoder files."""

    def evaluate(self, tasks: Sequence[str] | None = None, data_dir: str | Path | None = None,
                 batch_size: int = 128, max_eval_examples: int | None = None) -> Metrics:
        """Metrics of every labeled dev/test split (task -> split -> metric -> value), each task
        with the epoch it keeps."""
        return self.evaluation(tasks, data_dir, batch_size, max_eval_examples).metrics

    def evaluation(self, tasks: Sequence[str] | None = None, data_dir: str | Path | None = None,
                   batch_size: int = 128, max_eval_examples: int | None = None) -> Evaluation:
        """``evaluate``'s metrics and, from the same predictions, the per-class reports of the tasks
        that predict classes: those a finished run holds in ``reports/`` (``mtdnn evaluate --reports``)."""
        chosen = [self.task(t) for t in (tasks or self.tasks)]
        data = load_task_data(chosen, self.tokenizer, data_dir=data_dir or self.config.get("data_dir") or data_dir_default(),
                              max_len=self.max_len, cache_dir=self.config.get("cache_dir"),
                              max_eval_examples=max_eval_examples, allow_hub=self.config.get("allow_hub", True),
                              with_train=False, with_tests=False)
        self._check_tokens(named_splits(data))
        reports: dict[str, dict[str, dict[str, Any]]] = {}

        def report(task: str, split: str, preds: Predictions) -> None:
            td = data[task]
            got = td.task.kind.split_report(td.task, td.evals[split], preds.preds)
            if got is not None:
                reports.setdefault(task, {})[split] = got

        metrics = evaluate_tasks(self.model, data, batch_size=batch_size, device=self.device,
                                 precision=self.precision, pad_id=self.tokenizer.pad_token_id or 0,
                                 before_task=self._use_weights_of, keep=report)
        return Evaluation(metrics, reports)

    def predict(self, task: str, text_a: Sequence[str], text_b: Sequence[str] | None = None,
                batch_size: int = 128) -> list[Any]:
        """Predicted label names (classification, ranking) or scores (regression) for raw texts.
        For ranking tasks, rows with the same ``text_a`` (question) are one candidate group. For
        tagging tasks, each text's entities (``type``, character ``start`` and ``end``, ``text``,
        ``score``), or with plain tags each word's ``tag``."""
        t = self.task(task)
        if t.has_text_b and text_b is None:
            raise ConfigError(f"task '{task}' takes sentence pairs: give text_b", field="text_b")
        texts = list(text_a)
        raw = RawSplit(task, "predict", "<api>", **t.kind.api_rows(t, texts, list(text_b) if text_b is not None else None))
        if len(raw) == 0:
            return t.kind.api_answers(t, texts, raw, None, None)
        tok, preds = self._predict(t, raw, batch_size)
        return t.kind.api_answers(t, texts, raw, tok, preds)

    def predict_file(self, task: str, input_path: str | Path, output_path: str | Path,
                     text_a: str | int | None = None, text_b: str | int | None = None,
                     id_column: str | int | None = None, batch_size: int = 128) -> int:
        """Predict every row of a TSV/CSV/JSON-lines file and write ``index, prediction[, p(label)...]``
        as TSV. Columns default to the task's own column names, else ``text_a``/``text_b``. Ranking:
        where the file has the task's ``group`` column, it groups the candidates, else ``text_a``.
        Tagging: a CoNLL file (words in column ``text_a``, default the task's) gives the same file
        with a predicted tag column; JSON lines get a ``predicted_tags`` field. Returns the rows
        (sentences) predicted."""
        t = self.task(task)
        input_path = Path(input_path)
        given = t.kind.predict_split(t, input_path, text_a)
        if given is None:
            fmt = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}.get(input_path.suffix, "tsv")
            given = {"format": fmt, "columns": _guess_columns(t, input_path, fmt, text_a, text_b, id_column)}
        split = SplitDef(path=str(input_path.resolve()), role="test", labeled=False, **given)
        probe = t.model_copy(update={"splits": {**t.splits, "predict": split}})
        raw = read_split(probe, "predict", input_path.parent, allow_hub=False)
        tok, preds = self._predict(t, raw, batch_size)
        own = t.kind.prediction_file_lines(t, raw, preds, input_path)
        labels = prediction_labels(t, preds)
        with atomic_write(output_path) as f:
            if own is not None:
                f.writelines(line + "\n" for line in own)
                return len(labels)
            f.write("\t".join(["index", "prediction", *t.kind.prediction_columns(t)]) + "\n")
            for i, (uid, lab) in enumerate(zip(raw.ids, labels)):
                f.write("\t".join([uid, lab, *t.kind.prediction_extras(t, preds.outputs[i])]) + "\n")
        return len(labels)


def _guess_columns(task: TaskDef, path: Path, fmt: str, a, b, idc) -> Columns:
    if a is not None:
        return Columns(text_a=a, text_b=b, id=idc)
    header: list[str] = []
    if fmt in ("tsv", "csv"):
        first = decode_file(path).split("\n", 1)[0].rstrip("\r")
        header = first.split("\t") if fmt == "tsv" else next(iter(__import__("csv").reader([first])), [])
    elif fmt == "parquet" and path.is_file():
        import pyarrow.parquet  # optional: only parquet files need pyarrow
        try:
            header = list(pyarrow.parquet.read_schema(path).names)
        except (OSError, ValueError):  # not parquet: reading the rows reports it
            header = []
    elif fmt == "jsonl" and path.is_file():
        header = _first_record_keys(path)
    candidates = [s.columns for s in task.splits.values()] + [
        Columns(text_a="text_a", text_b="text_b" if task.has_text_b else None)]
    for c in candidates:
        names = [c.text_a] + ([c.text_b] if task.has_text_b else [])
        if header and all(isinstance(n, str) and n in header for n in names):
            if idc is None:
                idc = next((n for n in (c.id, "index", "id", "idx") if n is not None and n in header), None)
            group = c.group if task.kind.keeps_groups and isinstance(c.group, str) and c.group in header else None
            return Columns(text_a=c.text_a, text_b=c.text_b if task.has_text_b else None, id=idc,
                           group=group)
    if fmt in ("jsonl", "parquet") or not header:
        return Columns(text_a="text_a", text_b="text_b" if task.has_text_b else None, id=idc)
    raise ConfigError(f"cannot tell which columns hold the text (header: {', '.join(header)}); "
                      "pass --text-a COLUMN [--text-b COLUMN]", path=str(path), field="columns")


def _first_record_keys(path: Path) -> list[str]:
    """The keys of a JSON-lines file's first record (none where it is not an object)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    rec = json.loads(line)
                except ValueError:
                    return []
                return [str(k) for k in rec] if isinstance(rec, dict) else []
    return []


def load_run(path: str | Path, device: str = "auto", precision: str = "fp32") -> Run:
    return Run(path, device=device, precision=precision)
