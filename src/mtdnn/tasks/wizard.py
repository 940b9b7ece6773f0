"""``mtdnn tasks init``: draft a task definition (a commented YAML file) from data.

The data is a CSV, TSV, JSON-lines or parquet file, or a dataset that ``datasets.load_dataset``
loads (a hub name where the hub is reachable, or a local dataset folder such as one holding
``train.parquet`` and ``validation.parquet``). Beside a file whose name says ``train``, files named
alike with ``dev``, ``validation``, ``valid``, ``val`` or ``test`` become the dev and test splits
(or give them with ``--dev``/``--test``). From the training rows it guesses:

- the id column (a column named ``id``, ``idx``, ``index``, ``guid``, ``pairID``, ``..._id``, ...
  whose values are distinct);
- the label column (named ``label``, ``category``, ``score``, ...; else the last column filled in
  nearly every row with few distinct values or with decimal numbers);
- the text columns (the remaining columns of varied text): one is a single-input task, two a pair;
- the type: ranking when ``--group`` names the column of candidate groups (or ``--type ranking``
  groups the candidates by their question); regression when the labels are decimal numbers (or
  more than 20 distinct integers); classification otherwise (``--type`` sets it);
- the label set: the labels' distinct values (integers in numeric order, two labels with the
  positive-sounding one second so that binary F1 scores it, else alphabetical), or the names of a
  ``datasets`` ClassLabel; ``--label-names`` names integer labels through a ``label_map``.

Every guess is a comment on its line of the draft, which ``mtdnn train --task-file`` accepts as it
is (the draft is loaded back before it is kept). Paths in it are relative to the draft's folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import readers
from ..errors import ConfigError, DataError
from ..kinds import KINDS, TaskKind, get_kind
from ..kinds.base import relative_path
from ..records import Column, InitOptions, Source
from ..run_dir import atomic_write
from .schema import load_task_file

ROWS_READ = 50_000          # rows of a split read for the guesses
MAX_INT_CLASSES = 20        # integer labels with more distinct values are a regression target
MAX_TEXT_CLASSES = 100      # string labels with more distinct values are not a label set
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
TAGGED_ENDINGS = (".conll", ".conllu", ".bio", ".iob", ".iob2")  # word-per-line files: tagging tasks
ID_NAMES = ("id", "idx", "index", "uid", "guid", "pairid", "pair_id", "example_id", "row_id")
LABEL_NAMES = ("label", "labels", "gold_label", "category", "class", "target", "score", "rating",
               "sentiment", "relevance", "is_duplicate", "y")
SIBLINGS = {"dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "test": "test"}
MISSING = ("", "-")


@dataclass
class Draft:
    """The guessed task, with a comment for each guess."""

    name: str
    type: str
    input: str
    columns: dict[str, str]          # text_a, text_b, label, id, group -> column
    labels: list[str]
    label_map: dict[str, str]
    metrics: list[str]
    notes: dict[str, str]
    summary: str = ""  # a kind that drafts its own files: what the command prints of its tasks


# ----------------------------------------------------------------------------- reading the data
def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return (value if isinstance(value, str) else str(value)).strip()


def _read_table(path: Path, fmt: str, header: bool) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of a CSV/TSV/JSON-lines file, through mtdnn's own readers."""
    if fmt == "jsonl":
        rows = [rec for _, rec in _first(readers._jsonl_records(path))]
        columns = list(dict.fromkeys(k for rec in rows for k in rec))
        return columns, rows
    names, cells = (readers._csv_rows if fmt == "csv" else readers._tsv_rows)(path, header)
    table = [c for _, c in _first(cells)]
    if names is None:
        names = [str(i) for i in range(len(table[0]) if table else 0)]
    return names, [dict(zip(names, c)) for c in table]


def _first(items: Any) -> list[Any]:
    out = []
    for item in items:
        if len(out) >= ROWS_READ:
            break
        out.append(item)
    return out


def _load_dataset(*args: Any, **kwargs: Any) -> Any:
    try:  # only hub datasets need the datasets package (0.12-0.16 s to import, on top of the CLI's)
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise DataError(f"the 'datasets' package is needed: {e}") from None
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot load with datasets ({type(e).__name__}: {msg})", path=str(args[0])) from None


