#!/usr/bin/env python
"""Training and evaluation speed of mtdnn against Hugging Face ``Trainer``, side by side in one
process on one machine.

Systems (same encoder, data, batch size, max length 128, learning rate, optimiser, schedule,
dropout and head: a linear layer on [CLS]):

- ``mtdnn``            ``mtdnn.train`` (AdamW; times from the run's history.jsonl)
- ``trainer_default``  ``transformers.Trainer`` set up like run_glue's defaults: every example
                       padded to max_length=128, ``default_data_collator``
- ``trainer_dynamic``  ``Trainer`` with dynamic padding (``DataCollatorWithPadding``) and
                       ``group_by_length=True``

Measured on MRPC (a fixed random subset of train, seeded; the full dev set for the metric), and on
a multi-task mix of RTE, MRPC, STS-B, CoLA and SST-2: mtdnn trains all five in one run (the paper's
Algorithm 1); Trainer, a single-task trainer, runs the five tasks one after the other on the same
subsets and its times are summed.

Two scenarios with heads of their own (each system's usual head on the same encoder):

- CoNLL-2003 NER (a seeded subset of train, the first dev sentences, IOB2): mtdnn's tagging task
  (windows of whole words, each word's tag at its first sub-word) against ``Trainer`` with
  ``AutoModelForTokenClassification`` and ``DataCollatorForTokenClassification`` (the usual
  preprocessing: ``is_split_into_words``, cut to the max length), with the default sampler
  (``trainer_default``) and with ``group_by_length`` (``trainer_dynamic``); entity F1 on dev.
- squad11 QA (the first questions of its training and of its held-out articles, windows of
  ``--qa-max-length`` tokens): mtdnn's span task against ``Trainer`` with
  ``AutoModelForQuestionAnswering`` and the usual windowed preprocessing (``truncation="only_second"``,
  ``return_overflowing_tokens``, the same stride, offsets; n-best decoding of start + end logits),
  windows padded to the max length with ``default_data_collator`` (``trainer_default``, run_qa's
  way) or padded per batch with ``group_by_length`` (``trainer_dynamic``); exact match and F1.

Their examples are sentences and questions, the same for every system (QA windows differ slightly:
each system cuts its own); Trainer's evaluation time includes its decoding and metrics, as mtdnn's
does. ``--ner-examples 0`` / ``--qa-examples 0`` skip them.

Reported: training examples/s and real-token/s (non-pad tokens), evaluation examples/s, peak
memory (RSS high-water mark of the phase, sampled every 10 ms; on CUDA also max_memory_allocated),
the dev metric after the same number of epochs, and each system's model FLOP utilisation (MFU)
against the dense matmul FLOP/s measured in the same run. Model FLOPs: 6 * N * tokens for training
and 2 * N * tokens for inference, N = the non-embedding parameters (encoder layers + head; the
token/position embeddings are lookups), tokens = the real (non-pad) tokens: padding is work a
system does but not useful work; attention-score FLOPs are not counted.

    python bench/throughput.py --quick                    # < 3 minutes on a 2-core CPU
    python bench/throughput.py                            # the full run
    python bench/throughput.py --device cuda --precision bf16 --batch-size 64 [--compile]

The last line printed is one JSON object (speed-ups, MFU, all measurements; ``scenarios``: the NER
and QA ratios of train and eval examples/s, mtdnn over each Trainer system).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

MIX = ["rte", "mrpc", "stsb", "cola", "sst2"]
SYSTEMS = ["mtdnn", "trainer_dynamic", "trainer_default"]  # default order: mtdnn pays any first-run cost
# on request (--systems): mtdnn without the last-layer [CLS] pruning, to show what it contributes
EXTRA_SYSTEMS = ["mtdnn_no_prune"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small subsets, 1 epoch: < 3 minutes on a 2-core CPU")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=128, help="the same for every system")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--epochs", type=int, default=None, help="default: 1 (--quick), 3")
    p.add_argument("--train-examples", type=int, default=None,
                   help="MRPC training subset (seeded); default: 256 (--quick), 1000; 0 = all 3668")
    p.add_argument("--mix-examples", type=int, default=None,
                   help="training rows per task of the mix; default 16 (--quick), 200; 0 = skip the mix")
    p.add_argument("--mix-eval-examples", type=int, default=None,
                   help="first N dev rows per task of the mix; default 16 (--quick), 300")
    p.add_argument("--ner-examples", type=int, default=None,
                   help="CoNLL-2003 NER training sentences (seeded subset); default 64 (--quick), 1000; 0 = skip NER")
    p.add_argument("--ner-eval-examples", type=int, default=None, help="first N dev sentences; default 64 (--quick), 500")
    p.add_argument("--qa-examples", type=int, default=None,
                   help="squad11 training questions (the first of its training articles); default 24 (--quick), 300; "
                        "0 = skip QA")
    p.add_argument("--qa-eval-examples", type=int, default=None,
                   help="first N questions of squad11's held-out articles; default 24 (--quick), 200")
    p.add_argument("--qa-max-length", type=int, default=384, help="QA window length (stride: a quarter of it, at most 128)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads, the same for every system (CPU; default: all cores, or 1 when the "
                        "load average is above half the cores)")
    p.add_argument("--num-workers", type=int, default=None, help="mtdnn DataLoader workers (default: 0 on CPU, 2 on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile in both mtdnn and Trainer")
    p.add_argument("--repeats", type=int, default=1, help="run every MRPC measurement N times (rotating the order); medians")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS + EXTRA_SYSTEMS)
                   + " (mtdnn_no_prune: mtdnn with --no-cls-only-last-layer)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", default=None, help="default: $MTDNN_DATA_DIR, else ./data")
    p.add_argument("--json-out", default=None, help="also write the JSON result to this file")
    a = p.parse_args(argv)
    quick = a.quick
    a.epochs = a.epochs or (1 if quick else 3)
    if a.train_examples is None:
        a.train_examples = 256 if quick else 1000
    if a.mix_examples is None:
        a.mix_examples = 16 if quick else 200
    if a.mix_eval_examples is None:
        a.mix_eval_examples = 16 if quick else 300
    for name, quick_n, full_n in (("ner_examples", 64, 1000), ("ner_eval_examples", 64, 500),
                                  ("qa_examples", 24, 300), ("qa_eval_examples", 24, 200)):
        if getattr(a, name) is None:
            setattr(a, name, quick_n if quick else full_n)
    if a.num_workers is None:
        a.num_workers = 2 if a.device == "cuda" else 0
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    bad = [s for s in a.systems if s not in SYSTEMS + EXTRA_SYSTEMS]
    if bad:
        p.error(f"unknown system(s) {bad}; choose from {SYSTEMS}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is available here")
    return a


# ----------------------------------------------------------------------------- measuring
class PeakMemory:
    """Peak resident memory (MiB) while the block runs, sampled from /proc/self/statm by a thread
    (the process's ru_maxrss high-water mark cannot be reset between systems); on CUDA also
    ``torch.cuda.max_memory_allocated``."""

    def __init__(self, device: torch.device, interval: float = 0.01) -> None:
        self.device, self.interval = device, interval
        self.peak_rss_mib = float("nan")
        self.cuda_peak_mib: float | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page / 2**20
        except OSError:  # not Linux: the process's high-water mark (KiB on Linux, bytes on macOS)
            import resource
            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return r / 2**20 if sys.platform == "darwin" else r / 1024

    def __enter__(self) -> "PeakMemory":
        self._stop = threading.Event()
        self.peak_rss_mib = self._rss()

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self.peak_rss_mib = max(self.peak_rss_mib, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss_mib = max(self.peak_rss_mib, self._rss())
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.cuda_peak_mib = torch.cuda.max_memory_allocated() / 2**20


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.5) -> float:
    """Best dense matmul FLOP/s of ``n x n @ n x n`` over ~``seconds`` of repeats."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, t_end = 0.0, time.perf_counter() + seconds
    reps = 1 if device.type == "cpu" else 20
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, reps * 2 * n ** 3 / (time.perf_counter() - t))
    return best


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, non-embedding parameters): embeddings modules' weights are lookups."""
    total = sum(p.numel() for p in model.parameters())
    emb = 0
    for name, mod in model.named_modules():
        if name.endswith("embeddings") and not name.endswith("_embeddings"):  # BertEmbeddings
            emb += sum(p.numel() for p in mod.parameters())
    return total, total - emb


