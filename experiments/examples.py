"""Per-example predictions that records keep, and the per-example figures the paired bootstrap
resamples (experiments.stats).

- Sentence-level cells (experiments.glue_seeds, experiments.interference): each evaluated split's
  predictions at the epochs a record names (class indices as a string of digits, scores rounded to
  4 decimals); the labels of each split are stored once, in experiments/results/labels.json, under
  ``task/split/hash``. ``compare_rows`` gives a row − row difference with its paired bootstrap
  interval (``stats.paired_bootstrap``).
- Tagging (experiments.tagging): each sentence's predicted entities as one string, ``TYPE:start,end`` joined by ``;``
  (word indices, end exclusive; ``""``: none), read from the predicted tags by conlleval's rules
  (``mtdnn.tagging.schemes.spans``). The gold entities of a split are stored once, in
  experiments/results/entities.json under ``task/split/hash``. A sentence's (correct, predicted,
  gold) entity counts give the entity F1 of any resample of sentences (``stats.f1_of_counts``).
- Span (extractive QA, experiments.qa): each question's predicted answer text, with its exact match (0 or 1) and
  F1 against the gold answers (SQuAD's rules of the task's version); ``questions`` names the
  split's question ids by their hash, so that only rows answering the same questions are compared.

The predictions come from the kept epoch's weights in the run's ``checkpoints/`` (a run keeps
each task's kept epoch and its last), predicted again after training, so they equal what the
run scored at that epoch (``scores`` holds the task kind's metrics of them, to compare).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from experiments import settings
from experiments.stats import paired_bootstrap

ENTITIES = settings.RESULTS / "entities.json"  # gold entities of each split, once
LABELS = settings.RESULTS / "labels.json"      # labels of each sentence-level split, once


# ----------------------------------------------------------------------------- sentence-level (GLUE) cells
def encode_predictions(values: np.ndarray, regression: bool) -> str | list[float] | list[int]:
    """Compact predictions: class indices as a string of digits (a list where a class is >= 10),
    scores rounded to 4 decimals."""
    if regression:
        return [round(float(v), 4) for v in values]
    ints = [int(v) for v in values]
    return "".join(map(str, ints)) if all(0 <= v < 10 for v in ints) else ints


def decode_predictions(stored: str | list[Any]) -> np.ndarray:
    return np.array([int(c) for c in stored]) if isinstance(stored, str) else np.asarray(stored)


def labels_key(task: str, split: str, labels: np.ndarray, uids: list[str]) -> str:
    """``task/split/hash``: the hash of the split's row ids and labels (12 hex digits)."""
    h = hashlib.sha256(json.dumps([list(map(str, uids)), [float(x) for x in labels]]).encode())
    return f"{task}/{split}/{h.hexdigest()[:12]}"


def store_labels(key: str, labels: np.ndarray, regression: bool, path: Path | None = None) -> None:
    """Write a split's labels once into the shared labels file (kept as it is when the key is there)."""
    from mtdnn.run_dir import write_json

    path = path or LABELS
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if key not in stored:
        stored[key] = encode_predictions(labels, regression)
        write_json(path, dict(sorted(stored.items())))


def load_labels(path: Path | None = None) -> dict[str, np.ndarray]:
    path = path or LABELS
    return {k: decode_predictions(v) for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}


