"""The self-check of every export: the exported model's outputs against mtdnn's own model (the run's
checkpoint of the exported epoch, or an adapter run's encoder with each task's adapter; the plain
encoder without the [CLS]-only pruning) on real dev rows of each task, tokenised as mtdnn tokenises
them. The exported model gets only what a tokenizer gives (input ids, attention mask, token type
ids): the segments SAN and span heads read are derived by it. The values compared are those the
task's kind says decoding reads (``compared_outputs``: all of a sentence head's, a span head's at
the context tokens and the null position)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from ..data.batching import collate
from ..data.tokenized import tokenize_split
from ..errors import CheckpointError
from ..model.adapters import load_adapter_model
from ..model.multitask import MultiTaskModel, encoder_from_config
from ..records import RawSplit, TokenizedSplit
from ..tasks.schema import TaskDef
from ..model.weights import load_model_weights
from .plan import ExportPlan, check_rows

log = logging.getLogger(__name__)

# used where a task's dev file cannot be read here (the check then says so)
SAMPLE_PAIRS = [("A man is playing a guitar.", "A person plays music."),
                ("The cat sat on the mat.", "Nobody is on the mat."),
                ("Stocks fell sharply on Monday after the report.", "Markets rose."),
                ("She has lived in Paris since 2010.", "She lives in France.")]

Candidate = Callable[[dict[str, torch.Tensor], str], torch.Tensor]


def reference_model(plan: ExportPlan, task: TaskDef) -> MultiTaskModel:
    """mtdnn's model of the weights ``task`` is exported from (an adapter run: all its tasks)."""
    if plan.lora is not None:
        return load_adapter_model(plan.run, plan.tasks).eval()
    epoch = plan.epochs[task.name]
    assert epoch is not None, "a plain run's tasks all have an epoch"
    model = MultiTaskModel(encoder_from_config(plan.run.encoder_dir), plan.tasks)
    load_model_weights(model, plan.run.checkpoint(epoch))
    return model.eval()


def sample_rows(task: TaskDef) -> RawSplit:
    """The sample sentences as the task's rows, as ``Run.predict`` reads raw texts (``api_rows``)."""
    a = [p[0] for p in SAMPLE_PAIRS]
    b = [p[1] for p in SAMPLE_PAIRS] if task.has_text_b else None
    return RawSplit(task.name, "sample", "<samples>", **task.kind.api_rows(task, a, b))


def tokenized_batch(task: TaskDef, raw: RawSplit, tokenizer, max_len: int) -> tuple[TokenizedSplit,
                                                                                   dict[str, torch.Tensor]]:
    """The rows tokenised as mtdnn tokenises them (tagging: windows of words; span tasks: windows
    of question + context), and all of them as one batch (``seg`` included, as mtdnn computes it)."""
    split = tokenize_split(task, raw, tokenizer, max_len, cache_dir=None)
    return split, collate(split, np.arange(len(split)), tokenizer.pad_token_id or 0)


def tokenizer_batch(task: TaskDef, raw: RawSplit, tokenizer, max_len: int) -> dict[str, torch.Tensor]:
    """mtdnn's batch of the rows (``seg`` included, as mtdnn computes it)."""
    return tokenized_batch(task, raw, tokenizer, max_len)[1]


def check_against_mtdnn(plan: ExportPlan, candidate: Candidate, tokenizer, n_rows: int = 32,
                        tasks: list[TaskDef] | None = None) -> dict[str, float]:
    """Task -> the largest absolute difference between ``candidate(inputs, task)`` and mtdnn's
    model output on up to ``n_rows`` dev rows (sample sentences where the dev file is not here)."""
    tasks = tasks or plan.tasks
    diffs: dict[str, float] = {}
    max_len = int(plan.config["max_seq_len"])
    for key in sorted({plan.encoder_of(t.name) for t in tasks}):
        group = [t for t in tasks if plan.encoder_of(t.name) == key]
        ref = reference_model(plan, group[0])
        for t in group:
            raw = check_rows(plan, t, n_rows)
            if raw is None or len(raw) == 0:
                log.warning("task %s: no dev rows here, checked on %d sample sentences", t.name, len(SAMPLE_PAIRS))
                raw = sample_rows(t)
            batch = tokenizer_batch(t, raw, tokenizer, max_len)
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            with torch.inference_mode():
                want = ref(t.name, batch).float()
                got = torch.as_tensor(np.asarray(candidate(inputs, t.name), dtype=np.float32)).reshape(want.shape)
            diffs[t.name] = float((t.kind.compared_outputs(t, got, batch) - t.kind.compared_outputs(t, want, batch))
                                  .abs().max())
    return diffs


def require_close(diffs: dict[str, float], tol: float, what: str) -> None:
    """Every task's largest difference from mtdnn's outputs within ``tol``, else a CheckpointError."""
    bad = {t: d for t, d in diffs.items() if not d <= tol}
    if bad:
        shown = ", ".join(f"{t} {d:.2e}" for t, d in bad.items())
        raise CheckpointError(f"the {what} does not reproduce mtdnn's outputs (largest difference: {shown}; "
                              f"allowed {tol:g}); nothing was written")
