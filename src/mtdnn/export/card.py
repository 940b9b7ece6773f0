"""The model card (``README.md`` in the Hugging Face hub's format: YAML metadata, then Markdown) of an
exported folder: the tasks, their label sets and input kinds, the dev metrics of exactly the
exported weights, the training config, the encoder the run started from, and where it trained (the
run's ``environment.json``)."""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import CheckpointError
from ..tasks.schema import TaskDef
from .plan import ExportPlan

_TRAINING_KEYS = ("tasks", "epochs", "batch_size", "lr", "optimizer", "max_seq_len", "selection", "seed",
                  "max_train_examples", "precision")


def _encoder_name(plan: ExportPlan) -> str:
    return str(plan.config.get("encoder_resolved") or plan.config.get("encoder") or "unknown")


def _model_index(plan: ExportPlan, tasks: list[TaskDef], name: str) -> list[dict[str, Any]]:
    results = []
    for t in tasks:
        for split, values in (plan.metrics.get(t.name) or {}).items():
            metrics = [{"type": k, "value": round(float(v), 4), "name": f"{t.name} {split} {k}"}
                       for k, v in values.items() if k != "score"]
            if metrics:
                results.append({"task": {"type": t.kind.pipeline_tag, "name": t.name},
                                "dataset": {"name": t.name, "type": t.name, "split": split}, "metrics": metrics})
    return [{"name": name, "results": results}] if results else []


def _front_matter(plan: ExportPlan, tasks: list[TaskDef], name: str) -> str:
    tags = list(dict.fromkeys(t.kind.pipeline_tag for t in tasks))
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": tags[0],
                            "tags": ["mtdnn", "multi-task", *tags]}
    encoder = _encoder_name(plan)
    if not encoder.startswith(("/", ".", "~")) and "(" not in encoder:
        meta["base_model"] = encoder
    index = _model_index(plan, tasks, name)
    if index:
        meta["model-index"] = index
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _task_table(plan: ExportPlan, tasks: list[TaskDef]) -> list[str]:
    lines = ["| task | type | input | head | labels | epoch | dev metrics |", "|---|---|---|---|---|---|---|"]
    for t in tasks:
        m = plan.metrics.get(t.name) or {}
        shown = "; ".join(f"{s}: " + ", ".join(f"{k} {v:.2f}" for k, v in vals.items() if k != "score")
                          for s, vals in m.items()) or "not evaluated at this epoch"
        labels = t.kind.card_labels(t)
        head = t.head.kind + (f" (K={t.head.steps})" if t.head.kind == "san" else "")
        if t.head_from:
            head += f", {t.head_from}'s"
        epoch = plan.epochs[t.name]
        shown_epoch = epoch if epoch is not None else plan.carried_note()
        lines.append(f"| {t.name} | {t.type} | {t.input} | {head} | {labels} | {shown_epoch} | {shown} |")
    return lines


def _encoders_note(plan: ExportPlan, tasks: list[TaskDef], single: bool) -> str:
    if plan.lora is not None:
        return _lora_encoders_note(plan, tasks, single)
    epochs = sorted({e for t in tasks if (e := plan.epochs[t.name]) is not None})
    if len(epochs) == 1:
        return (f"One encoder for all tasks: the weights of epoch {epochs[0]}. The dev metrics above are "
                "those of these weights.")
    return (f"{len(epochs)} encoders, one per epoch the tasks keep ({', '.join(map(str, epochs))}): each task "
            "uses the encoder and head of its own best dev epoch (`--per-task-epochs`), so tasks of "
            "different epochs need separate encoder passes.")


def _lora_encoders_note(plan: ExportPlan, tasks: list[TaskDef], single: bool) -> str:
    """The model card's paragraph on the encoder of an adapter run's export."""
    assert plan.lora is not None
    adapters = {plan.adapter_of(t.name) for t in tasks}
    specs = plan.lora.specs
    shown = "; ".join(f"{a}: rank {s['rank']}, scaling {s['scaling']:g}, {len(s['layers'])} layers"
                      for a, s in specs.items() if a in adapters)
    plain = [t.name for t in tasks if plan.adapter_of(t.name) is None]
    note = f" Tasks without an adapter (carried over from a fully fine-tuned run): {', '.join(plain)}." if plain else ""
    if single:
        return ("The run trained a LoRA adapter per task on a frozen shared encoder; this folder's encoder is that "
                f"encoder with the task's adapter merged into its weights (W + scaling * B A; {shown or 'no adapter'})."
                + note)
    return ("One frozen encoder shared by all tasks, with a LoRA adapter per task (" + (shown or "none") + "): "
            "tasks with different adapters take separate encoder passes, tasks that share one (or have none) "
            "share a pass. Each task's adapter and head are those of the dev epoch it kept; the dev metrics "
            "above are theirs." + note)