# ----------------------------------------------------------------------------- data
def linear_task_file(folder: Path, names: list[str]) -> Path:
    """The built-in task definitions with a linear [CLS] head (what Trainer's model has)."""
    from mtdnn.tasks.registry import builtin_tasks

    tasks = builtin_tasks()
    out = []
    for n in names:
        d = tasks[n].model_dump(mode="json")
        d["head"] = {"kind": "linear"}
        out.append(d)
    path = folder / "linear_tasks.yaml"
    path.write_text(yaml.safe_dump(out, sort_keys=False), encoding="utf-8")
    return path


def load_data(task_file: Path, names: list[str], tokenizer, args, n_train: int | None, n_eval: int | None,
              cache_dir: Path):
    """mtdnn's own pipeline: the same seeded subsets and tokens every system gets."""
    from mtdnn.data.pipeline import load_task_data
    from mtdnn.data.readers import data_dir_default
    from mtdnn.tasks.registry import TaskRegistry

    tasks = TaskRegistry([task_file]).resolve(names)
    data = load_task_data(tasks, tokenizer, data_dir=args.data_dir or data_dir_default(), max_len=args.max_length,
                          cache_dir=cache_dir, max_train_examples=n_train, max_eval_examples=n_eval,
                          subset_seed=args.seed, allow_hub=False, with_tests=False)
    return tasks, data


def hf_dataset(split, pad_to: int | None, pad_id: int):
    """A ``datasets.Dataset`` of the rows of an mtdnn TokenizedSplit (as run_glue's tokenisation
    would give: input_ids, token_type_ids, attention_mask, labels; padded to ``pad_to`` if set)."""
    from datasets import Dataset

    ids, tts, masks = [], [], []
    for i in range(len(split)):
        row, tt, _ = split.row(i)
        row, tt = row.tolist(), (tt.tolist() if tt is not None else [0] * len(row))
        n_pad = (pad_to - len(row)) if pad_to else 0
        ids.append(row + [pad_id] * n_pad)
        tts.append(tt + [0] * n_pad)
        masks.append([1] * len(row) + [0] * n_pad)
    labels = split.labels.tolist()
    return Dataset.from_dict({"input_ids": ids, "token_type_ids": tts, "attention_mask": masks, "labels": labels})