def _dataset_rows(ds: Any) -> tuple[list[str], list[dict[str, Any]], dict[str, list[str]]]:
    """Columns, the first rows and the ClassLabel names of a ``datasets.Dataset``."""
    n = min(len(ds), ROWS_READ)
    batch = ds[:n]
    columns = list(ds.column_names)
    rows = [{c: batch[c][i] for c in columns} for i in range(n)]
    names = {c: list(f.names) for c, f in ds.features.items() if type(f).__name__ == "ClassLabel"}
    return columns, rows, names


def _file_source(path: Path, split: str, role: str, header: bool) -> Source:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        tagged = (" (a CoNLL column file: --type tagging)") if path.suffix.lower() in TAGGED_ENDINGS else ""
        raise ConfigError(f"cannot tell the format from the name (known endings: {', '.join(sorted(FORMATS))})"
                          + tagged, path=str(path))
    if fmt == "parquet":
        columns, rows, names = _dataset_rows(_load_dataset("parquet", data_files=str(path), split="train"))
        return Source(split, role, columns, rows, path=path, format=fmt, class_names=names)
    columns, rows = _read_table(path, fmt, header)
    return Source(split, role, columns, rows, path=path, format=fmt)


def _siblings(train: Path) -> dict[str, Path]:
    """Files beside ``train`` named alike with dev/validation/valid/val/test for 'train'."""
    found: dict[str, Path] = {}
    if "train" not in train.stem.lower():
        return found
    for word, role in SIBLINGS.items():
        stem = re.sub("train", word, train.stem, flags=re.IGNORECASE)
        cand = train.with_name(stem + train.suffix)
        if cand.is_file() and role not in found:
            found[role] = cand
    return found


def file_sources(opts: InitOptions) -> list[Source]:
    """The training file and its dev/test files (given, or found beside it)."""
    train = Path(opts.source)
    others = _siblings(train)
    others.update({role: Path(p) for role, p in (("dev", opts.dev), ("test", opts.test)) if p})
    sources = [_file_source(train, "train", "train", opts.header)]
    for role in ("dev", "test"):
        if role in others:
            if not others[role].is_file():
                raise DataError("file not found", path=str(others[role]))
            sources.append(_file_source(others[role], role, role, opts.header))
    return sources


def _role(split: str) -> str | None:
    low = split.lower()
    if low.startswith("train"):
        return "train"
    if low.startswith(("validation", "valid", "dev", "val")):
        return "dev"
    return "test" if low.startswith("test") else None


def dataset_sources(opts: InitOptions) -> list[Source]:
    """Every train/validation/test split of a dataset ``datasets.load_dataset`` loads."""
    loaded = _load_dataset(opts.source, opts.dataset_config)
    sources = []
    for split in loaded:
        role = _role(split)
        if role is None:
            continue
        columns, rows, names = _dataset_rows(loaded[split])
        hub = {"path": opts.source, "split": split, **({"name": opts.dataset_config} if opts.dataset_config else {})}
        sources.append(Source(split, role, columns, rows, hub=hub, class_names=names))
    sources.sort(key=lambda s: ("train", "dev", "test").index(s.role))
    if not sources or sources[0].role != "train":
        raise DataError(f"no training split (it has: {', '.join(loaded)})", path=opts.source)
    return sources


# ----------------------------------------------------------------------------- guessing
def column_stats(rows: list[dict[str, Any]], name: str) -> Column:
    """The kind of a column's values: ``int`` (whole numbers written without a decimal point),
    ``float`` (numbers), else ``text``; and how varied they are."""
    raw = [r.get(name) for r in rows]
    values = [t for t in (_text(v) for v in raw) if t is not None and t not in MISSING]
    kind = "text"
    if values and not any(isinstance(v, bool) for v in raw):
        if all(re.fullmatch(r"[+-]?\d+", v) for v in values):
            kind = "int"
        elif all(_is_number(v) for v in values):
            kind = "float"
    mean = sum(map(len, values)) / len(values) if values else 0.0
    return Column(name, kind, values, len(set(values)), mean)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_id(name: str, col: Column, rows: int) -> bool:
    """A column named like an id (``id``, ``idx``, ``pairID``, ``ticket_id``, ...) whose values are
    all present and distinct."""
    low = name.lower()
    named = low in ID_NAMES or low.endswith("_id") or (low.endswith("id") and len(low) <= 6)
    return named and len(col.values) == rows and col.distinct == rows


def _check_named(source: Source, names: list[str], flag: str) -> None:
    for n in names:
        if n not in source.columns:
            raise ConfigError(f"{flag}: no column '{n}' (columns: {', '.join(source.columns)})",
                              path=str(source.path or source.hub))


