"""``mtdnn tasks check``: read every split of a task file's tasks as ``mtdnn train`` would and
report what is in them, before an hour of training finds it out.

For each split: the rows kept and the rows dropped (and why), the label distribution (the score
range for regression), the candidate groups of a ranking task, token-length percentiles with the
encoder's tokenizer and the share of rows longer than ``--max-seq-len`` (cut by training),
duplicate rows within the split (and duplicates with different labels), and for dev/test splits
the rows also in the training split. What would make training fail (an invalid task file, an
unreadable split, a bad row, a missing file, a ranking group without a positive answer) is a
*problem*: the command exits with 1; everything else is a *warning*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoConfig

from ..data.readers import data_dir_default, read_split, resolve_path
from ..errors import ConfigError, DataError
from ..model.multitask import load_tokenizer, resolve_encoder_name
from ..records import RawSplit, SplitCheck
from .schema import TaskDef, load_task_file

TOKEN_SAMPLE = 20_000      # rows tokenised per split for the length percentiles
TRUNCATION_WARNING = 0.05  # a larger share of rows longer than max_seq_len is a warning


@dataclass
class TaskCheck:
    task: TaskDef
    splits: list[SplitCheck]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    file: str
    max_seq_len: int
    tasks: list[TaskCheck]
    setup_problems: list[str] = field(default_factory=list)  # not of one task (the encoder's limit)

    @property
    def problems(self) -> list[str]:
        return self.setup_problems + [p for t in self.tasks for p in t.problems]

    @property
    def warnings(self) -> list[str]:
        return [w for t in self.tasks for w in t.warnings]

    @property
    def ok(self) -> bool:
        return not self.problems


def _keys(raw: RawSplit) -> list[tuple[str, str | None]]:
    return list(zip(raw.text_a, raw.text_b))


def _duplicates(raw: RawSplit) -> tuple[int, int]:
    """(rows whose texts an earlier row has, distinct texts seen with more than one label)."""
    seen: dict[tuple[str, str | None], set[Any]] = {}
    dup = 0
    for key, label in zip(_keys(raw), raw.labels):
        if key in seen:
            dup += 1
        seen.setdefault(key, set()).add(label)
    return dup, sum(1 for labels in seen.values() if len(labels) > 1)


def _label_stats(task: TaskDef, raw: RawSplit, out: SplitCheck) -> None:
    if out.labeled:
        task.kind.label_stats(task, raw, out)


def token_lengths(task: TaskDef, raw: RawSplit, tokenizer: Any, max_seq_len: int) -> dict[str, float]:
    """Percentiles of the untruncated token counts (special tokens included) over at most
    ``TOKEN_SAMPLE`` rows (a fixed random sample), and the share longer than ``max_seq_len``."""
    rows = np.arange(len(raw))
    if len(rows) > TOKEN_SAMPLE:
        rows = np.sort(np.random.default_rng(0).choice(len(raw), size=TOKEN_SAMPLE, replace=False))
    lengths: list[int] = []
    for start in range(0, len(rows), 2048):
        idx = rows[start:start + 2048]
        a = [raw.text_a[i] for i in idx]
        b = [raw.text_b[i] for i in idx] if task.has_text_b else None
        enc = tokenizer(a, b, truncation=False, padding=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)
        lengths += [len(ids) for ids in enc["input_ids"]]
    arr = np.asarray(lengths)
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99), "max": float(arr.max()),
            "truncated": float((arr > max_seq_len).mean()), "rows": float(len(arr))}


def check_split(task: TaskDef, name: str, data_dir: Path, tokenizer: Any, max_seq_len: int,
                allow_hub: bool) -> tuple[SplitCheck, RawSplit | None]:
    split = task.splits[name]
    out = SplitCheck(task.name, name, split.role, split.labeled)
    try:
        raw = read_split(task, name, data_dir, allow_hub=allow_hub)
    except DataError as e:
        path = resolve_path(split, data_dir, task.base_dir) if split.path is not None else None
        out.error = task.kind.explain_read_error(task, name, path, str(e))
        return out, None
    out.source, out.rows = raw.source, len(raw)
    if raw.dropped_unlabeled:
        out.dropped["without a gold label (missing_labels)"] = raw.dropped_unlabeled
    if raw.dropped_no_positive:
        out.dropped["in ranking groups without a positive answer"] = raw.dropped_no_positive
    _label_stats(task, raw, out)
    out.lengths = token_lengths(task, raw, tokenizer, max_seq_len)
    out.windows = task.kind.window_stats(task, raw, tokenizer, max_seq_len)
    out.duplicates, out.conflicting = _duplicates(raw)
    return out, raw


def _judge(tc: TaskCheck, max_seq_len: int) -> None:
    """Sort what was found into problems (training would fail) and warnings."""
    t = tc.task
    train = next((s for s in tc.splits if s.role == "train" and s.error is None), None)
    for s in tc.splits:
        where = f"{t.name}/{s.split}"
        if s.error is not None:
            unlabeled_test = s.role == "test" and not s.labeled
            (tc.warnings if unlabeled_test else tc.problems).append(
                f"{where}: {s.error}" + ("; training writes no submission file for it" if unlabeled_test else ""))
            continue
        if s.lengths.get("truncated", 0.0) > TRUNCATION_WARNING:
            tc.warnings.append(f"{where}: {100 * s.lengths['truncated']:.1f}% of rows are longer than "
                               f"--max-seq-len {max_seq_len} and {t.kind.long_rows}")
        if s.conflicting:
            tc.warnings.append(f"{where}: {s.conflicting} texts appear with different labels")
        if s.overlap:
            tc.warnings.append(f"{where}: {s.overlap} of {s.rows} rows are also in the training split")
        if s.groups and s.groups["single"]:
            tc.warnings.append(f"{where}: {int(s.groups['single'])} of {int(s.groups['groups'])} ranking groups "
                               "have one candidate (always predicted positive)")
        if s.labeled:
            tc.warnings += t.kind.split_warnings(t, s, train if train is not None and train.labeled else None)
    if t.head_from is None and train is None and not tc.problems:
        tc.problems.append(f"{t.name}: no training split")
    if train is not None and train.labeled:
        tc.warnings += t.kind.check_warnings(t, train)
    if t.head_from is None and t.selection_split is None:
        tc.warnings.append(f"{t.name}: no dev split, so training keeps the last epoch")


def check_task(task: TaskDef, data_dir: Path, tokenizer: Any, max_seq_len: int, allow_hub: bool) -> TaskCheck:
    checks, raws = [], {}
    for name in task.splits:
        sc, raw = check_split(task, name, data_dir, tokenizer, max_seq_len, allow_hub)
        checks.append(sc)
        if raw is not None:
            raws[name] = raw
    train_keys = {k for n, r in raws.items() if task.splits[n].role == "train" for k in _keys(r)}
    for sc in checks:
        if sc.role != "train" and sc.split in raws:
            sc.overlap = sum(1 for k in _keys(raws[sc.split]) if k in train_keys) if train_keys else None
    tc = TaskCheck(task, checks)
    _judge(tc, max_seq_len)
    return tc


def check_task_file(path: str | Path, *, data_dir: str | Path | None = None, encoder: str = "default",
                    max_seq_len: int = 128, allow_hub: bool = True, tasks: list[str] | None = None) -> CheckReport:
    """Check every task of a task file (or the named ones). A task file that does not load is a
    ``ConfigError``, as for ``mtdnn train``."""
    defs = load_task_file(path)
    if tasks:
        unknown = sorted(set(tasks) - {t.name for t in defs})
        if unknown:
            raise ConfigError(f"no task '{unknown[0]}' in the file (it has: {', '.join(t.name for t in defs)})",
                              path=str(path), field="tasks")
        defs = [t for t in defs if t.name in tasks]
    name = resolve_encoder_name(encoder)
    tokenizer = load_tokenizer(name)
    root = Path(data_dir) if data_dir else data_dir_default()
    report = CheckReport(str(path), max_seq_len, [check_task(t, root, tokenizer, max_seq_len, allow_hub) for t in defs])
    limit = _position_limit(name)
    if limit is not None and max_seq_len > limit:
        report.setup_problems.append(f"--max-seq-len {max_seq_len} is above the encoder's limit of {limit} positions")
    return report


def _position_limit(encoder: str) -> int | None:
    return getattr(AutoConfig.from_pretrained(encoder), "max_position_embeddings", None)


# ----------------------------------------------------------------------------- the printed report
def _pct(n: float, total: float) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "-"


def _shown(source: str) -> str:
    """A file under the current folder as a relative path, anything else as it is."""
    path = Path(source)
    try:
        return str(path.relative_to(Path.cwd())) if path.is_absolute() else source
    except ValueError:
        return source


def _split_lines(t: TaskDef, s: SplitCheck, max_seq_len: int) -> list[str]:
    head = f"  {s.split} ({s.role}{'' if s.labeled else ', unlabeled'})"
    if s.error is not None:
        return [head, f"    cannot be read: {s.error}"]
    lines = [head + f": {_shown(s.source)}"]
    dropped = "; ".join(f"{n} {why}" for why, n in s.dropped.items())
    lines.append(f"    rows: {s.rows}" + (f" (dropped: {dropped})" if dropped else " (none dropped)"))
    if s.labels:
        total = sum(s.labels.values())  # a label per row; tagging: a tag per word
        lines.append("    labels: " + ", ".join(f"{k} {v} ({_pct(v, total)})" for k, v in s.labels.items()))
    if s.scores:
        lines.append("    scores: min {min:.3g}, max {max:.3g}, mean {mean:.3g}, std {std:.3g}".format(**s.scores))
    if s.groups:
        g = s.groups
        lines.append(f"    groups: {int(g['groups'])}, candidates per group min {int(g['min'])}, median "
                     f"{g['median']:g}, max {int(g['max'])}; without a positive {int(g['no_positive'])}, "
                     f"with several {int(g['several_positive'])}")
    lines += t.kind.check_lines(t, s)
    if s.lengths:
        n = s.lengths
        sample = f" (a sample of {int(n['rows'])} rows)" if n["rows"] < s.rows else ""
        lines.append(f"    tokens: p50 {n['p50']:.0f}, p90 {n['p90']:.0f}, p95 {n['p95']:.0f}, p99 {n['p99']:.0f}, "
                     f"max {n['max']:.0f}; longer than {max_seq_len}: {100 * n['truncated']:.1f}%{sample}")
    if s.windows:
        w = s.windows
        lines.append(f"    windows: {int(w['windows'])} for {int(w['rows'])} {t.kind.row_unit}; longer than {max_seq_len} "
                     f"tokens: {int(w['split'])} ({_pct(w['split'], w['rows'])}), the most windows of one: "
                     f"{int(w['max'])}")
    dup = f"    duplicates: {s.duplicates}"
    if s.conflicting:
        dup += f" ({s.conflicting} texts with different labels)"
    if s.overlap is not None:
        dup += f"; also in the training split: {s.overlap} ({_pct(s.overlap, s.rows)})"
    return lines + [dup]


def format_report(report: CheckReport) -> str:
    """The report as ``mtdnn tasks check`` prints it."""
    lines = []
    for tc in report.tasks:
        t = tc.task
        labels = f", {len(t.labels)} labels" if t.labels else ""
        lines.append(f"task {t.name}: {t.type}, input {t.input}{labels}, metrics {', '.join(t.metric_names)}")
        for s in tc.splits:
            lines += _split_lines(t, s, report.max_seq_len)
    for title, items in (("problems (training would fail)", report.problems), ("warnings", report.warnings)):
        if items:
            lines.append(f"{title}:")
            lines += [f"  - {x}" for x in items]
    verdict = ("OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)") + \
        (f", {len(report.warnings)} warning(s)" if report.warnings else "")
    lines.append(f"{report.file}: {verdict}")
    return "\n".join(lines)