# ----------------------------------------------------------------------------- systems
def run_mtdnn(args, task_file: Path, names: list[str], n_train: int | None, n_eval: int | None, work: Path,
              tag: str, prune: bool = True) -> dict:
    import mtdnn
    from mtdnn.model.multitask import default_encoder_path

    out_dir = work / f"mtdnn-{tag}"
    cfg = mtdnn.make_config(overrides=dict(
        tasks=names, task_files=[str(task_file)], data_dir=args.data_dir, encoder=default_encoder_path(),
        output_dir=str(out_dir), epochs=args.epochs, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size, lr=args.lr, optimizer="adamw", weight_decay=0.01,
        warmup_ratio=0.1, max_grad_norm=1.0, max_seq_len=args.max_length, max_train_examples=n_train,
        max_eval_examples=n_eval, subset_seed=args.seed, seed=args.seed, group_by_length=True,
        eval_every=args.epochs, selection="last", predict_test=False, allow_hub=False,
        cache_dir=str(work / "cache"), device=args.device, precision=args.precision, threads=args.threads,
        compile=args.compile, num_workers=args.num_workers, progress=False, cls_only_last_layer=prune))
    device = torch.device(args.device)
    with PeakMemory(device) as mem:
        run_dir = mtdnn.train(cfg)
    hist = [json.loads(line) for line in (Path(run_dir) / "history.jsonl").read_text().splitlines() if line.strip()]
    dev = hist[-1]["dev"]
    return {"train_seconds": sum(h["train_seconds"] for h in hist),
            "eval_seconds": hist[-1]["eval_seconds"],
            "train_examples": sum(h["train_examples"] for h in hist),
            "dev": {t: next(iter(m.values())) for t, m in dev.items()},
            "peak_rss_mib": mem.peak_rss_mib, "cuda_peak_mib": mem.cuda_peak_mib}