def _pick_label(train: Source, stats: dict[str, Column], taken: set[str], opts: InitOptions) -> tuple[str, str]:
    """(label column, why)."""
    if opts.label:
        return opts.label, "given with --label"
    free = [c for c in train.columns if c not in taken]
    for c in free:
        if c.lower() in LABEL_NAMES:
            return c, f"the column named '{c}'"
    n = len(train.rows)
    cands = [c for c in free if c in train.class_names or (len(stats[c].values) >= 0.9 * n and (
             stats[c].kind == "float" or 2 <= stats[c].distinct <= min(MAX_INT_CLASSES, n / 2)))]
    if not cands:
        raise ConfigError("cannot tell which column holds the label: pass --label COLUMN",
                          path=str(train.path or train.hub))
    return cands[-1], f"'{cands[-1]}', the last column filled in nearly every row with few values or with numbers"


def _pick_texts(train: Source, stats: dict[str, Column], taken: set[str], opts: InitOptions) -> list[str]:
    if opts.text:
        return list(opts.text)
    # varied text: distinct in half the rows (in half the groups: a question repeats in its group)
    n = max(stats[opts.group].distinct if opts.group else len(train.rows), 1)
    return [c for c in train.columns if c not in taken and stats[c].kind == "text"
            and (stats[c].distinct >= 0.5 * n or stats[c].mean_length >= 20)]


def _guess_type(train: Source, label: Column, opts: InitOptions) -> tuple[str, str]:
    given = get_kind(opts.type) if opts.type is not None else None
    if opts.group:
        if given is not None and not given.keeps_groups:
            raise ConfigError(f"--group is for ranking tasks, not {opts.type}", field="group")
        return "ranking", f"--group '{opts.group}' names each row's candidate group"
    if given is not None:
        problem = given.init_label_problem(label)
        if problem:
            raise ConfigError(problem, field="type")
        return given.name, given.init_type_note()
    if label.name in train.class_names:
        return "classification", f"'{label.name}' is a datasets ClassLabel"
    if not label.values:
        raise ConfigError(f"the label column '{label.name}' is empty", path=str(train.path or train.hub))
    if label.kind == "float" or (label.kind == "int" and label.distinct > MAX_INT_CLASSES):
        low, high = min(map(float, label.values)), max(map(float, label.values))
        return "regression", f"the labels are {label.distinct} distinct numbers from {low:g} to {high:g}"
    if label.kind == "text" and label.distinct > MAX_TEXT_CLASSES:
        raise ConfigError(f"the label column '{label.name}' has {label.distinct} distinct values, too many for "
                          "a label set: pass --label COLUMN", path=str(train.path or train.hub))
    return "classification", f"{label.distinct} distinct {'integer ' if label.kind == 'int' else ''}labels"


def _label_set(kind: str, train: Source, label: Column, opts: InitOptions) -> tuple[list[str], dict[str, str], str]:
    """(labels, label_map, why) of the guessed kind."""
    return get_kind(kind).init_labels(train, label, opts)


def _default_name(opts: InitOptions, train: Source) -> str:
    if opts.name:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", opts.name):
            raise ConfigError("a task name uses only letters, digits, '_', '.' and '-'", field="name")
        return opts.name
    if train.path is not None:
        stem = re.sub(r"(?i)[_.-]?train(ing)?[_.-]?", "", train.path.stem) or train.path.resolve().parent.name
    else:
        stem = opts.source.rstrip("/\\").replace("\\", "/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.-") or "my_task"


def _metrics(kind: str, labels: list[str]) -> tuple[list[str], str]:
    return get_kind(kind).init_metrics(labels)