def epoch_predictions(run_dir: Path, epochs: dict[str, set[int]], labels_file: Path | None = None) -> dict[str, Any]:
    """task -> split -> {"labels": key, "epochs": {epoch: predictions}} on every labeled evaluation
    split (dev, test where labeled) of the run's tasks, for the ``epochs`` of each task (their
    weights in ``checkpoints/``); each split's labels go to the shared labels file."""
    import mtdnn
    from mtdnn.data.pipeline import load_task_data
    from mtdnn.data.readers import data_dir_default
    from mtdnn.evaluation import predict
    from mtdnn.metrics import compute_metrics
    from mtdnn.model.weights import load_model_weights

    run = mtdnn.load_run(run_dir, device="cpu")
    tasks = [run.task(t) for t in epochs]
    data = load_task_data(tasks, run.tokenizer, data_dir=run.config.get("data_dir") or data_dir_default(),
                          max_len=run.max_len, cache_dir=run.config.get("cache_dir"), allow_hub=False,
                          with_train=False, with_tests=False)
    out: dict[str, Any] = {}
    loaded: Path | None = None
    for name, td in data.items():
        regression = td.task.type == "regression"
        for split_name, split in td.evals.items():
            key = labels_key(name, split_name, split.labels, split.uids)
            store_labels(key, split.labels, regression, labels_file)
            entry: dict[str, Any] = {"labels": key, "epochs": {}, "scores": {}}
            for epoch in sorted(epochs[name]):
                weights = run_dir / "checkpoints" / f"epoch-{epoch}.safetensors"
                if not weights.is_file():
                    continue
                if weights != loaded:
                    load_model_weights(run.model, weights)
                    loaded = weights
                preds = predict(run.model, td.task, split, batch_size=int(run.config.get("eval_batch_size", 128)),
                                device=run.device, pad_id=run.tokenizer.pad_token_id or 0).preds
                entry["epochs"][str(epoch)] = encode_predictions(preds, regression)
                entry["scores"][str(epoch)] = compute_metrics(td.task.metric_names, preds, split.labels)["score"]
            out.setdefault(name, {})[split_name] = entry
    return out


def preds_of(record: dict[str, Any], task: str, arm: str, split: str | None = None) -> tuple[str, np.ndarray] | None:
    epoch = record["selected"].get(arm, {}).get(task)
    entry = record.get("predictions", {}).get(task, {})
    split = split or next(iter(entry), None)
    if epoch is None or split not in entry or str(epoch) not in entry[split]["epochs"]:
        return None
    return entry[split]["labels"], decode_predictions(entry[split]["epochs"][str(epoch)])


def metric_names(task: str) -> list[str]:
    from mtdnn.tasks.registry import TaskRegistry

    return list(TaskRegistry([settings.TASK_FILE]).resolve([task], settings.BASE["pair_head"])[0].metric_names)


def compare_rows(task: str, a: list[dict[str, Any]], b: list[dict[str, Any]], arm: str,
                 labels: dict[str, np.ndarray], resamples: int = 1000) -> dict[str, Any] | None:
    """Row A − row B on a task, with the paired bootstrap interval over the reported split's
    examples; None unless every run of both rows has predictions of the same labelled split."""
    pa = [preds_of(r, task, arm) for r in a]
    pb = [preds_of(r, task, arm) for r in b]
    keys = {p[0] for p in pa + pb if p is not None}
    if not a or not b or any(p is None for p in pa + pb) or len(keys) != 1 or next(iter(keys)) not in labels:
        return None
    key = next(iter(keys))
    interval = paired_bootstrap(metric_names(task), labels[key], [p[1] for p in pa], [p[1] for p in pb],  # type: ignore[index]
                                resamples=resamples)
    return interval.as_record()


# ----------------------------------------------------------------------------- tagging
def entity_string(tags: list[str]) -> str:
    """A sentence's entities from its tags: ``TYPE:start,end`` joined by ``;`` (end exclusive)."""
    from mtdnn.tagging.schemes import spans

    return ";".join(f"{t}:{s},{e}" for t, s, e in spans(tags))


def parse_entities(text: str) -> set[tuple[str, int, int]]:
    """``entity_string``'s string back to its (type, start, end) entities."""
    out = set()
    for part in filter(None, text.split(";")):
        kind, _, where = part.rpartition(":")
        start, end = where.split(",")
        out.add((kind, int(start), int(end)))
    return out


def sentence_counts(gold: list[str], pred: list[str]) -> np.ndarray:
    """(correct, predicted, gold) entity counts of each sentence, an (n, 3) array: an entity is
    correct when its span and type equal a gold entity's (conlleval)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(pred)} predicted sentences for {len(gold)} gold ones")
    out = np.zeros((len(gold), 3), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gold, pred)):
        gs, ps = parse_entities(g), parse_entities(p)
        out[i] = (len(gs & ps), len(ps), len(gs))
    return out


def split_key(task: str, split: str, uids: list[str], values: list[Any]) -> str:
    """``task/split/hash``: the hash of the split's row ids and gold values (12 hex digits)."""
    h = hashlib.sha256(json.dumps([list(map(str, uids)), values], ensure_ascii=False).encode())
    return f"{task}/{split}/{h.hexdigest()[:12]}"


