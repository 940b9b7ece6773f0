"""``type: tagging``: one tag per word (NER, chunking: entity schemes; part of speech: plain tags).

A tagging task reads ``input: words`` from CoNLL-style column files (``format: conll``:
``columns: {text_a: WORD_COLUMN, label: TAG_COLUMN}``, 0-based indices, so one file gives several
tasks) or JSON lines (``format: jsonl``: ``columns: {text_a: TOKENS_FIELD, label: TAGS_FIELD}``),
with ``scheme: iob1 | iob2 | iobes | plain``; IOB1 files are read into IOB2, and ``labels`` lists
the tags the model predicts (IOB2 tags for an IOB1 file).

Each sentence is encoded in one window, or in overlapping windows when it is longer than the
maximum length (``tagging/alignment.py``: merged back per word, counted in the log, never cut).
Only each word's first sub-word carries its tag: the loss is the cross-entropy over those
tokens, and a word's prediction is read there. Metrics follow conlleval: entity precision, recall
and F1 (exact span and type, micro over types; ``f1`` selects epochs), or token accuracy for plain
tags. The per-class report gives each entity type's figures and the confusion of types.

Exports hold the head applied to every token (a (batch, tokens, tags) output); ``export --task``
writes a standard token-classification folder (``id2label``: the tags as predicted); the server
splits a text into words and windows as ``Run.predict`` does and answers its entities."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from ..model.heads import TokenHead
from ..records import InitOptions, Predictions, RawSplit, SplitCheck, TokenizedSplit
from ..tagging.alignment import Window, encode_words, merge_windows
from ..tagging.draft import (TAGGED_SUFFIXES, column_count, looks_like_tagged_jsonl, read_tagged_file, tag_column,
                             task_lines, word_column)
from ..tagging.entities import Word, split_words, tags_and_scores, tags_to_entities
from ..tagging.metrics import entity_metrics, entity_report, report_dict, token_accuracy, type_confusion
from ..tagging.readers import TaggedSentence, check_tags, read_conll, read_tagged_jsonl
from ..tagging.schemes import PLAIN, detect_scheme, iob1_to_iob2, parse_tag, spans, validate
from .base import SEG_SPECIAL, EncodedInputs, InitDraft, TaskKind, relative_path, stack_rows, token_rows
from .classes import class_report
from .specs import ServedTask, SplitSpec, TaskSpec

log = logging.getLogger(__name__)

WINDOW_OVERLAP = 16  # the most words consecutive windows of a long sentence share
ENTITY_METRICS = ("f1", "precision", "recall")
SCHEME_PREFIXES = {"iob1": "BIO", "iob2": "BIO", "iobes": "BIOES"}  # of the tags the model predicts
IGNORE = -100


class Tagging(TaskKind):
    name: ClassVar[str] = "tagging"
    inputs: ClassVar[tuple[str, ...]] = ("words",)
    loss_name: ClassVar[str] = "token_cross_entropy"
    metric_choices: ClassVar[tuple[str, ...]] = (*ENTITY_METRICS, "accuracy")
    default_metrics: ClassVar[tuple[str, ...]] = ENTITY_METRICS
    reads_own_files: ClassVar[bool] = True
    long_rows: ClassVar[str] = "are split into overlapping windows (merged back per word)"
    row_unit: ClassVar[str] = "sentences"
    # training methods that do not handle per-token outputs yet
    refused_methods: ClassVar[dict[str, str]] = {
        "smart": "SMART (--adv) perturbs and compares one output per row; tagging has one per token",
        "distillation": "distillation (--teachers) averages one output per row; tagging has one per token"}

    # ---- schema --------------------------------------------------------------------
    def validate(self, task: TaskSpec) -> None:
        if task.input != "words":
            raise ValueError("a tagging task needs input: words")
        if task.scheme is None:
            raise ValueError("a tagging task needs scheme: iob1, iob2, iobes or plain")
        if len(task.labels) < 2:
            raise ValueError("a tagging task needs at least 2 labels (its tags)")
        if task.scheme == "plain":
            entity = [m for m in task.metrics if m in ENTITY_METRICS]
            if entity:
                raise ValueError(f"'{entity[0]}' counts entities, a task with scheme: plain has none: "
                                 "use accuracy")
            return
        _check_entity_labels(task.labels, task.scheme)

    def validate_split(self, task: TaskSpec, name: str, split: SplitSpec) -> None:
        cols = split.columns
        if split.format not in ("conll", "jsonl"):
            raise ValueError(f"split '{name}': a tagging task reads format conll or jsonl, not {split.format}")
        if split.path is None or split.hub is not None:
            raise ValueError(f"split '{name}': a tagging task reads a local file (path), not the hub")
        if cols.text_b is not None or cols.group is not None:
            raise ValueError(f"split '{name}': a tagging task reads words (columns.text_a) and tags (columns.label)")
        want = int if split.format == "conll" else str
        for field, value in (("text_a", cols.text_a), ("label", cols.label)):
            if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
                raise ValueError(f"split '{name}': format {split.format} names columns.{field} by "
                                 + ("0-based index" if want is int else "field name"))

    def num_outputs(self, task: TaskSpec) -> int:
        return len(task.labels)

    def reads_pairs(self, input_kind: str) -> bool:
        return False

    # ---- data ----------------------------------------------------------------------
    def read_file(self, task: TaskSpec, name: str, split: SplitSpec, path: Path) -> dict[str, Any]:
        """A row per sentence: its words, joined in ``text_a``, and its tags as a tuple."""
        sentences = _read_sentences(task, split, path)
        tagged = split.labeled
        return {"ids": [str(i) for i in range(len(sentences))], "text_a": [" ".join(s.words) for s in sentences],
                "text_b": [None] * len(sentences),
                "labels": [tuple(s.tags) if tagged and s.tags is not None else None for s in sentences],
                "lines": [s.line for s in sentences], "words": [list(s.words) for s in sentences]}

    def tokenize(self, task: TaskSpec, raw: RawSplit, tokenizer: Any, max_len: int) -> dict[str, Any]:
        tag_ids = _tag_ids(task, raw)
        windows, stats = encode_words(tokenizer, raw.words or [], tag_ids, max_length=max_len,
                                      overlap=window_overlap(max_len))
        log.info("%s/%s: %d sentences in %d windows of at most %d tokens (%d sentences split, at most %d windows "
                 "each; %d words given the unknown token, %d words cut to a window)", task.name, raw.split,
                 stats.sentences, stats.windows, max_len, stats.split_sentences, stats.max_windows,
                 stats.empty_words, stats.truncated_words)
        return _tokenized(task, raw, tokenizer, windows, tag_ids)

    def tokenize_key(self, task: TaskSpec, raw: RawSplit, max_len: int) -> str:
        """A digest of the window overlap, the tag list and every sentence's id, words and tags."""
        h = hashlib.sha256(json.dumps({"overlap": window_overlap(max_len), "labels": list(task.labels)}).encode())
        for uid, words, tags in zip(raw.ids, raw.words or [], raw.labels):
            h.update(json.dumps([uid, words, tags], ensure_ascii=False).encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def tokenized_arrays(self, fields: dict[str, Any]) -> dict[str, np.ndarray]:
        """The token arrays, and each window's sentence, word range, word ids (-1: none), first
        sub-words and owned words (flat, with offsets)."""
        windows = fields["windows"]
        arrays = {k: fields[k] for k in ("ids", "seg", "offsets", "labels", "groups", "token_labels")}
        if fields["type_ids"] is not None:
            arrays["type_ids"] = fields["type_ids"]
        arrays["places"] = np.asarray([[w.sentence, w.start, w.end] for w in windows], dtype=np.int64).reshape(-1, 3)
        arrays["word_ids"] = np.asarray([-1 if i is None else i for w in windows for i in w.word_ids], dtype=np.int64)
        for name in ("first_tokens", "owned"):
            arrays[name], arrays[f"{name}_offsets"] = _flat([getattr(w, name) for w in windows])
        arrays["tagged"] = np.asarray([bool(windows) and windows[0].labels is not None])
        return arrays

    def from_tokenized_arrays(self, task: TaskSpec, raw: RawSplit, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        offsets, tagged = arrays["offsets"], bool(arrays["tagged"][0])
        if len(arrays["places"]) != len(offsets) - 1 or int(arrays["places"][:, 0].max(initial=-1)) >= len(raw):
            raise ValueError("windows differ from the data")
        windows = []
        for w, (sentence, start, end) in enumerate(arrays["places"].tolist()):
            lo, hi = int(offsets[w]), int(offsets[w + 1])
            windows.append(Window(
                sentence, start, end, arrays["ids"][lo:hi].tolist(),
                [None if i < 0 else i for i in arrays["word_ids"][lo:hi].tolist()],
                _row(arrays, "first_tokens", w), _row(arrays, "owned", w),
                arrays["token_labels"][lo:hi].tolist() if tagged else None))
        return {**{k: arrays[k] for k in ("ids", "seg", "offsets", "labels", "groups", "token_labels")},
                "type_ids": arrays.get("type_ids"), "uids": list(raw.ids), "windows": windows,
                "word_labels": _tag_ids(task, raw)}

    def label_array(self, task: TaskSpec, labels: list[Any]) -> np.ndarray:
        return np.zeros(len(labels), dtype=np.int64)

    def holdout_strata(self, task: TaskSpec, raw: RawSplit) -> np.ndarray:
        return np.zeros(len(raw), dtype=np.int64)

    # ---- model ---------------------------------------------------------------------
    def build_head(self, task: TaskSpec, hidden: int) -> nn.Module:
        return TokenHead(hidden, len(task.labels), task.dropout)

    def loss(self, task: TaskSpec, output: torch.Tensor, batch: dict[str, torch.Tensor],
             reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy at the tokens with a label (each word's first sub-word)."""
        labels = batch["labels"]
        if not (labels != IGNORE).any():
            return output.float().sum() * 0.0
        return F.cross_entropy(output.float().reshape(-1, output.shape[-1]), labels.reshape(-1),
                               ignore_index=IGNORE, reduction=reduction)

    def loss_units(self, labels: torch.Tensor, groups: torch.Tensor) -> int:
        """Labeled tokens: of a batch's (B, T) token labels, or summed over rows' counts."""
        return int((labels != IGNORE).sum()) if labels.dim() == 2 else int(labels.sum())

    # ---- evaluation ----------------------------------------------------------------
    def eval_outputs(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> Any:
        """Each row's tag probabilities at its tokens, (length, tags), on the host."""
        return token_rows(torch.softmax(out, dim=-1).cpu().numpy(), batch)

    def stack_outputs(self, outs: list[Any]) -> np.ndarray:
        return stack_rows(outs)

    def decide(self, task: TaskSpec, outputs: np.ndarray, split: TokenizedSplit) -> np.ndarray:
        """The tag id of every word of every sentence (an array per sentence)."""
        words = word_probabilities(outputs, split)
        decided = np.empty(len(words), dtype=object)
        for i, probs in enumerate(words):
            decided[i] = probs.argmax(-1) if len(probs) else np.zeros(0, dtype=np.int64)
        return decided

    def score(self, task: TaskSpec, split: TokenizedSplit, preds: np.ndarray) -> dict[str, float]:
        gold, pred = _tag_names(task, split.word_labels or []), _tag_names(task, preds)
        entity = entity_metrics(gold, pred) if any(m in ENTITY_METRICS for m in task.metrics) else {}
        out = {m: (token_accuracy(gold, pred) if m == "accuracy" else float(entity[m])) for m in task.metrics}
        out["score"] = out["f1"] if "f1" in out else float(np.mean([out[m] for m in task.metrics]))
        return out

    def prediction_labels(self, task: TaskSpec, preds: np.ndarray) -> list[str]:
        """A sentence's tags, separated by spaces."""
        return [" ".join(tags) for tags in _tag_names(task, preds)]

    def api_rows(self, task: TaskSpec, text_a: list[str], text_b: list[str] | None) -> dict[str, Any]:
        """The texts split into words (``tagging.entities.split_words``); texts without words are
        left out (their answer is empty)."""
        kept = [(i, [w.word for w in split_words(text)]) for i, text in enumerate(text_a)]
        kept = [(i, words) for i, words in kept if words]
        return {"ids": [str(i) for i, _ in kept], "text_a": [text_a[i] for i, _ in kept],
                "text_b": [None] * len(kept), "labels": [None] * len(kept),
                "lines": [i + 1 for i, _ in kept], "words": [words for _, words in kept]}

    def api_answers(self, task: TaskSpec, texts: list[str], raw: RawSplit, split: TokenizedSplit | None,
                    preds: Predictions | None) -> list[Any]:
        """Each text's entities (type, character start and end, text, score), or with plain tags
        each word with its tag and score."""
        out: list[Any] = [[] for _ in texts]
        if split is None or preds is None:
            return out
        for uid, probs in zip(raw.ids, word_probabilities(preds.outputs, split)):
            text = texts[int(uid)]
            out[int(uid)] = text_answer(task.scheme, task.labels, text, split_words(text), probs)
        return out

    def predict_split(self, task: TaskSpec, path: Path, text_a: str | int | None) -> dict[str, Any] | None:
        """A CoNLL file (JSON lines by their suffix), words where the task's splits have them."""
        fmt = "jsonl" if path.suffix in (".jsonl", ".json") else "conll"
        own = next((s.columns.text_a for s in task.splits.values() if s.format == fmt), None)
        word = text_a if text_a is not None else own if own is not None else (0 if fmt == "conll" else "tokens")
        if fmt == "conll" and isinstance(word, str) and word.isdigit():
            word = int(word)
        return {"format": fmt, "columns": {"text_a": word}}

    def prediction_file_lines(self, task: TaskSpec, raw: RawSplit, preds: Predictions, path: Path) -> list[str]:
        """The input file with each word's predicted tag: a last column of a CoNLL file (separated
        as the line's columns are), a ``predicted_tags`` field of a JSON-lines record."""
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        tags = _tag_names(task, preds.preds)
        if path.suffix in (".jsonl", ".json"):
            for start, sentence in zip(raw.lines, tags):
                lines[start - 1] = json.dumps({**json.loads(lines[start - 1]), "predicted_tags": sentence},
                                              ensure_ascii=False)
            return lines
        for start, sentence in zip(raw.lines, tags):
            for j, tag in enumerate(sentence):
                line = lines[start - 1 + j].rstrip()
                lines[start - 1 + j] = line + ("\t" if "\t" in line else " ") + tag
        return lines

    def has_report(self, task: TaskSpec) -> bool:
        return True

    def split_report(self, task: TaskSpec, split: TokenizedSplit, preds: np.ndarray) -> dict[str, Any] | None:
        gold, pred = _tag_names(task, split.word_labels or []), _tag_names(task, preds)
        if task.scheme == "plain":
            flat = [np.concatenate([np.asarray(s, dtype=np.int64) for s in x]) if len(x) else np.zeros(0)
                    for x in (split.word_labels or [], preds)]
            return class_report(task.name, list(task.labels), flat[0], flat[1])
        return entity_split_report(task.name, gold, pred)

    # ---- tasks check ---------------------------------------------------------------
    def label_stats(self, task: TaskSpec, raw: RawSplit, out: SplitCheck) -> None:
        """Tag counts; the scheme the file's tags (as written, before IOB1 is read into IOB2) read
        as and the tags that break the declared one; the entities of each type."""
        counts = Counter(tag for tags in raw.labels for tag in tags)
        out.labels = {label: counts.get(label, 0) for label in task.labels}
        written = _file_sentences(task.splits[out.split], Path(raw.source))
        breaks = [(s, issue) for s in written for issue in validate(s.tags or [], task.scheme or PLAIN)]
        out.extra["scheme_found"] = detect_scheme([s.tags or [] for s in written])
        out.extra["scheme_breaks"] = len(breaks)
        if breaks:
            s, issue = breaks[0]
            out.extra["first_break"] = f"line {s.line_of(issue.index)}, tag {issue.tag!r}: {issue.message}"
        if task.scheme != PLAIN:
            types = Counter(t for tags in raw.labels for t, _, _ in spans(tags))
            out.extra["entities"] = dict(sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))

    def check_warnings(self, task: TaskSpec, train: SplitCheck) -> list[str]:
        unseen = [label for label, n in train.labels.items() if n == 0]
        return [f"{task.name}/{train.split}: no training words tagged {', '.join(unseen)}"] if unseen else []

    def split_warnings(self, task: TaskSpec, split: SplitCheck, train: SplitCheck | None) -> list[str]:
        """Tags that break the declared scheme (and a file whose tags read as another scheme);
        tags of a dev/test split that no training word has."""
        where, out = f"{task.name}/{split.split}", []
        found, n = split.extra.get("scheme_found"), split.extra.get("scheme_breaks", 0)
        first = f" (first: {split.extra['first_break']})" if n else ""
        if found is not None and found != task.scheme and (n or task.scheme == PLAIN):
            out.append(f"{where}: the tags read as {found}, the task declares scheme {task.scheme}: {n} tags break "
                       f"{task.scheme}{first}; set scheme: {found} if the file is {found}")
        elif n:
            out.append(f"{where}: {n} tags break scheme {task.scheme}{first}; conlleval's rules read them")
        if train is not None and split is not train:
            unseen = [f"{tag} ({k} words)" for tag, k in split.labels.items() if k and not train.labels.get(tag)]
            if unseen:
                out.append(f"{where}: tags no training word has: {', '.join(unseen)}")
        return out

    def window_stats(self, task: TaskSpec, raw: RawSplit, tokenizer: Any, max_len: int) -> dict[str, float]:
        _, stats = encode_words(tokenizer, raw.words or [], None, max_length=max_len,
                                overlap=window_overlap(max_len))
        return {"rows": stats.sentences, "windows": stats.windows, "split": stats.split_sentences,
                "max": stats.max_windows}

    def check_lines(self, task: TaskSpec, split: SplitCheck) -> list[str]:
        lines = []
        if "scheme_found" in split.extra:
            n = split.extra["scheme_breaks"]
            lines.append(f"    scheme: {task.scheme} declared, the tags read as {split.extra['scheme_found']}; "
                         f"tags breaking {task.scheme}: {n}")
        if "entities" in split.extra:
            types = split.extra["entities"]
            lines.append(f"    entities: {sum(types.values())}"
                         + (f" ({', '.join(f'{t} {k}' for t, k in types.items())})" if types else ""))
        return lines

    # ---- tasks init ----------------------------------------------------------------
    def init_detect(self, path: Path) -> bool:
        """A CoNLL-style column file, or JSON lines with two lists of strings of equal length."""
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            return looks_like_tagged_jsonl(path)
        suffix = path.suffix.lower()
        return suffix in TAGGED_SUFFIXES and column_count(path, need_blank=suffix in (".txt", ".tsv")) is not None

    def init_draft(self, opts: InitOptions, files: dict[str, Path], name: str, folder: Path) -> InitDraft:
        """A task per tag column asked (``--label C[,C...]``; default: the last column), words from
        ``--text`` or the most varied column (``tagging/draft.py``)."""
        train_path = next(iter(files.values()))
        if opts.id:
            raise ConfigError("--id is not for tagging tasks (sentences are numbered)", field="id")
        fmt = "jsonl" if train_path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "conll"
        read = [read_tagged_file(role, p, fmt) for role, p in files.items()]
        train = read[0]

        def column(text: str, flag: str) -> Any:
            value: Any = int(text) if fmt == "conll" and text.lstrip("-").isdigit() else text
            if value not in train.columns:
                raise ConfigError(f"{flag}: no column {text} (the file's columns: "
                                  f"{', '.join(map(str, train.columns))})", path=str(train_path))
            return value

        if opts.text:
            word, word_note = column(opts.text[0], "--text"), "given with --text"
        else:
            word, word_note = word_column(train)
        tag_columns = [c for c in train.columns if c != word]
        if not tag_columns:
            raise ConfigError("no tag column beside the words", path=str(train_path))
        if opts.label:
            asked = [column(c.strip(), "--label") for c in opts.label.split(",") if c.strip()]
            label_note = "given with --label"
        else:
            asked = [tag_columns[-1]]
            others = [str(c) for c in tag_columns[:-1]]
            label_note = (f"the last {'column' if fmt == 'conll' else 'list field'}"
                          + (f" (also tags: {', '.join(others)}; --label {','.join(others + [str(asked[0])])} "
                             "drafts a task each)" if others else ""))
        if word in asked:
            raise ConfigError(f"--label: column {word} holds the words", path=str(train_path))
        paths = {f.role: relative_path(f.path, folder) for f in read}
        drafted = [(name if len(asked) == 1 else f"{name}_{c}", tag_column(c, read)) for c in asked]
        lines: list[str] = []
        for task_name, col in drafted:
            body = task_lines(task_name, col, word, word_note, label_note, read, paths)
            lines += body if len(drafted) == 1 else [f"- {body[0]}"] + [f"  {x}" for x in body[1:]]
        summary = "; ".join(f"task {n}, tagging (scheme {c.scheme}, "
                            f"{'column' if fmt == 'conll' else 'field'} {c.column}), input words, "
                            f"{len(c.labels)} labels" for n, c in drafted)
        return InitDraft(lines, [n for n, _ in drafted], "sentences", {f.role: f.sentences for f in read}, summary)

    # ---- export and serving ----------------------------------------------------------
    pipeline_tag: ClassVar[str] = "token-classification"

    def export_head(self, task: TaskSpec) -> dict[str, Any]:
        return {"outputs": len(task.labels), "per": "token"}

    def export_settings(self, task: TaskSpec, max_len: int) -> dict[str, Any]:
        """The scheme (``plain``: words with their tags are answered, not entities) and the words
        consecutive windows of a long text share."""
        return {"scheme": task.scheme, "overlap": window_overlap(max_len)}

    def present(self, labels: list[str], row: Any) -> Any:
        """The text's answer (``serve_answers``) as it is."""
        return row

    def serve_inputs(self, info: ServedTask, tokenizer: Any, max_len: int, text_a: list[str],
                     text_b: list[str] | None) -> EncodedInputs:
        """Each text split into words (``split_words``, as ``Run.predict``) and encoded as one
        window, or overlapping windows when longer than ``max_len`` (as ``mtdnn predict``); a text
        without words has none."""
        words = [split_words(text) for text in text_a]
        kept = [i for i, w in enumerate(words) if w]
        overlap = int(info.settings.get("overlap", window_overlap(max_len)))
        windows, _ = encode_words(tokenizer, [[w.word for w in words[i]] for i in kept], None, max_length=max_len,
                                  overlap=overlap)
        rows = {"input_ids": [list(w.input_ids) for w in windows], "attention_mask": [[1] * len(w) for w in windows]}
        if "token_type_ids" in tokenizer.model_input_names:
            rows["token_type_ids"] = [[0] * len(w) for w in windows]
        return EncodedInputs(rows, ServedTexts(list(text_a), words, kept, windows))

    def serve_answers(self, info: ServedTask, encoded: EncodedInputs, outputs: list[np.ndarray]) -> list[Any]:
        """Each text's entities (or, with plain tags, its words with their tags), as ``Run.predict``,
        from its windows' tag logits merged per word; [] for a text without words."""
        served: ServedTexts = encoded.state
        out: list[Any] = [[] for _ in served.texts]
        if not served.windows:
            return out
        merged = merge_windows(served.windows, [_softmax(np.asarray(o, dtype=np.float32)) for o in outputs])
        for s, i in enumerate(served.kept):
            out[i] = text_answer(info.settings.get("scheme"), info.labels, served.texts[i], served.words[i],
                                 np.stack(merged[s]))
        return out

    def card_labels(self, task: TaskSpec) -> str:
        if task.scheme == "plain":
            return "a tag per word: " + ", ".join(task.labels)
        types = sorted({parsed[1] for label in task.labels if (parsed := parse_tag(label)) is not None and parsed[1]})
        scheme = "iob2" if task.scheme == "iob1" else task.scheme
        return f"entities {', '.join(types)} (a tag per word, {scheme}: {', '.join(task.labels)})"

    def card_usage(self, task: TaskSpec, name: str, max_len: int) -> list[str] | None:
        return ["```python", "from transformers import pipeline", "",
                f'tagger = pipeline("token-classification", model="{name}", aggregation_strategy="first")',
                'tagger("EU rejects German call to boycott British lamb.")', "```", "",
                "`aggregation_strategy=\"first\"` reads each word's tag at its first sub-word, as mtdnn does."]

    def standard_folder(self, task: TaskSpec) -> tuple[dict[int, str], str | None]:
        """The tags the model predicts (IOB2 for an IOB1 file), one per output."""
        return dict(enumerate(task.labels)), "single_label_classification"

    def standard_folder_class(self, task: TaskSpec) -> tuple[str, str]:
        return "AutoModelForTokenClassification", "classifier"

    def onnx_metrics(self, task: TaskSpec, out: np.ndarray, batch: dict[str, torch.Tensor],
                     split: TokenizedSplit) -> dict[str, float]:
        """Entity F1 (or token accuracy) of the words, as evaluation scores them."""
        outputs = self.stack_outputs([self.eval_outputs(torch.from_numpy(np.asarray(out, dtype=np.float32)), batch)])
        return self.score(task, split, self.decide(task, outputs, split))

def _check_entity_labels(labels: list[str], scheme: str) -> None:
    """The labels of an entity scheme: ``O`` and ``P-TYPE`` tags with the prefixes the model
    predicts (B, I; with IOBES also E, S)."""
    if "O" not in labels:
        raise ValueError(f"a tagging task with scheme: {scheme} needs the label O")
    prefixes = SCHEME_PREFIXES[scheme]
    for label in labels:
        parsed = parse_tag(label)
        if parsed is None or parsed[0] not in prefixes:
            hint = " (an iob1 file is read into iob2: list B- and I- tags)" if scheme == "iob1" else ""
            raise ValueError(f"label '{label}' is not a tag of scheme {scheme} (O, or "
                             f"{'/'.join(p for p in prefixes if p != 'O')}-TYPE){hint}")


def _file_sentences(split: SplitSpec, path: Path) -> list[TaggedSentence]:
    """The split's sentences with their tags as the file writes them (None: unlabeled)."""
    cols = split.columns
    tag_col = cols.label if split.labeled else None
    if split.format == "conll":
        return read_conll(path, word_column=int(cols.text_a), tag_column=int(tag_col) if tag_col is not None else None)
    return read_tagged_jsonl(path, tokens_field=str(cols.text_a), tags_field=str(tag_col) if tag_col is not None
                             else None)


def _read_sentences(task: TaskSpec, split: SplitSpec, path: Path) -> list[TaggedSentence]:
    """The split's sentences, IOB1 tags read into IOB2, every tag one of the task's labels;
    sentences whose tags break the scheme are counted in the log (conlleval reads them)."""
    sentences = _file_sentences(split, path)
    tag_col = split.columns.label if split.labeled else None
    field = f"column {tag_col}" if split.format == "conll" else str(tag_col)
    if tag_col is None:
        return sentences
    if task.scheme == "iob1":
        for s in sentences:
            s.tags = iob1_to_iob2(s.tags)
    check_tags(sentences, task.labels, path, field)
    scheme = "iob2" if task.scheme == "iob1" else task.scheme
    broken = [(s, issues[0]) for s in sentences if (issues := validate(s.tags, scheme))]
    if broken:
        s, issue = broken[0]
        line = s.line + issue.index if s.words_on_lines else s.line
        log.warning("%s: %d sentences break scheme %s, read by conlleval's rules (first: line %d, tag %r: %s)",
                    path, len(broken), scheme, line, issue.tag, issue.message)
    return sentences


def window_overlap(max_len: int) -> int:
    """The most words consecutive windows of a sentence share: up to a quarter of a window's."""
    return min(WINDOW_OVERLAP, max(1, (max_len - 2) // 4))


def _tag_ids(task: TaskSpec, raw: RawSplit) -> list[list[int]] | None:
    """Each sentence's tag ids (None: an untagged split)."""
    index = {tag: i for i, tag in enumerate(task.labels)}
    tagged = bool(raw.labels) and raw.labels[0] is not None
    return [[index[t] for t in tags] for tags in raw.labels] if tagged else None


def _flat(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged integer rows as (values, offsets)."""
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    return np.asarray([v for r in rows for v in r], dtype=np.int64), offsets


def _row(arrays: dict[str, np.ndarray], name: str, i: int) -> list[int]:
    offsets = arrays[f"{name}_offsets"]
    return arrays[name][int(offsets[i]):int(offsets[i + 1])].tolist()


def _tokenized(task: TaskSpec, raw: RawSplit, tokenizer: Any, windows: list, tag_ids: list | None) -> dict[str, Any]:
    """The windows as the fields of a ``TokenizedSplit``: a row per window, token labels at first
    sub-words, a row's ``labels`` its count of labeled tokens."""
    if not windows:
        raise DataError(f"no sentences to tag (task '{task.name}', split '{raw.split}')", path=raw.source)
    ids = np.concatenate([np.asarray(w.input_ids, dtype=np.int32) for w in windows])
    seg = np.concatenate([np.asarray([SEG_SPECIAL if i is None else 0 for i in w.word_ids], dtype=np.int8)
                          for w in windows])
    offsets = np.zeros(len(windows) + 1, dtype=np.int64)
    np.cumsum([len(w.input_ids) for w in windows], out=offsets[1:])
    token_labels = np.concatenate([np.asarray(w.labels if w.labels is not None else [IGNORE] * len(w.input_ids),
                                              dtype=np.int64) for w in windows])
    per_row = np.asarray([sum(1 for t in (w.labels or []) if t != IGNORE) for w in windows], dtype=np.int64)
    type_ids = np.zeros(len(ids), dtype=np.int8) if "token_type_ids" in tokenizer.model_input_names else None
    return {"ids": ids, "type_ids": type_ids, "seg": seg, "offsets": offsets, "labels": per_row,
            "groups": np.arange(len(windows), dtype=np.int64), "uids": list(raw.ids), "token_labels": token_labels,
            "windows": windows, "word_labels": tag_ids}


@dataclass
class ServedTexts:
    """Served texts (``serve_inputs``): their words, the texts that have words (``kept``) and the
    windows of those (a window's ``sentence`` indexes ``kept``)."""

    texts: list[str]
    words: list[list[Word]]
    kept: list[int]
    windows: list[Window]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def text_answer(scheme: str | None, labels: list[str], text: str, words: list[Word], probs: np.ndarray) -> list:
    """A text's answer from its words' tag probabilities: its entities (type, character start and
    end, text, score), or with plain tags each word with its tag and score."""
    tags, scores = tags_and_scores(probs, labels)
    if scheme == "plain":
        return [{"word": w.word, "start": w.start, "end": w.end, "tag": tag, "score": score}
                for w, tag, score in zip(words, tags, scores)]
    return tags_to_entities(text, words, tags, scores)


def word_probabilities(outputs: np.ndarray, split: TokenizedSplit) -> list[np.ndarray]:
    """Each sentence's (words, tags) probabilities from its windows' kept outputs."""
    merged = merge_windows(split.windows or [], list(outputs))
    return [np.stack(words) if words else np.zeros((0, 0)) for words in merged]


def _tag_names(task: TaskSpec, tag_ids: Any) -> list[list[str]]:
    return [[task.labels[int(i)] for i in sentence] for sentence in tag_ids]


def entity_split_report(task: str, gold: list[list[str]], pred: list[list[str]]) -> dict[str, Any]:
    """The entity report of a split: precision, recall and F1 per type and micro, and the confusion
    of types among span-matched entities (row ``(none)``: predicted entities with no gold entity of
    that span; column ``(none)``: gold entities no prediction matches)."""
    report = report_dict(entity_report(gold, pred))
    confusion = type_confusion(gold, pred)
    types = confusion.rows[:-1]
    return {"task": task, "rows": len(gold), "labels": [*types, "(none)"],
            "precision": report["micro"]["precision"], "recall": report["micro"]["recall"],
            "f1": report["micro"]["f1"], "per_type": {k: v for k, v in report.items() if k != "micro"},
            "confusion_matrix": {"rows": "gold type ((none): a predicted entity without a gold one)",
                                 "columns": "predicted type ((none): a gold entity not predicted)",
                                 "matrix": confusion.counts.astype(int).tolist()}}