def guess_task(sources: list[Source], opts: InitOptions) -> Draft:
    """The task the training rows (``sources[0]``) look like; see the module docstring."""
    train = sources[0]
    _check_named(train, [n for n in (opts.label, opts.id, opts.group, *(opts.text or [])) if n], "column")
    stats = {c: column_stats(train.rows, c) for c in train.columns}
    id_col = opts.id or next((c for c in train.columns if _looks_like_id(c, stats[c], len(train.rows))
                              and c not in (opts.label, opts.group)), None)
    taken = {c for c in (id_col, opts.group) if c}
    label, label_note = _pick_label(train, stats, taken, opts)
    texts = _pick_texts(train, stats, taken | {label}, opts)
    kind, type_note = _guess_type(train, stats[label], opts)
    need = get_kind(kind).init_texts_needed()
    if len(texts) < need:
        raise ConfigError(f"found {len(texts)} text column(s) where {need} are needed: pass --text COLUMN"
                          f"{',COLUMN' if need == 2 else ''} (columns: {', '.join(train.columns)})",
                          path=str(train.path or train.hub))
    labels, label_map, labels_note = _label_set(kind, train, stats[label], opts)
    metrics, metrics_note = _metrics(kind, labels)
    inp = get_kind(kind).init_input(len(texts))
    spare = texts[2:]
    input_note = (f"text columns {', '.join(repr(t) for t in texts[:2])}" + get_kind(kind).init_text_note()
                  + (f"; also text: {', '.join(spare)}" if spare else ""))
    columns = {"text_a": texts[0], "text_b": texts[1] if get_kind(kind).reads_pairs(inp) else None, "label": label,
               "id": id_col, "group": opts.group}
    notes = {"type": type_note, "input": input_note, "labels": labels_note, "metrics": metrics_note,
             "label": label_note}
    return Draft(_default_name(opts, train), kind, inp, {k: v for k, v in columns.items() if v is not None},
                 labels, label_map, metrics, notes)


# ----------------------------------------------------------------------------- writing the draft
def _ref(column: str, header: bool) -> str:
    return column if not header and column.isdigit() else json.dumps(column, ensure_ascii=False)


def _flow(mapping: dict[str, str], header: bool = True) -> str:
    return "{" + ", ".join(f"{k}: {_ref(v, header)}" for k, v in mapping.items()) + "}"


def _labeled(source: Source, label: str) -> bool:
    if label not in source.columns:
        return False
    values = [_text(r.get(label)) for r in source.rows]
    present = [v for v in values if v is not None and v not in MISSING]
    if label in source.class_names:
        present = [v for v in present if not v.startswith("-")]
    return bool(present)


def _split_lines(source: Source, draft: Draft, folder: Path, header: bool, note: str = "") -> list[str]:
    missing = [c for f, c in draft.columns.items() if f in ("text_a", "text_b") and c not in source.columns]
    where = str(source.path or source.hub)
    if missing:
        raise ConfigError(f"split '{source.split}' has no column '{missing[0]}' (columns: "
                          f"{', '.join(source.columns)})", path=where)
    labeled = _labeled(source, draft.columns["label"])
    if source.role != "test" and not labeled:
        raise ConfigError(f"split '{source.split}' has no labels in column '{draft.columns['label']}'", path=where)
    cols = {k: v for k, v in draft.columns.items() if k != "label" or labeled}
    cols = {k: v for k, v in cols.items() if v in source.columns}
    lines = [f"  {source.split}:", f"    role: {source.role}"]
    if source.path is not None:
        lines += [f"    path: {json.dumps(relative_path(source.path, folder), ensure_ascii=False)}"
                  "  # relative to this file's folder", f"    format: {source.format}"]
        if not header and source.format in ("csv", "tsv"):
            lines.append("    header: false  # columns are 0-based indices")
    else:
        hub = dict(source.hub or {})
        if Path(hub["path"]).is_dir():
            hub["path"] = relative_path(Path(hub["path"]), folder)
        lines.append(f"    hub: {_flow(hub)}  # loaded with datasets.load_dataset")
    lines.append(f"    columns: {_flow(cols, header)}" + (f"  # {note}" if note else ""))
    if draft.label_map and labeled:
        pairs = ", ".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in draft.label_map.items())
        lines.append(f"    label_map: {{{pairs}}}  # the file's value -> the label")
    if not labeled:
        lines.append("    labeled: false  # no labels: predictions go to submissions/")
    return lines


def render(draft: Draft, sources: list[Source], folder: Path, opts: InitOptions) -> str:
    """The commented YAML draft (paths relative to ``folder``, where it is written)."""
    n = len(sources[0].rows)
    dev = any(s.role == "dev" for s in sources)
    lines = [f"# {draft.name}: drafted by `mtdnn tasks init` from {n} training rows of {opts.source}.",
             "# The comments say what each line is guessed from; check them, then run",
             f"#   mtdnn tasks check {opts.output or draft.name + '.yaml'}",
             f"name: {draft.name}",
             f"type: {draft.type}  # {draft.notes['type']}",
             f"input: {draft.input}  # {draft.notes['input']}"]
    if draft.labels:
        lines.append(f"labels: [{', '.join(json.dumps(x, ensure_ascii=False) for x in draft.labels)}]"
                     f"  # {draft.notes['labels']}")
    lines += [f"metrics: [{', '.join(draft.metrics)}]  # {draft.notes['metrics']}",
              "head: {kind: linear}" + ("  # or {kind: san}: the paper's answer module for pairs"
                                         if get_kind(draft.type).takes_pair_head(draft.input) else ""),
              "dropout: 0.1",
              "splits:" + ("" if dev else "  # no dev split found: training keeps the last epoch")]
    for s in sources:
        note = f"label: {draft.notes['label']}" if s is sources[0] else ""
        lines += _split_lines(s, draft, folder, opts.header, note)
    return "\n".join(lines) + "\n"