def _usage(name: str, tasks: list[TaskDef], single: bool, onnx: bool = False, max_len: int = 512) -> list[str]:
    t = tasks[0]
    own = t.kind.card_usage(t, name, max_len) if single else None
    if own is not None:
        return own
    pair = t.has_text_b
    if onnx:
        args = '["A man is sleeping."], ["Nobody sleeps."]' if pair else '["A man is sleeping."]'
        return ["```python", "import onnxruntime as ort", "from transformers import AutoTokenizer", "",
                f'tok = AutoTokenizer.from_pretrained("{name}")', f'sess = ort.InferenceSession("{name}/model.onnx")',
                f'enc = tok({args}, truncation=True, return_tensors="np")',
                f'(out,) = sess.run(["{t.name}"], {{i.name: enc[i.name] for i in sess.get_inputs()}})', "```"]
    if single:
        call = ('clf({"text": "A man is sleeping.", "text_pair": "Nobody sleeps."})' if pair
                else 'clf("A man is sleeping.")')
        return ["```python", "from transformers import pipeline", "",
                f'clf = pipeline("text-classification", model="{name}")', call, "```"]
    args = '"A man is sleeping.", "Nobody sleeps."' if pair else '"A man is sleeping."'
    return ["```python", "from transformers import AutoModel, AutoTokenizer", "",
            f'tok = AutoTokenizer.from_pretrained("{name}", trust_remote_code=True)',
            f'model = AutoModel.from_pretrained("{name}", trust_remote_code=True).eval()',
            f'out = model(**tok({args}, truncation=True, return_tensors="pt"), task="{t.name}")',
            "print(out.logits)", "```"]


def _trained_on(plan: ExportPlan) -> list[str]:
    """The run's ``environment.json`` as a section: where each attempt at it trained (none for a run
    of an older mtdnn or an unreadable record: the card omits it)."""
    try:
        attempts = plan.run.read_environment()
    except CheckpointError:
        return []
    if not attempts:
        return []
    lines = ["## Trained on", "", "Floating-point results differ slightly between processors and library "
             "versions; the run trained here" + (" (a resumed run: one line per attempt):" if len(attempts) > 1 else ":"), ""]
    for e in attempts:
        where = e.get("gpu") or e.get("processor")
        lines.append(f"- {e.get('started')}: {where} ({e.get('device')}), {e.get('world_size')} process(es), "
                     f"{e.get('threads')} thread(s); torch {e.get('torch')}, transformers {e.get('transformers')}, "
                     f"mtdnn {e.get('mtdnn')}, Python {e.get('python')}")
    return [*lines, ""]


def model_card(plan: ExportPlan, tasks: list[TaskDef], name: str, single: bool = False, onnx: bool = False) -> str:
    """The card of an export holding ``tasks`` (``single``: a standard one-task folder; ``onnx``: an
    ONNX export)."""
    training = {k: plan.config[k] for k in _TRAINING_KEYS if k in plan.config}
    kind = (f"A standard `{tasks[0].kind.standard_folder_class(tasks[0])[0]}` model for one task" if single else
            "One multi-task model: a shared encoder and one head per task")
    outputs = ("`logits` are the head's output: class logits for a linear head, log-probabilities for "
               "a SAN head (the log of the probabilities averaged over its answer steps), a score of "
               "shape (batch, 1) for regression and ranking, (batch, tokens, tags) logits for tagging "
               "(a word's tag is read at its first sub-word), and for a span task (batch, tokens, 2): the "
               "start (`[..., 0]`) and end (`[..., 1]`) logits of each window of question + context, -1e4 "
               "outside the context but at the first token (the null answer).")
    lines = [_front_matter(plan, tasks, name), f"# {name}", "",
             f"{kind}, trained by mtdnn with MT-DNN multi-task fine-tuning "
             f"([Liu et al. 2019](https://arxiv.org/abs/1901.11504)) and exported by `mtdnn export`.", "",
             f"Encoder it started from: `{_encoder_name(plan)}`. Max sequence length: "
             f"{plan.config.get('max_seq_len')} tokens.", "", "## Tasks", "", *_task_table(plan, tasks), "",
             _encoders_note(plan, tasks, single), "", "## Use", "",
             *_usage(name, tasks, single, onnx, int(plan.config.get("max_seq_len") or 512)), "",
             outputs if not single else "", "", "## Training config", "", "```yaml",
             yaml.safe_dump(training, sort_keys=False).rstrip(), "```", "", *_trained_on(plan)]
    return "\n".join(lines)
