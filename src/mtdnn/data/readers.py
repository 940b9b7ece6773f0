"""Readers: one split of a task -> a ``RawSplit`` of texts and labels.

Local files (GLUE TSV with its quirks, CSV, JSON lines, parquet) and Hugging Face ``datasets``
sources. Every problem a file can have becomes a ``DataError`` naming the file, the line and the
field; rows without a gold label are dropped and counted, never silently.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator


from ..errors import DataError
from ..records import RawSplit
from ..tasks.schema import Columns, HubSource, SplitDef, TaskDef

log = logging.getLogger(__name__)

MAX_REPORTED_BAD_ROWS = 5
_SURROGATE = re.compile("[\ud800-\udfff]")


class _BadRows:
    """Collects row-level problems so that one error reports the first few and the count."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[tuple[int | None, str | None, str]] = []

    def add(self, line: int | None, fld: str | None, message: str) -> None:
        self.items.append((line, fld, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        line, fld, message = self.items[0]
        extra = ""
        if len(self.items) > 1:
            shown = ", ".join(str(i[0]) for i in self.items[:MAX_REPORTED_BAD_ROWS])
            more = " ..." if len(self.items) > MAX_REPORTED_BAD_ROWS else ""
            extra = f" ({len(self.items)} bad rows in all, at lines {shown}{more})"
        raise DataError(message + extra, path=self.source, line=line, field=fld)


def data_dir_default() -> Path:
    """The data folder when ``--data-dir`` is not given: ``$MTDNN_DATA_DIR``, else ``./data``.

    Nothing outside these two is looked at; ``scripts/*.sh`` set ``MTDNN_DATA_DIR`` to
    ``../shared/data`` when it is unset and that folder exists (README, "Data")."""
    env = os.environ.get("MTDNN_DATA_DIR")
    return Path(env) if env else Path("data")


# ---------------------------------------------------------------------------- file decoding
def _show(value: Any, limit: int = 40) -> str:
    """A value from a file as it appears in a message: quoted, escaped, cut short."""
    text = value if isinstance(value, str) else str(value)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def decode_file(path: Path) -> str:
    """A data file's text (UTF-8, a leading byte-order mark dropped); unreadable, empty or not UTF-8:
    a DataError naming the file (and the line of the first bad byte)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except OSError as e:
        raise DataError(f"cannot read the file ({e.strerror or type(e).__name__})", path=str(path)) from None
    if not raw.strip():
        raise DataError("empty file", path=str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"bytes that are not UTF-8 (byte offset {e.start})", path=str(path), line=line) from None
    if text.startswith("\ufeff"):  # MRPC's BOM
        text = text[1:]
    return text


def _tsv_rows(path: Path, header: bool) -> tuple[list[str] | None, Iterator[tuple[int, list[str]]]]:
    """GLUE TSV: quoting off, CRLF tolerated, no trailing newline tolerated."""
    lines = decode_file(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if header and not lines:  # a file of only a byte order mark
        raise DataError("no header line", path=str(path), line=1)
    names = lines[0].split("\t") if header else None
    start = 1 if header else 0
    first = names if names is not None else (lines[0].split("\t") if lines else [])
    width = len(first)
    bad = _BadRows(str(path))

    def rows() -> Iterator[tuple[int, list[str]]]:
        for n, ln in enumerate(lines[start:], start=start + 1):
            cells = ln.split("\t")
            if len(cells) != width:
                bad.add(n, "columns", f"{len(cells)} columns where {width} were expected")
                continue
            yield n, cells
        bad.raise_if_any()

    return names, rows()


def _csv_rows(path: Path, header: bool) -> tuple[list[str] | None, Iterator[tuple[int, list[str]]]]:
    text = decode_file(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        names = next(reader) if header else None
    except StopIteration:  # a file of only a byte order mark
        raise DataError("no header line", path=str(path), line=1) from None
    except csv.Error as e:
        raise DataError(f"malformed CSV: {e}", path=str(path), line=1) from None
    bad = _BadRows(str(path))

    def rows() -> Iterator[tuple[int, list[str]]]:
        width = len(names) if names is not None else None
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise DataError(f"malformed CSV: {e}", path=str(path), line=reader.line_num) from None
            if not cells:
                continue
            w = width if width is not None else len(cells)
            width = w
            if len(cells) != w:
                bad.add(reader.line_num, "columns", f"{len(cells)} columns where {w} were expected")
                continue
            yield reader.line_num, cells
        bad.raise_if_any()

    return names, rows()


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    bad = _BadRows(str(path))
    for n, ln in enumerate(decode_file(path).split("\n"), start=1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as e:
            bad.add(n, None, f"invalid JSON: {e.msg}")
            continue
        except (ValueError, RecursionError) as e:  # integers beyond the digit limit, deep nesting
            bad.add(n, None, f"invalid JSON: {str(e).split(':')[0] if str(e) else type(e).__name__}")
            continue
        if not isinstance(rec, dict):
            bad.add(n, None, f"a JSON-lines row must be an object, not {type(rec).__name__}")
            continue
        yield n, rec
    bad.raise_if_any()


def _hub_records(src: Any, source: str, hint: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
    try:  # only hub datasets need the datasets package (0.12-0.16 s to import, on top of the CLI's)
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise DataError(f"the 'datasets' package is needed: {e}", path=source) from None
    try:
        ds = datasets.load_dataset(src.path, src.name, split=src.split, data_files=src.data_files)
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot load with datasets ({type(e).__name__}: {msg}){hint}", path=source) from None
    for n, rec in enumerate(ds, start=1):
        yield n, rec


# ---------------------------------------------------------------------------- column access
def _cell_getter(names: list[str] | None, col: str | int, source: str, fld: str) -> Callable[[list[str]], str]:
    if isinstance(col, int):
        return lambda cells: cells[col] if col < len(cells) else _missing_index(col, source, fld)
    if names is None:
        raise DataError(f"column '{col}' named, but the file has no header (use a 0-based index)",
                        path=source, field=fld)
    if col not in names:
        raise DataError(f"column '{col}' not in the header ({', '.join(_show(n) for n in names)})",
                        path=source, line=1, field=fld)
    idx = names.index(col)
    return lambda cells: cells[idx]


def _missing_index(col: int, source: str, fld: str) -> str:
    raise DataError(f"column index {col} is beyond the row", path=source, field=fld)


def _records_from_table(names: list[str] | None, rows: Iterator[tuple[int, list[str]]],
                        cols: Columns, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    getters = {f: _cell_getter(names, c, source, f) for f, c in cols.model_dump().items() if c is not None}
    for n, cells in rows:
        yield n, {f: g(cells) for f, g in getters.items()}


def _records_from_mapping(recs: Iterator[tuple[int, dict[str, Any]]], cols: Columns,
                          source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    wanted = {f: c for f, c in cols.model_dump().items() if c is not None}
    bad = _BadRows(source)
    for n, rec in recs:
        out = {}
        for f, c in wanted.items():
            if c not in rec:
                bad.add(n, f, f"column '{c}' missing from the record")
                break
            v = rec[c]
            if isinstance(v, str) and _SURROGATE.search(v):
                bad.add(n, f, "text that is not valid Unicode (a lone surrogate escape)")
                break
            out[f] = v
        else:
            yield n, out
    bad.raise_if_any()


# ---------------------------------------------------------------------------- the reader
def candidate_paths(split: SplitDef, data_dir: Path, base_dir: str | None = None) -> list[tuple[Path, str]]:
    """Where a split's file is looked for, in order, each with the place it is in: a relative path
    beside the task file (``base_dir``, the folder of the task file it was read from), then in the
    data dir, then as given (from the current folder); an absolute path only as given."""
    if split.path is None:
        return []
    p = Path(split.path).expanduser()
    if p.is_absolute():
        return [(p, "as given")]
    places = [(Path(base_dir) / p, "beside the task file")] if base_dir else []
    data_place = "in the data dir" if Path(data_dir).is_dir() else "in the data dir: data directory not found"
    places += [(Path(data_dir) / p, data_place), (p, "from the current folder")]
    return places


def resolve_path(split: SplitDef, data_dir: Path, base_dir: str | None = None) -> Path | None:
    """The file a split reads: the first of ``candidate_paths`` that exists, else the first one."""
    places = candidate_paths(split, data_dir, base_dir)
    if not places:
        return None
    return next((path for path, _ in places if path.is_file()), places[0][0])


def _local_hub(task: TaskDef, hub: HubSource, data_dir: Path) -> HubSource:
    """A hub source whose ``path`` or ``data_files`` name local files or folders relative to the
    task file's folder or the data dir, with those made absolute (hub names stay as they are)."""
    def find(name: str) -> str:
        q = Path(name).expanduser()
        if q.is_absolute():
            return str(q)
        found = [Path(b) / q for b in (task.base_dir, data_dir) if b and (Path(b) / q).exists()]
        return str(found[0]) if found else name

    files = hub.data_files
    files = find(files) if isinstance(files, str) else [find(f) for f in files] if files is not None else None
    return hub.model_copy(update={"path": find(hub.path), "data_files": files})


def _not_found(task: TaskDef, name: str, split: SplitDef, data_dir: Path) -> DataError:
    """The error for a split whose file is nowhere it was looked for, naming every place."""
    places = "; ".join(f"{path} ({what})" for path, what in candidate_paths(split, data_dir, task.base_dir))
    hint = ""
    if split.hub is not None:
        hint = (f"; with internet, mtdnn loads it from the Hugging Face hub ({split.hub.path}"
                + (f", {split.hub.name}" if split.hub.name else "") + ") when HF_DATASETS_OFFLINE is unset")
        if split.hub.path == "nyu-mll/glue":
            hint += ", or download GLUE (e.g. GLUE's download_glue_data.py) into the data dir"
    return DataError(f"file not found (task '{task.name}', split '{name}'); looked in: {places}; set --data-dir "
                     f"or MTDNN_DATA_DIR, or write the path relative to the task file{hint}", path=split.path)


def _open_source(task: TaskDef, name: str, split: SplitDef, data_dir: Path,
                 allow_hub: bool) -> tuple[str, Columns, Iterator[tuple[int, dict[str, Any]]], bool]:
    """Pick the local file, else the hub fallback. Returns (source, columns, records, from_hub)."""
    path = resolve_path(split, data_dir, task.base_dir)
    if path is not None and path.is_file():
        source = str(path)
        if split.format == "tsv":
            names, rows = _tsv_rows(path, split.header)
            return source, split.columns, _records_from_table(names, rows, split.columns, source), False
        if split.format == "csv":
            names, rows = _csv_rows(path, split.header)
            return source, split.columns, _records_from_table(names, rows, split.columns, source), False
        if split.format == "jsonl":
            return source, split.columns, _records_from_mapping(_jsonl_records(path), split.columns, source), False
        if split.format == "parquet":
            hub = HubSource(path="parquet", split="train", data_files=str(path))
            return source, split.columns, _records_from_mapping(_hub_records(hub, source), split.columns, source), True
    hub = _local_hub(task, split.hub, data_dir) if split.hub is not None else None
    if hub is not None and (allow_hub or Path(hub.path).exists()):  # a local dataset folder is not the hub
        source = f"{hub.path}" + (f"/{hub.name}" if hub.name else "") + f":{hub.split}"
        cols = split.hub_columns or split.columns
        hint = ""
        if path is not None:
            log.info("%s/%s: %s not found, loading %s through datasets", task.name, name, path, source)
            hint = f"; the local file {path} is missing too (set --data-dir or MTDNN_DATA_DIR)"
        return source, cols, _records_from_mapping(_hub_records(hub, source, hint), cols, source), True
    if path is None:
        raise DataError(f"task '{task.name}' split '{name}' has no local file and hub loading is off")
    raise _not_found(task, name, split, data_dir)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, str) else str(value)


def read_split(task: TaskDef, name: str, data_dir: str | Path, *, allow_hub: bool = True) -> RawSplit:
    """Read one split of a task, validating every row."""
    if name not in task.splits:
        raise DataError(f"task '{task.name}' has no split '{name}' (it has: {', '.join(task.splits)})")
    split = task.splits[name]
    if task.kind.reads_own_files:
        path = resolve_path(split, Path(data_dir), task.base_dir)
        if path is None or not path.is_file():
            raise _not_found(task, name, split, Path(data_dir))
        return RawSplit(task.name, name, str(path), **task.kind.read_file(task, name, split, path))
    source, cols, records, from_hub = _open_source(task, name, split, Path(data_dir), allow_hub)
    out = RawSplit(task.name, name, source, group_keys=[] if cols.group is not None else None)
    bad = _BadRows(source)
    labeled = split.labeled
    for n, rec in records:
        a = _as_text(rec.get("text_a"))
        b = _as_text(rec.get("text_b")) if cols.text_b is not None else None
        if a is None:
            bad.add(n, "text_a", "empty text")
            continue
        if cols.text_b is not None and b is None:
            bad.add(n, "text_b", "empty text")
            continue
        label: Any = None
        if labeled:
            raw = rec.get("label")
            label, problem = task.kind.parse_label(task, split, raw, from_hub)
            if problem == "missing":
                out.dropped_unlabeled += 1
                continue
            if problem:
                bad.add(n, "label", problem)
                continue
        if out.group_keys is not None:
            group = _as_text(rec.get("group"))
            if group is None or not group.strip():
                bad.add(n, "group", "empty group value")
                continue
            out.group_keys.append(group)
        uid = _as_text(rec.get("id")) if cols.id is not None else None
        out.ids.append(uid if uid is not None else str(len(out.ids)))
        out.text_a.append(a)
        out.text_b.append(b)
        out.labels.append(label)
        out.lines.append(n)
    bad.raise_if_any()
    if len(out) == 0:
        raise DataError(f"no usable rows (task '{task.name}', split '{name}'; "
                        f"{out.dropped_unlabeled} rows without a gold label)", path=source)
    if out.dropped_unlabeled:
        log.warning("%s/%s: dropped %d rows without a gold label (%s)", task.name, name,
                    out.dropped_unlabeled, source)
    return task.kind.after_read(task, split, out) if labeled else out