def own_files_kind(opts: InitOptions) -> TaskKind | None:
    """The kind that drafts ``opts.source`` itself (``--type`` names one that reads its own files,
    or the file has the shape of one: a CoNLL column file, a SQuAD JSON file, ...), or None."""
    if opts.type is not None:
        kind = get_kind(opts.type)
        return kind if kind.reads_own_files else None
    src = Path(opts.source)
    if not src.is_file():
        return None
    return next((k for k in KINDS.values() if k.reads_own_files and k.init_detect(src)), None)


def _own_files(opts: InitOptions) -> dict[str, Path]:
    train = Path(opts.source)
    if not train.is_file():
        raise DataError("file not found", path=opts.source)
    files = {"train": train, **_siblings(train)}
    files.update({role: Path(p) for role, p in (("dev", opts.dev), ("test", opts.test)) if p})
    for p in files.values():
        if not p.is_file():
            raise DataError("file not found", path=str(p))
    return {role: files[role] for role in ("train", "dev", "test") if role in files}


def _init_own(kind: TaskKind, opts: InitOptions) -> tuple[Path, Draft, list[Source]]:
    """``init_task`` for a kind that drafts its own files (``TaskKind.init_draft``)."""
    files = _own_files(opts)
    for flag, value in (("--group", opts.group), ("--label-names", opts.label_names)):
        if value:
            raise ConfigError(f"{flag} is not for {kind.name} tasks", field=flag.lstrip("-").replace("-", "_"))
    name = _default_name(opts, Source("train", "train", [], [], path=files["train"]))
    out = Path(opts.output or f"{name}.yaml")
    if out.exists() and not opts.force:
        raise ConfigError("the file exists: pass --force to replace it, or --output another file", path=str(out))
    drafted = kind.init_draft(opts, files, name, out.parent)
    first = drafted.names[0]
    lines = [f"# {first if len(drafted.names) == 1 else ', '.join(drafted.names)}: drafted by `mtdnn tasks init` "
             f"from {drafted.counts['train']} training {drafted.unit} of {opts.source}.",
             "# The comments say what each line is guessed from; check them, then run",
             f"#   mtdnn tasks check {opts.output or name + '.yaml'}", *drafted.lines]
    with atomic_write(out) as f:
        f.write("\n".join(lines) + "\n")
    tasks = load_task_file(out)  # the draft must load as written
    t = tasks[0]
    sources = [Source(role, role, [], [{}] * drafted.counts.get(role, 0), path=p, format=t.splits[role].format)
               for role, p in files.items()]
    splits = ", ".join(f"{role} ({drafted.counts.get(role, 0)} {drafted.unit})" for role in files)
    draft = Draft(t.name, t.type, t.input, {}, list(t.labels), {}, list(t.metrics), {},
                  summary=f"{drafted.summary}; splits {splits}")
    return out, draft, sources


def init_task(opts: InitOptions) -> tuple[Path, Draft, list[Source]]:
    """Read the data, guess the task, write the draft (refusing to replace a file unless
    ``opts.force``) and load it back as ``mtdnn train`` will. Returns (draft file, draft, sources)."""
    own = own_files_kind(opts)
    if own is not None:
        return _init_own(own, opts)
    src = Path(opts.source)
    if src.is_file():
        sources = file_sources(opts)
    elif src.suffix.lower() in FORMATS and not src.exists():
        raise DataError("file not found", path=opts.source)
    else:
        sources = dataset_sources(opts)
    draft = guess_task(sources, opts)
    out = Path(opts.output or f"{draft.name}.yaml")
    if out.exists() and not opts.force:
        raise ConfigError("the file exists: pass --force to replace it, or --output another file", path=str(out))
    text = render(draft, sources, out.parent, opts)
    with atomic_write(out) as f:
        f.write(text)
    load_task_file(out)  # the draft must load as written
    return out, draft, sources