class _ClsPooler(torch.nn.Module):
    """Bert's pooler replaced by the [CLS] hidden state itself: the classifier is then dropout +
    linear on [CLS], mtdnn's linear head."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[:, 0]


def trainer_model(task, encoder_path: str):
    from transformers import AutoModelForSequenceClassification

    n = task.num_outputs
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder_path, num_labels=n, attn_implementation="sdpa",
        problem_type="regression" if task.type == "regression" else "single_label_classification")
    base = getattr(model, model.base_model_prefix)
    base.pooler = _ClsPooler()
    return model


def trainer_fit_predict(args, model, train_ds, eval_ds, collator, group_by_length: bool, work: Path, tag: str):
    """Train ``model`` with ``Trainer`` for ``args.epochs`` epochs (the epochs' own seconds), then
    predict ``eval_ds`` (timed). Returns (train seconds, prediction output, eval seconds, PeakMemory)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    class EpochTimer(TrainerCallback):  # the epochs' own time, like mtdnn's train_seconds
        def __init__(self) -> None:
            self.seconds, self._t0 = 0.0, None

        def on_epoch_begin(self, a, state, control, **kw):
            sync()
            self._t0 = time.perf_counter()

        def on_epoch_end(self, a, state, control, **kw):
            sync()
            self.seconds += time.perf_counter() - self._t0

    steps = math.ceil(len(train_ds) / args.batch_size) * args.epochs
    grouping = {}
    if group_by_length:  # group_by_length=True (transformers 5 names it train_sampling_strategy)
        grouping = ({"train_sampling_strategy": "group_by_length"}
                    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__ else {"group_by_length": True})
    targs = TrainingArguments(**grouping,
        output_dir=str(work / f"trainer-{tag}"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size, learning_rate=args.lr, num_train_epochs=args.epochs,
        weight_decay=0.01, warmup_steps=int(round(0.1 * steps)), max_grad_norm=1.0, lr_scheduler_type="linear",
        seed=args.seed, save_strategy="no", eval_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=device.type == "cpu", bf16=args.precision == "bf16",
        torch_compile=args.compile, dataloader_num_workers=0)
    timer = EpochTimer()
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
                      data_collator=collator, callbacks=[timer])
    with contextlib.suppress(Exception):  # its end-of-training print
        from transformers.trainer_callback import PrinterCallback
        trainer.remove_callback(PrinterCallback)
    with PeakMemory(device) as mem:
        trainer.train()
        sync()
        t0 = time.perf_counter()
        out = trainer.predict(eval_ds)
        sync()
        eval_seconds = time.perf_counter() - t0
    del trainer
    return timer.seconds, out, eval_seconds, mem


def run_trainer(args, task, train_split, eval_split, dynamic: bool, pad_id: int, tokenizer, work: Path,
                tag: str) -> dict:
    """One Trainer run: train ``args.epochs`` epochs, then predict the dev split (timed)."""
    from transformers import DataCollatorWithPadding, default_data_collator

    from mtdnn.metrics import compute_metrics
    from mtdnn.model.multitask import default_encoder_path

    pad_to = None if dynamic else args.max_length
    train_ds, eval_ds = hf_dataset(train_split, pad_to, pad_id), hf_dataset(eval_split, pad_to, pad_id)
    torch.manual_seed(args.seed)
    model = trainer_model(task, default_encoder_path())
    collator = DataCollatorWithPadding(tokenizer) if dynamic else default_data_collator
    train_seconds, out, eval_seconds, mem = trainer_fit_predict(args, model, train_ds, eval_ds, collator, dynamic,
                                                                work, tag)
    logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
    preds = logits.reshape(-1) if task.type == "regression" else logits.argmax(-1)
    metrics = compute_metrics(task.metrics, preds, eval_split.labels)
    del model
    return {"train_seconds": train_seconds, "eval_seconds": eval_seconds,
            "train_examples": len(train_ds) * args.epochs, "dev": {task.name: metrics},
            "peak_rss_mib": mem.peak_rss_mib, "cuda_peak_mib": mem.cuda_peak_mib}


# ----------------------------------------------------------------------------- NER and QA scenarios
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def ner_files(data_dir: Path, work: Path, n_train: int, n_eval: int, seed: int) -> tuple[Path, list, list]:
    """A seeded random subset of CoNLL-2003 NER train and the first ``n_eval`` dev sentences, in
    IOB2, written as two-column files with a task file for mtdnn (train and dev only); the same
    sentences feed Trainer. Returns (task file, train sentences, dev sentences)."""
    from mtdnn.tagging.readers import read_conll
    from mtdnn.tagging.schemes import iob1_to_iob2

    def read(name: str) -> list:
        sentences = read_conll(data_dir / "conll2003" / name, word_column=0, tag_column=3)
        for x in sentences:
            x.tags = iob1_to_iob2(x.tags)
        return sentences

    train = read("eng.train")
    train = [train[i] for i in sorted(np.random.default_rng(seed).choice(len(train), min(n_train, len(train)), replace=False))]
    dev = read("eng.testa")[:n_eval]
    folder = work / "ner"
    folder.mkdir(parents=True, exist_ok=True)
    for name, sentences in (("train.conll", train), ("dev.conll", dev)):
        (folder / name).write_text("".join("".join(f"{w} {t}\n" for w, t in zip(x.words, x.tags)) + "\n"
                                           for x in sentences), encoding="utf-8")
    task = {"name": "ner_bench", "type": "tagging", "input": "words", "scheme": "iob2", "labels": NER_LABELS,
            "metrics": ["f1", "precision", "recall"],
            "splits": {r: {"role": r, "path": str(folder / f"{r}.conll"), "format": "conll", "columns": {"text_a": 0, "label": 1}}
                       for r in ("train", "dev")}}
    path = folder / "tasks.yaml"
    path.write_text(yaml.safe_dump([task], sort_keys=False), encoding="utf-8")
    return path, train, dev


def ner_hf_dataset(sentences: list, tokenizer, max_length: int):
    """The usual token-classification preprocessing: words tokenised with ``is_split_into_words``,
    cut to ``max_length``, each word's tag on its first sub-word (-100 elsewhere); no padding
    (``DataCollatorForTokenClassification`` pads). Returns the dataset and each sentence's
    first sub-word positions."""
    from datasets import Dataset

    index = {t: i for i, t in enumerate(NER_LABELS)}
    enc = tokenizer([x.words for x in sentences], is_split_into_words=True, truncation=True, max_length=max_length)
    labels, firsts = [], []
    for i, x in enumerate(sentences):
        row, prev = [], None
        for w in enc.word_ids(i):
            row.append(-100 if w is None or w == prev else index[x.tags[w]])
            prev = w
        labels.append(row)
        firsts.append([j for j, t in enumerate(row) if t != -100])
    return Dataset.from_dict({**{k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc},
                              "labels": labels}), firsts


def run_trainer_ner(args, train: list, dev: list, group_by_length: bool, tokenizer, work: Path, tag: str) -> dict:
    """Trainer with ``AutoModelForTokenClassification`` and ``DataCollatorForTokenClassification``;
    eval time includes reading each word's tag at its first sub-word and the entity F1."""
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

    from mtdnn.model.multitask import default_encoder_path
    from mtdnn.tagging.metrics import entity_metrics

    train_ds, _ = ner_hf_dataset(train, tokenizer, args.max_length)
    eval_ds, firsts = ner_hf_dataset(dev, tokenizer, args.max_length)
    torch.manual_seed(args.seed)
    model = AutoModelForTokenClassification.from_pretrained(default_encoder_path(), num_labels=len(NER_LABELS),
                                                            attn_implementation="sdpa")
    train_seconds, out, eval_seconds, mem = trainer_fit_predict(
        args, model, train_ds, eval_ds, DataCollatorForTokenClassification(tokenizer), group_by_length, work, tag)
    t0 = time.perf_counter()
    pred = []
    for logits, positions, x in zip(out.predictions, firsts, dev):
        tags = [NER_LABELS[int(k)] for k in logits[positions].argmax(-1)]
        pred.append(tags + ["O"] * (len(x.words) - len(tags)))  # words cut by max_length: O
    metrics = entity_metrics([x.tags for x in dev], pred)
    eval_seconds += time.perf_counter() - t0
    del model
    return {"train_seconds": train_seconds, "eval_seconds": eval_seconds, "train_examples": len(train) * args.epochs,
            "dev": {"ner": {"f1": metrics["f1"]}}, "peak_rss_mib": mem.peak_rss_mib, "cuda_peak_mib": mem.cuda_peak_mib}


def qa_files(data_dir: Path, work: Path, n_train: int, n_eval: int) -> tuple[Path, list, list]:
    """The first ``n_train`` questions of squad11's training articles and the first ``n_eval`` of
    its held-out ones, written as SQuAD files with a task file for mtdnn; the same questions feed
    Trainer. Returns (task file, train examples, dev examples)."""
    from mtdnn.span.readers import SQUAD11_DEV_N_TRAIN_ARTICLES, read_squad_json

    everything = read_squad_json(data_dir / "squad/v1.1/dev-v1.1.json")
    train_titles = set(list(dict.fromkeys(x.title for x in everything))[:SQUAD11_DEV_N_TRAIN_ARTICLES])
    train = [x for x in everything if x.title in train_titles][:n_train]
    dev = [x for x in everything if x.title not in train_titles][:n_eval]
    folder = work / "qa"
    folder.mkdir(parents=True, exist_ok=True)
    for name, examples in (("train.json", train), ("dev.json", dev)):
        data = [{"title": x.title, "paragraphs": [{"context": x.context, "qas": [
            {"id": x.id, "question": x.question, "answers": [{"text": a, "answer_start": st} for a, st in x.answers]}]}]}
            for x in examples]
        (folder / name).write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    task = {"name": "qa_bench", "type": "span", "input": "question_context", "metrics": ["exact", "f1"],
            "splits": {r: {"role": r, "path": str(folder / f"{r}.json"), "format": "squad"} for r in ("train", "dev")}}
    path = folder / "tasks.yaml"
    path.write_text(yaml.safe_dump([task], sort_keys=False), encoding="utf-8")
    return path, train, dev


def qa_features(examples: list, tokenizer, max_length: int, stride: int, pad: bool, train: bool):
    """The usual windowed QA preprocessing: question and context tokenised together, the context cut
    into windows (``truncation="only_second"``, ``return_overflowing_tokens``, ``stride``) with
    offsets; training windows get start/end positions ([CLS] when the answer is outside),
    evaluation windows keep their example and the offsets of context tokens only."""
    from datasets import Dataset

    enc = tokenizer([x.question for x in examples], [x.context for x in examples], truncation="only_second",
                    max_length=max_length, stride=stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding="max_length" if pad else False)
    keep = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
    starts, ends, owners, offsets = [], [], [], []
    for f, sample in enumerate(enc["overflow_to_sample_mapping"]):
        seq = enc.sequence_ids(f)
        offs = enc["offset_mapping"][f]
        x = examples[sample]
        if train:
            text, char = x.answers[0]
            first = seq.index(1)
            last = len(seq) - 1 - seq[::-1].index(1)
            s_tok = e_tok = 0
            if offs[first][0] <= char and offs[last][1] >= char + len(text):
                s_tok = next(i for i in range(first, last + 1) if offs[i][1] > char)
                e_tok = next(i for i in range(last, first - 1, -1) if offs[i][0] < char + len(text))
            starts.append(s_tok)
            ends.append(e_tok)
        else:
            owners.append(sample)
            offsets.append([o if seq[i] == 1 else None for i, o in enumerate(offs)])
    if train:
        return Dataset.from_dict({**keep, "start_positions": starts, "end_positions": ends}), None
    return Dataset.from_dict(keep), (owners, offsets)


def qa_answers(examples: list, owners: list, offsets: list, start_logits, end_logits, n_best: int = 20,
               max_answer: int = 30) -> dict[str, str]:
    """Each question's best span over its windows: the n-best starts and ends of every window,
    spans within the context of at most ``max_answer`` tokens, scored by start + end logit."""
    best: dict[int, tuple[float, str]] = {}
    for f, sample in enumerate(owners):
        s_log, e_log, offs = start_logits[f], end_logits[f], offsets[f]
        for s in np.argsort(s_log)[::-1][:n_best]:
            for e in np.argsort(e_log)[::-1][:n_best]:
                if s >= len(offs) or e >= len(offs) or offs[s] is None or offs[e] is None or e < s or e - s + 1 > max_answer:
                    continue
                score = float(s_log[s] + e_log[e])
                if sample not in best or score > best[sample][0]:
                    best[sample] = (score, examples[sample].context[offs[s][0]:offs[e][1]])
    return {x.id: best.get(i, (0.0, ""))[1] for i, x in enumerate(examples)}


def run_trainer_qa(args, train: list, dev: list, dynamic: bool, tokenizer, work: Path, tag: str, max_length: int,
                   stride: int) -> dict:
    """Trainer with ``AutoModelForQuestionAnswering``: run_qa's way (windows padded to max_length,
    ``default_data_collator``) or dynamic padding with ``group_by_length``; eval time includes the
    windows' tokenisation, the n-best decoding and the SQuAD metrics."""
    from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding, default_data_collator

    from mtdnn.model.multitask import default_encoder_path
    from mtdnn.span.metrics import squad_scores

    train_ds, _ = qa_features(train, tokenizer, max_length, stride, not dynamic, True)
    eval_ds, (owners, offsets) = qa_features(dev, tokenizer, max_length, stride, not dynamic, False)
    torch.manual_seed(args.seed)
    model = AutoModelForQuestionAnswering.from_pretrained(default_encoder_path(), attn_implementation="sdpa")
    collator = DataCollatorWithPadding(tokenizer) if dynamic else default_data_collator
    qargs = argparse.Namespace(**{**vars(args), "max_length": max_length})
    train_seconds, out, eval_seconds, mem = trainer_fit_predict(qargs, model, train_ds, eval_ds, collator, dynamic,
                                                                work, tag)
    t0 = time.perf_counter()
    start_logits, end_logits = out.predictions[:2]
    answers = qa_answers(dev, owners, offsets, start_logits, end_logits)
    metrics = squad_scores(answers, {x.id: x.answer_texts for x in dev}, rules="v1.1")
    eval_seconds += time.perf_counter() - t0
    del model
    return {"train_seconds": train_seconds, "eval_seconds": eval_seconds, "train_examples": len(train) * args.epochs,
            "dev": {"qa": {"exact": metrics["exact"], "f1": metrics["f1"]}},
            "peak_rss_mib": mem.peak_rss_mib, "cuda_peak_mib": mem.cuda_peak_mib}


def run_scenario(args, name: str, task_file: Path, n_train: int, n_eval: int, work: Path, max_length: int,
                 trainer: dict) -> dict:
    """mtdnn and the Trainer systems on one task of ``task_file`` (its own head); examples are
    sentences or questions, the same for every system. Returns system -> measurements."""
    out = {}
    for system in args.systems:
        if system not in ("mtdnn", *trainer):
            continue
        t0 = time.perf_counter()
        if system == "mtdnn":
            margs = argparse.Namespace(**{**vars(args), "max_length": max_length})
            r = run_mtdnn(margs, task_file, [f"{name}_bench"], None, None, work, f"mtdnn-{name}")
            r["train_examples"] = n_train * args.epochs
        else:
            r = trainer[system]()
        r["wall_seconds"] = time.perf_counter() - t0
        r["eval_examples"] = n_eval
        r["train_ex_s"], r["eval_ex_s"] = r["train_examples"] / r["train_seconds"], n_eval / r["eval_seconds"]
        out[system] = r
        print(f"# {system} {name}: train {r['train_seconds']:.1f} s, eval {r['eval_seconds']:.1f} s, "
              f"wall {r['wall_seconds']:.0f} s, dev {json.dumps(r['dev'])}", flush=True)
    return out


def scenario_ratios(tab: dict) -> dict:
    """mtdnn's train and eval examples/s over each Trainer system's."""
    out = {}
    for other in ("trainer_default", "trainer_dynamic"):
        if "mtdnn" in tab and other in tab:
            for key, word in (("train_ex_s", "train"), ("eval_ex_s", "eval")):
                out[f"{word}_speedup_vs_{other}"] = round(tab["mtdnn"][key] / tab[other][key], 3)
    return out


def fmt_scenario(title: str, unit: str, tab: dict) -> str:
    head = f"{'system':<18} {'train ' + unit + '/s':>16} {'eval ' + unit + '/s':>16} {'peak MiB':>9}  dev"
    lines = [title, head, "-" * len(head)]
    for system, r in tab.items():
        mem = r["cuda_peak_mib"] if r.get("cuda_peak_mib") is not None else r["peak_rss_mib"]
        lines.append(f"{system:<18} {r['train_ex_s']:>16.1f} {r['eval_ex_s']:>16.1f} {mem:>9.0f}  "
                     + ", ".join(f"{k} {v:.1f}" for m in r["dev"].values() for k, v in m.items()))
    return "\n".join(lines)


def warm_up(args, device: torch.device) -> None:
    """A few forward/backward passes and AdamW steps so that the first system does not pay the
    process's first-call costs (kernels, heap growth) for the others."""
    from transformers import AutoModel

    from mtdnn.model.multitask import default_encoder_path
    from mtdnn.runtime import autocast

    enc = AutoModel.from_pretrained(default_encoder_path(), add_pooling_layer=False, attn_implementation="sdpa").to(device)
    enc.train()
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-9, fused=True)
    for length in (64, args.max_length):  # the full batch size: the heap grows to its working size
        ids = torch.randint(1000, 20000, (args.batch_size, length), device=device)
        with autocast(device, args.precision):
            enc(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, 0].sum().backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    del enc, opt


