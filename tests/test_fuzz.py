"""Property-based tests: random rows, bytes, configs and task definitions fed to the readers, the
config loader and the task loader. The only allowed outcomes are a correct parse or an MtdnnError
(the clear one-line error of the CLI), never another exception."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtdnn.config import TrainConfig, load_config_file, make_config
from mtdnn.data.readers import RawSplit, read_split
from mtdnn.errors import MtdnnError
from mtdnn.tasks.schema import TaskDef, load_task_file, parse_task

# bounded for CI; MTDNN_FUZZ_EXAMPLES=2000 runs a longer search
FUZZ = settings(max_examples=int(os.environ.get("MTDNN_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

LABELS = ["yes", "no"]

# ------------------------------------------------------------------------------------- helpers
# text that stresses the parsers: separators, quotes, line breaks, odd Unicode
_odd = st.sampled_from(["\t", ",", '"', "'", "\n", "\r", "\r\n", "\x00", "\ufeff", "\u2028", "\x85",
                        "{", "}", "[", "]", ":", "\\", "-", "nan", "inf", "1e999", "yes", "no", " "])
_cell = st.one_of(st.text(max_size=12), _odd, st.sampled_from(LABELS),
                  st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str))
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
                         st.sampled_from([10 ** 400, -(10 ** 400)]),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                         st.sampled_from(LABELS + ["\ud800", "1e999", "-"]))
_json = st.recursive(_json_scalar, lambda c: st.one_of(st.lists(c, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), c, max_size=3)),
                     max_leaves=8)


def _task(fmt: str, ttype: str, single: bool, header: bool) -> TaskDef:
    named = header or fmt == "jsonl"
    cols = {"text_a": "a" if named else 0, "label": "y" if named else (1 if single else 2)}
    if not single:
        cols["text_b"] = "b" if named else 1
    spec = {"name": "fz", "type": ttype, "input": "ranking" if ttype == "ranking" else ("single" if single else "pair"),
            "labels": [] if ttype == "regression" else LABELS,
            "metrics": ["pearson"] if ttype == "regression" else ["accuracy"],
            "splits": {"train": {"path": f"data.{fmt}", "format": fmt, "header": header, "role": "train",
                                 "columns": cols}}}
    if ttype == "ranking":
        spec["splits"]["train"]["columns"]["text_b"] = "b" if named else 1
        spec["splits"]["train"]["columns"]["label"] = "y" if named else 2
    return parse_task(spec, "fuzz")


def _check_split(task: TaskDef, raw: RawSplit) -> None:
    n = len(raw)
    assert n > 0
    assert len(raw.ids) == len(raw.text_b) == len(raw.labels) == len(raw.lines) == n
    assert all(isinstance(a, str) for a in raw.text_a)
    for a in raw.text_a:
        a.encode("utf-8")  # no lone surrogates reach the tokenizer
    if task.type == "regression":
        assert all(isinstance(y, float) and math.isfinite(y) for y in raw.labels)
    else:
        assert all(y in task.labels for y in raw.labels)


def _read(task: TaskDef, payload: bytes) -> None:
    fmt = task.splits["train"].format
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / f"data.{fmt}").write_bytes(payload)
        try:
            raw = read_split(task, "train", d, allow_hub=False)
        except MtdnnError as e:
            assert str(e)
            return
        _check_split(task, raw)


_task_kind = st.tuples(st.sampled_from(["tsv", "csv", "jsonl"]),
                       st.sampled_from(["classification", "regression", "ranking"]),
                       st.booleans(), st.booleans())


def _make_task(kind) -> TaskDef:
    fmt, ttype, single, header = kind
    if ttype == "ranking":
        single = False
    return _task(fmt, ttype, single, header)


# ------------------------------------------------------------------------------------- readers
@FUZZ
@given(kind=_task_kind, payload=st.binary(max_size=300))
def test_reader_random_bytes(kind, payload):
    _read(_make_task(kind), payload)


@FUZZ
@given(kind=_task_kind, rows=st.lists(st.lists(_cell, min_size=0, max_size=5), max_size=8),
       newline=st.sampled_from(["\n", "\r\n"]))
def test_reader_random_rows(kind, rows, newline):
    task = _make_task(kind)
    fmt = task.splits["train"].format
    header = ["a", "b", "y"] if task.input != "single" else ["a", "y"]
    if fmt == "tsv":
        lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
        text = newline.join(lines) + newline
    elif fmt == "csv":
        import csv
        import io
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator=newline)
        w.writerow(header)
        w.writerows(rows)
        text = buf.getvalue()
    else:
        text = newline.join(json.dumps(dict(zip(header, r))) for r in rows)
    _read(task, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(kind=st.tuples(st.just("jsonl"), st.sampled_from(["classification", "regression", "ranking"]),
                      st.booleans(), st.just(True)),
       records=st.lists(st.one_of(st.dictionaries(st.sampled_from(["a", "b", "y", "z"]), _json, max_size=4), _json),
                        max_size=6))
def test_reader_random_json_records(kind, records):
    lines = []
    for r in records:
        try:
            lines.append(json.dumps(r))
        except ValueError:
            lines.append("{")
    _read(_make_task(kind), "\n".join(lines).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("line", ['{"a": "x", "b": "y", "y": 1%s}' % ("0" * 400),      # int beyond float
                                  '{"a": "x", "b": "y", "y": 1%s}' % ("0" * 5000),     # beyond int parsing
                                  '{"a": "\\ud800", "b": "y", "y": "yes"}',           # lone surrogate
                                  '[' * 100000, '{"a": ' * 50000])                      # nesting
@pytest.mark.parametrize("ttype", ["classification", "regression"])
def test_reader_json_nasties(line, ttype):
    task = _task("jsonl", ttype, False, True)
    good = '{"a": "x", "b": "y", "y": %s}' % ('"yes"' if ttype == "classification" else "1.5")
    _read(task, (good + "\n" + line + "\n").encode("utf-8"))


def test_reader_keeps_good_rows(tmp_path):
    """The properties above accept an error for everything; a valid file must parse."""
    task = _task("tsv", "classification", False, True)
    (tmp_path / "data.tsv").write_text("a\tb\ty\nx\ty\tyes\nz\tw\tno\n", encoding="utf-8")
    raw = read_split(task, "train", tmp_path, allow_hub=False)
    assert raw.labels == ["yes", "no"] and raw.text_b == ["y", "w"]


# ------------------------------------------------------------------------------------- config
_fields = sorted(TrainConfig.model_fields)
_values = st.one_of(_json_scalar, st.lists(_json_scalar, max_size=3),
                    st.dictionaries(st.text(max_size=5), _json_scalar, max_size=2),
                    st.sampled_from(["rte", "rte,mrpc", "adamw", "best", "last", "cpu", "skip", "stop"]))


@FUZZ
@given(values=st.dictionaries(st.one_of(st.sampled_from(_fields), st.text(max_size=8)), _values, max_size=8),
       base=st.booleans())
def test_make_config_random(values, base):
    start = {"tasks": "rte"} if base else {}
    try:
        cfg = make_config(start, values)
    except MtdnnError as e:
        assert str(e)
        return
    assert isinstance(cfg, TrainConfig) and cfg.tasks and cfg.lr > 0 and cfg.batch_size >= 1


@FUZZ
@given(text=st.one_of(st.text(max_size=200),
                      st.dictionaries(st.sampled_from(_fields), _values, max_size=5).map(json.dumps)))
def test_config_file_random(text):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "c.yaml"
        f.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            make_config(load_config_file(f), source=str(f))
        except MtdnnError:
            pass


# ------------------------------------------------------------------------------------- tasks
_split = st.fixed_dictionaries(
    {"columns": st.one_of(st.fixed_dictionaries({"text_a": st.one_of(st.text(max_size=3), st.integers(-2, 3))},
                                                optional={"text_b": _json_scalar, "label": _json_scalar}),
                          _json)},
    optional={"path": _json_scalar, "format": st.sampled_from(["tsv", "csv", "jsonl", "parquet", "xml"]),
              "role": st.sampled_from(["train", "dev", "test", "other"]), "labeled": _json_scalar,
              "header": _json_scalar, "label_map": _json, "missing_labels": _json})
_task_dict = st.fixed_dictionaries(
    {},
    optional={"name": st.one_of(st.text(max_size=6), st.just("ok")),
              "type": st.sampled_from(["classification", "regression", "ranking", "other"]),
              "input": st.sampled_from(["single", "pair", "ranking", 3]),
              "labels": st.one_of(st.lists(st.text(max_size=3), max_size=3), _json),
              "metrics": st.lists(st.sampled_from(["accuracy", "f1", "mcc", "pearson", "bleu"]), max_size=2),
              "head": st.one_of(st.fixed_dictionaries({}, optional={"kind": st.sampled_from(["linear", "san", "x"]),
                                                                   "steps": _json_scalar}), _json),
              "dropout": _json_scalar, "loss": _json_scalar, "ranking_gamma": _json_scalar,
              "splits": st.one_of(st.dictionaries(st.sampled_from(["train", "dev"]), _split, max_size=2), _json),
              "bogus": _json_scalar})


@FUZZ
@given(data=st.one_of(_task_dict, _json))
def test_parse_task_random(data):
    try:
        task = parse_task(data, "fuzz.yaml")
    except MtdnnError as e:
        assert "fuzz.yaml" in str(e)
        return
    assert isinstance(task, TaskDef) and task.splits


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.lists(_task_dict, max_size=2).map(json.dumps)))
def test_task_file_random(text):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "t.yaml"
        f.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_task_file(f)
        except MtdnnError:
            pass


@pytest.mark.parametrize("text", ["!!python/object/apply:os.system ['true']",
                                  "name: !!python/name:os.system\n", "a: !!binary aGk=\nb: !!set {x}\n",
                                  "&a [*a]", "&a {name: *a, splits: *a, tasks: *a}", "[" * 1000, "[" * 1000 + "]" * 1000])
def test_yaml_nasties(tmp_path, text):
    f = tmp_path / "t.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(MtdnnError):
        load_task_file(f)
    with pytest.raises(MtdnnError):
        make_config(load_config_file(f), source=str(f))