def store_gold(key: str, entities: list[str], path: Path | None = None) -> None:
    """Write a split's gold entities once into the shared file (kept as it is when the key is there)."""
    from mtdnn.run_dir import write_json

    path = path or ENTITIES
    stored = json.loads(path.read_text()) if path.is_file() else {}
    if key not in stored:
        stored[key] = entities
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, dict(sorted(stored.items())))


def load_gold(path: Path | None = None) -> dict[str, list[str]]:
    path = path or ENTITIES
    return json.loads(path.read_text()) if path.is_file() else {}


def tagging_entry(task: Any, name: str, split_name: str, split: Any, preds: np.ndarray,
                  gold_file: Path | None = None) -> dict[str, Any]:
    """What a record keeps of a tagging split's predictions: the gold key (gold stored once), each
    sentence's predicted entities, and the task kind's metrics of them."""
    labels = list(task.labels)
    gold = [entity_string([labels[int(i)] for i in s]) for s in split.word_labels or []]
    pred = [entity_string([labels[int(i)] for i in s]) for s in preds]
    key = split_key(name, split_name, list(split.uids), gold)
    store_gold(key, gold, gold_file)
    return {"gold": key, "entities": pred, "scores": task.kind.score(task, split, preds)}


# ----------------------------------------------------------------------------- span
def span_entry(task: Any, name: str, split_name: str, split: Any, preds: np.ndarray) -> dict[str, Any]:
    """What a record keeps of a span split's predictions: the questions' key, each question's
    answer, exact match and F1 (rounded to 4 decimals), and the task kind's metrics."""
    from mtdnn.span.metrics import question_scores

    examples = list(split.examples or [])
    scored = [question_scores(str(p), list(ex.answer_texts), rules=task.version or "v1.1") for ex, p in zip(examples, preds)]
    return {"questions": split_key(name, split_name, [ex.id for ex in examples], []),
            "answers": [str(p) for p in preds], "exact": "".join(str(int(e)) for e, _ in scored),
            "f1": [round(float(f), 4) for _, f in scored], "scores": task.kind.score(task, split, preds)}


def question_values(entry: dict[str, Any], metric: str) -> np.ndarray:
    """A span entry's per-question ``exact`` (0/1) or ``f1`` values in [0, 1]."""
    if metric == "exact":
        return np.array([int(c) for c in entry["exact"]], dtype=float)
    return np.asarray(entry["f1"], dtype=float)


# ----------------------------------------------------------------------------- both
def kept_predictions(run_dir: Path, epochs: dict[str, int],
                     entry: Callable[[Any, str, str, Any, np.ndarray], dict[str, Any]]) -> dict[str, Any]:
    """task -> split -> ``entry(task, name, split name, split, predictions)`` (``tagging_entry``,
    ``span_entry``) and the epoch, on every labeled evaluation split of each task of ``epochs``,
    predicted with the weights of the epoch the task keeps."""
    import mtdnn
    from mtdnn.data.pipeline import load_task_data
    from mtdnn.data.readers import data_dir_default
    from mtdnn.evaluation import predict
    from mtdnn.model.weights import load_model_weights

    run = mtdnn.load_run(run_dir, device="cpu")
    tasks = [run.task(t) for t in epochs]
    data = load_task_data(tasks, run.tokenizer, data_dir=run.config.get("data_dir") or data_dir_default(),
                          max_len=run.max_len, cache_dir=run.config.get("cache_dir"), allow_hub=False,
                          max_eval_examples=run.config.get("max_eval_examples"), with_train=False, with_tests=False)
    out: dict[str, Any] = {}
    for name, td in data.items():
        weights = run_dir / "checkpoints" / f"epoch-{epochs[name]}.safetensors"
        load_model_weights(run.model, weights)
        for split_name, split in td.evals.items():
            preds = predict(run.model, td.task, split, batch_size=int(run.config.get("eval_batch_size", 128)),
                            device=run.device, pad_id=run.tokenizer.pad_token_id or 0).preds
            out.setdefault(name, {})[split_name] = {"epoch": epochs[name],
                                                    **entry(td.task, name, split_name, split, preds)}
    return out