# ----------------------------------------------------------------------------- report
def summarize(r: dict, train_tokens: int, eval_tokens: int, eval_rows: int, n_params: int, peak: float) -> dict:
    ts, es = r["train_seconds"], r["eval_seconds"]
    return {**r,
            "train_ex_s": r["train_examples"] / ts, "train_tok_s": train_tokens / ts,
            "eval_ex_s": eval_rows / es, "eval_tok_s": eval_tokens / es,
            "mfu_train": 6 * n_params * train_tokens / ts / peak,
            "mfu_eval": 2 * n_params * eval_tokens / es / peak}


def median_result(runs: list[dict]) -> dict:
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[-1])
    for k in ("train_seconds", "eval_seconds", "peak_rss_mib"):
        out[k] = statistics.median(r[k] for r in runs)
    out["repeats"] = {k: [r[k] for r in runs] for k in ("train_seconds", "eval_seconds")}
    return out


def fmt_table(rows: list[tuple[str, dict]], metric_name: str) -> str:
    head = (f"{'system':<22} {'train ex/s':>10} {'train tok/s':>11} {'eval ex/s':>9} {'peak MiB':>9} "
            f"{'MFU train':>9} {'MFU eval':>8} {metric_name:>14}")
    lines = [head, "-" * len(head)]
    for name, r in rows:
        mem = r["cuda_peak_mib"] if r.get("cuda_peak_mib") is not None else r["peak_rss_mib"]
        dev = r.get("dev_score")
        lines.append(f"{name:<22} {r['train_ex_s']:>10.1f} {r['train_tok_s']:>11.0f} {r['eval_ex_s']:>9.1f} "
                     f"{mem:>9.0f} {100 * r['mfu_train']:>8.1f}% {100 * r['mfu_eval']:>7.1f}% "
                     f"{dev if isinstance(dev, str) else f'{dev:.2f}':>14}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from mtdnn.runtime import cpu_model

    args = parse_args(argv)
    t_start = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from datasets.utils.logging import disable_progress_bar
        disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    from mtdnn.data.readers import data_dir_default
    from mtdnn.model.multitask import default_encoder_path, load_encoder, load_tokenizer

    device = torch.device(args.device)
    threads_note = "given" if args.threads else "torch's default"
    if args.threads is None and device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        # on a machine busy with other work, threads that wait for each other at every op (a
        # preempted one stalls the rest) make every system 2-4x slower and the timings erratic
        args.threads, threads_note = (1, f"the machine is busy: load {load:.1f} on {cores} cores") \
            if cores > 1 and load > cores / 2 else (cores, "all cores")
    if args.threads:
        torch.set_num_threads(args.threads)
    n_mm = 2048 if device.type == "cpu" else 8192

    peaks = {"fp32": matmul_flops(device, torch.float32, n_mm)}
    if args.precision == "bf16":
        peaks["bf16"] = matmul_flops(device, torch.bfloat16, n_mm)
    peak = peaks[args.precision]

    tokenizer = load_tokenizer(default_encoder_path())
    pad_id = tokenizer.pad_token_id or 0
    enc = load_encoder(default_encoder_path())
    n_total, n_nonemb = count_params(enc)
    del enc

    work = Path(tempfile.mkdtemp(prefix="mtdnn-bench-"))
    atexit.register(shutil.rmtree, work, True)  # run dirs, checkpoints, caches: removed even on errors
    names_all = ["mrpc"] + ([t for t in MIX if t != "mrpc"] if args.mix_examples else [])
    task_file = linear_task_file(work, sorted(set(names_all)))
    n_train = args.train_examples or None
    tasks, data = load_data(task_file, ["mrpc"], tokenizer, args, n_train, None, work / "cache")
    mrpc, mrpc_data = tasks[0], data["mrpc"]
    dev_split = mrpc_data.evals["dev"]
    train_tokens = int(mrpc_data.train.lengths.sum()) * args.epochs
    eval_tokens, eval_rows = int(dev_split.lengths.sum()), len(dev_split)
    n_params = n_nonemb + head_params(mrpc)

    print(f"# device {device} ({cpu_model() if device.type == 'cpu' else torch.cuda.get_device_name()}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()} ({threads_note}), precision {args.precision}, "
          f"batch {args.batch_size}, eval batch {args.eval_batch_size}, max length {args.max_length}, lr {args.lr}, "
          f"epochs {args.epochs}", flush=True)
    print(f"# MRPC: {len(mrpc_data.train)} train rows (seed {args.seed}), {eval_rows} dev rows; "
          f"mean length {mrpc_data.train.lengths.mean():.1f} tokens; matmul peak "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
          + f"; N = {n_nonemb / 1e6:.1f}M non-embedding params ({n_total / 1e6:.1f}M in all)", flush=True)

    warm_up(args, device)
    results: dict[str, list[dict]] = {s: [] for s in args.systems}
    for rep in range(args.repeats):
        order = args.systems[rep % len(args.systems):] + args.systems[:rep % len(args.systems)]
        for system in order:
            t0 = time.perf_counter()
            if args.threads:
                torch.set_num_threads(args.threads)
            if system.startswith("mtdnn"):
                r = run_mtdnn(args, task_file, ["mrpc"], n_train, None, work, f"{system}-mrpc{rep}",
                              prune=system == "mtdnn")
            else:
                r = run_trainer(args, mrpc, mrpc_data.train, dev_split, system == "trainer_dynamic", pad_id,
                                tokenizer, work, f"{system}-mrpc{rep}")
            r["wall_seconds"] = time.perf_counter() - t0
            results[system].append(r)
            print(f"# {system} MRPC (repeat {rep + 1}): train {r['train_seconds']:.1f} s, eval {r['eval_seconds']:.1f} s, "
                  f"wall {r['wall_seconds']:.0f} s", flush=True)

    table = {s: summarize(median_result(rs), train_tokens, eval_tokens, eval_rows, n_params, peak)
             for s, rs in results.items()}
    for r in table.values():
        m = r["dev"]["mrpc"]
        r["dev_score"] = f"{m['f1']:.1f}/{m['accuracy']:.1f}"

    mix = {}
    if args.mix_examples:
        if args.threads:
            torch.set_num_threads(args.threads)
        mix_tasks, mix_data = load_data(task_file, MIX, tokenizer, args, args.mix_examples, args.mix_eval_examples,
                                        work / "cache")
        m_train_tokens = sum(int(d.train.lengths.sum()) for d in mix_data.values()) * args.epochs
        m_eval = [d.evals[t.selection_split] for t, d in zip(mix_tasks, mix_data.values())]
        m_eval_tokens, m_eval_rows = sum(int(s.lengths.sum()) for s in m_eval), sum(len(s) for s in m_eval)
        for system in args.systems:
            t0 = time.perf_counter()
            if system.startswith("mtdnn"):
                r = run_mtdnn(args, task_file, MIX, args.mix_examples, args.mix_eval_examples, work, f"{system}-mix",
                              prune=system == "mtdnn")
            else:
                parts = [run_trainer(args, t, mix_data[t.name].train, ev, system == "trainer_dynamic", pad_id,
                                     tokenizer, work, f"{system}-{t.name}") for t, ev in zip(mix_tasks, m_eval)]
                r = {"train_seconds": sum(p["train_seconds"] for p in parts),
                     "eval_seconds": sum(p["eval_seconds"] for p in parts),
                     "train_examples": sum(p["train_examples"] for p in parts),
                     "dev": {k: v for p in parts for k, v in p["dev"].items()},
                     "peak_rss_mib": max(p["peak_rss_mib"] for p in parts),
                     "cuda_peak_mib": max((p["cuda_peak_mib"] or 0) for p in parts) if device.type == "cuda" else None}
            r["wall_seconds"] = time.perf_counter() - t0
            s = summarize(r, m_train_tokens, m_eval_tokens, m_eval_rows, n_params, peak)
            s["dev_score"] = float(np.mean([m["score"] for m in s["dev"].values()]))
            mix[system] = s
            print(f"# {system} mix: train {r['train_seconds']:.1f} s, eval {r['eval_seconds']:.1f} s, "
                  f"wall {r['wall_seconds']:.0f} s", flush=True)

    scenarios: dict[str, dict] = {}
    data_dir = Path(args.data_dir or data_dir_default())
    if args.ner_examples:
        ner_file, ner_train, ner_dev = ner_files(data_dir, work, args.ner_examples, args.ner_eval_examples, args.seed)
        scenarios["ner"] = run_scenario(args, "ner", ner_file, len(ner_train), len(ner_dev), work, args.max_length, {
            "trainer_default": lambda: run_trainer_ner(args, ner_train, ner_dev, False, tokenizer, work, "default-ner"),
            "trainer_dynamic": lambda: run_trainer_ner(args, ner_train, ner_dev, True, tokenizer, work, "dynamic-ner")})
    if args.qa_examples:
        qa_file, qa_train, qa_dev = qa_files(data_dir, work, args.qa_examples, args.qa_eval_examples)
        stride = min(128, args.qa_max_length // 4)  # the span kind's default stride
        scenarios["qa"] = run_scenario(args, "qa", qa_file, len(qa_train), len(qa_dev), work, args.qa_max_length, {
            "trainer_default": lambda: run_trainer_qa(args, qa_train, qa_dev, False, tokenizer, work, "default-qa",
                                                      args.qa_max_length, stride),
            "trainer_dynamic": lambda: run_trainer_qa(args, qa_train, qa_dev, True, tokenizer, work, "dynamic-qa",
                                                      args.qa_max_length, stride)})

    print()
    print(f"MRPC ({len(mrpc_data.train)} train rows x {args.epochs} epoch(s), {eval_rows} dev rows), "
          f"{device}, {args.precision}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(fmt_table(list(table.items()), "dev F1/acc"))
    if mix:
        print()
        print(f"Multi-task mix {'+'.join(MIX)} ({args.mix_examples} train rows per task x {args.epochs} epoch(s), "
              f"first {args.mix_eval_examples} dev rows per task); Trainer = the 5 single-task runs back to back")
        print(fmt_table(list(mix.items()), "mean dev score"))

    if "ner" in scenarios:
        print()
        print(fmt_scenario(f"CoNLL-2003 NER ({args.ner_examples} train sentences x {args.epochs} epoch(s), "
                           f"{args.ner_eval_examples} dev sentences, max length {args.max_length}); Trainer: "
                           "DataCollatorForTokenClassification, default sampler / group_by_length", "sent", scenarios["ner"]))
    if "qa" in scenarios:
        print()
        print(fmt_scenario(f"squad11 QA ({args.qa_examples} train questions x {args.epochs} epoch(s), "
                           f"{args.qa_eval_examples} held-out questions, windows of {args.qa_max_length}); Trainer: "
                           "windows padded to max length (default) / dynamic padding + group_by_length", "q", scenarios["qa"]))

    def ratio(tab: dict, key: str, other: str) -> float | None:
        if "mtdnn" not in tab or other not in tab:
            return None
        return round(tab["mtdnn"][key] / tab[other][key], 3)

    keep = ("train_seconds", "eval_seconds", "train_examples", "train_ex_s", "train_tok_s", "eval_ex_s",
            "eval_tok_s", "mfu_train", "mfu_eval", "peak_rss_mib", "cuda_peak_mib", "dev", "repeats", "wall_seconds")
    result = {
        "train_speedup_vs_trainer_default": ratio(table, "train_ex_s", "trainer_default"),
        "train_speedup_vs_trainer_dynamic": ratio(table, "train_ex_s", "trainer_dynamic"),
        "eval_speedup_vs_trainer_default": ratio(table, "eval_ex_s", "trainer_default"),
        "eval_speedup_vs_trainer_dynamic": ratio(table, "eval_ex_s", "trainer_dynamic"),
        "mfu": {s: {"train": round(r["mfu_train"], 4), "eval": round(r["mfu_eval"], 4)} for s, r in table.items()},
        "mix": {"train_speedup_vs_trainer_default": ratio(mix, "train_ex_s", "trainer_default"),
                "train_speedup_vs_trainer_dynamic": ratio(mix, "train_ex_s", "trainer_dynamic"),
                "eval_speedup_vs_trainer_default": ratio(mix, "eval_ex_s", "trainer_default"),
                "eval_speedup_vs_trainer_dynamic": ratio(mix, "eval_ex_s", "trainer_dynamic"),
                "systems": {s: {k: v for k, v in r.items() if k in keep} for s, r in mix.items()}} if mix else None,
        "systems": {s: {k: v for k, v in r.items() if k in keep} for s, r in table.items()},
        "scenarios": {name: {**scenario_ratios(tab), "systems": {s: {k: v for k, v in r.items() if k in keep + ("eval_examples",)}
                                                                 for s, r in tab.items()}}
                      for name, tab in scenarios.items()},
        "matmul_flops": peaks, "peak_flops_used": peak, "mfu_params": n_params,
        "mfu_definition": "train 6*N*real_tokens/s, eval 2*N*real_tokens/s over the measured dense matmul "
                          f"FLOP/s ({args.precision}); N = non-embedding parameters (encoder layers + head)",
        "machine": {"device": str(device),
                    "name": cpu_model() if device.type == "cpu" else torch.cuda.get_device_name(),
                    "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "threads_note": threads_note, "torch": torch.__version__,
                    "transformers": __import__("transformers").__version__, "load_avg": os.getloadavg()},
        "args": {k: v for k, v in vars(args).items()},
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    line = json.dumps(result, default=float)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n", encoding="utf-8")
    print(line, flush=True)
    return 0


def head_params(task) -> int:
    """Parameters of a linear head on [CLS] (hidden size from the encoder's config)."""
    from transformers import AutoConfig

    from mtdnn.model.multitask import default_encoder_path

    hidden = AutoConfig.from_pretrained(default_encoder_path()).hidden_size
    return hidden * task.num_outputs + task.num_outputs


if __name__ == "__main__":
    sys.exit(main())
