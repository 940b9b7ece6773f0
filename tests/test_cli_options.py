"""The options of ``mtdnn train`` have one source, :class:`mtdnn.config.TrainConfig`: every field is
a flag typed by its annotation, ``--help`` shows the real defaults, old spellings still work, a
``--config`` file is overridden only by the flags given, the fields ``--resume`` may change are
marked on the fields, and the defaults and ``configs/paper.yaml`` hold the documented values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import yaml

from mtdnn.cli import build_parser, main
from mtdnn.commands.config_flags import config_from_args
from mtdnn.config import TrainConfig, make_config

REPO = Path(__file__).resolve().parents[1]
FIELDS = set(TrainConfig.model_fields)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse(*argv: str) -> dict[str, Any]:
    return vars(build_parser().parse_args(["train", *argv]))


def _help_text(capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _help_entries(text: str) -> dict[str, str]:
    """``--flag`` -> its help entry (whitespace collapsed), for every option of ``--help``."""
    entries: dict[str, str] = {}
    blocks = re.split(r"\n(?=  -)", text.split("\noptions:\n", 1)[1])
    for block in blocks:
        flat = " ".join(block.split())
        entries[flat.split()[0].rstrip(",")] = flat
    return entries


def _one_error_line(capsys, argv: list[str], *pieces: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtdnn: error: "), err
    for piece in pieces:
        assert piece in lines[0], (piece, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------ one flag per field
def test_every_field_is_a_flag_and_nothing_else():
    dests = set(_parse())
    assert dests - {"command", "verbose", "config"} == FIELDS
    assert all(_parse()[name] is None for name in FIELDS)  # not given: None, so --config values stay


# a value string for each kind of field and what argparse must make of it
_SAMPLES = {int: ("16", 16), float: ("0.5", 0.5), str: ("x", "x")}


def _sample(name: str) -> tuple[list[str], Any]:
    """Flag and value for a field, and what argparse must make of them."""
    ann = TrainConfig.model_fields[name].annotation
    if ann is bool:
        return [_flag(name)], True
    if get_origin(ann) is Literal:
        choice = get_args(ann)[-1]
        return [_flag(name), choice], choice
    if get_origin(ann) is list:
        return [_flag(name), "a,b"], "a,b"  # the field's validator splits it
    if get_origin(ann) is dict:
        return [_flag(name), "rte=3"], {"rte": 3}
    base = next(a for a in (get_args(ann) or (ann,)) if a is not type(None))
    text, value = _SAMPLES[base]
    return [_flag(name), text], value


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_each_flag_parses_into_its_field(name):
    argv, want = _sample(name)
    assert _parse(*argv)[name] == want
    if TrainConfig.model_fields[name].annotation is bool:
        assert _parse("--no-" + name.replace("_", "-"))[name] is False


def test_types_of_the_flags():
    got = _parse("--epochs", "3", "--lr", "2e-4", "--max-train-examples", "100", "--threads", "2",
                 "--optimizer", "adamax", "--no-progress", "--compile", "--selection", "last")
    assert (got["epochs"], got["lr"], got["max_train_examples"], got["threads"]) == (3, 2e-4, 100, 2)
    assert (got["optimizer"], got["progress"], got["compile"], got["selection"]) == ("adamax", False, True, "last")


@pytest.mark.parametrize("argv, field, value", [
    (["--task-file", "a.yaml,b.yaml"], "task_files", "a.yaml,b.yaml"),
    (["--no-hub"], "allow_hub", False),
    (["--hub"], "allow_hub", True),
    (["--no-predict-test"], "predict_test", False),
    (["--no-group-by-length"], "group_by_length", False),
    (["--no-progress"], "progress", False),
    (["--compile"], "compile", True),
    (["--no-cls-only-last-layer"], "cls_only_last_layer", False),
    (["--activation-checkpointing"], "activation_checkpointing", True),
    (["--resume", "runs/x"], "resume", "runs/x"),
    (["--init-from", "runs/y"], "init_from", "runs/y"),
    (["--config", "run.yaml"], "config", "run.yaml"),
])
def test_old_spellings_still_work(argv, field, value):
    assert _parse(*argv)[field] == value


# ------------------------------------------------------------------------------ --help
def test_help_shows_the_real_defaults(capsys):
    text = _help_text(capsys)
    assert "(default: None)" not in text
    entries = _help_entries(text)
    by_hand = {"--max-seq-len": "(default: 128)", "--lr": "(default: 0.0001)", "--optimizer": "(default: adamw)",
               "--batch-size": "(default: 32)", "--epochs": "(default: 5)", "--warmup-ratio": "(default: 0.1)",
               "--max-grad-norm": "(default: 1.0)", "--selection": "(default: best)", "--progress": "(default: on)",
               "--compile": "(default: off)", "--dist-timeout": "(default: 600)",
               "--output-dir": "(default: runs/mtdnn)", "--task-files": "(default: none)"}
    for flag, piece in by_hand.items():
        assert piece in entries[flag], (flag, entries[flag])
    for name, info in TrainConfig.model_fields.items():
        entry = entries[_flag(name)]
        description = " ".join((info.description or "").split())
        assert description and description in entry, name
        has_default = not info.is_required() and info.get_default(call_default_factory=True) is not None
        assert ("(default: " in entry) == has_default, entry


def test_help_quotes_the_paper_where_it_gives_a_value(capsys):
    entries = _help_entries(_help_text(capsys))
    for flag, paper in [("--epochs", "5"), ("--batch-size", "32"), ("--lr", "5e-5"), ("--warmup-ratio", "0.1"),
                        ("--max-grad-norm", "1.0"), ("--max-seq-len", "512")]:
        assert f"(paper: {paper}" in entries[flag], entries[flag]
    assert "adamax (paper)" in entries["--optimizer"]


# ------------------------------------------------------------------------------ bad flags
@pytest.mark.parametrize("flag, value, field", [
    ("--optimizer", "sgd", "optimizer"),
    ("--selection", "worst", "selection"),
    ("--device", "tpu", "device"),
    ("--precision", "fp8", "precision"),
    ("--on-nan", "ignore", "on_nan"),
])
def test_bad_choice_is_one_line_from_argparse(capsys, flag, value, field):
    line = _one_error_line(capsys, ["train", "--tasks", "rte", flag, value],
                           f"field '{field}'", f"{flag}: invalid choice: '{value}'")
    assert "choose from" in line


def test_bad_type_is_one_line(capsys):
    _one_error_line(capsys, ["train", "--tasks", "rte", "--epochs", "1.5"],
                    "field 'epochs'", "invalid int value: '1.5'")
    _one_error_line(capsys, ["train", "--tasks", "rte", "--bogus"], "unrecognized arguments: --bogus")


def test_task_sizes_flag():
    assert _parse("--max-train-examples-per-task", "rte=10,stsb=5")["max_train_examples_per_task"] == \
        {"rte": 10, "stsb": 5}
    assert _parse("--max-train-examples-per-task", " rte = 10 , ")["max_train_examples_per_task"] == {"rte": 10}
    cfg = config_from_args(build_parser().parse_args(
        ["train", "--tasks", "rte,stsb", "--max-train-examples", "100",
         "--max-train-examples-per-task", "rte=10"]))
    assert (cfg.train_subset("rte"), cfg.train_subset("stsb")) == (10, 100)


@pytest.mark.parametrize("value, piece", [
    ("rte:10", "got 'rte:10'"), ("rte=x", "got 'rte=x'"), ("=3", "got '=3'"), ("rte", "got 'rte'"),
    ("rte=1,rte=2", "task 'rte' is given twice"),
])
def test_task_sizes_flag_bad_syntax(capsys, value, piece):
    _one_error_line(capsys, ["train", "--tasks", "rte", "--max-train-examples-per-task", value],
                    "field 'max_train_examples_per_task'", piece)


def test_task_sizes_flag_below_one(capsys):
    _one_error_line(capsys, ["train", "--tasks", "rte", "--max-train-examples-per-task", "rte=0"],
                    "field 'max_train_examples_per_task'", "subset sizes must be >= 1 (task rte)")


# ------------------------------------------------------------------------------ --config and flags
def test_config_file_values_stay_unless_a_flag_is_given(tmp_path):
    values = {"tasks": ["rte", "stsb"], "lr": 3e-4, "optimizer": "adamax", "progress": False, "compile": True,
              "max_train_examples_per_task": {"rte": 7}, "task_files": ["a.yaml"], "max_seq_len": 64}
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump(values), encoding="utf-8")
    kept = config_from_args(build_parser().parse_args(["train", "--config", str(f)]))
    assert kept == make_config(values)
    assert (kept.lr, kept.optimizer, kept.progress, kept.compile) == (3e-4, "adamax", False, True)
    assert kept.max_train_examples_per_task == {"rte": 7} and kept.max_seq_len == 64

    over = config_from_args(build_parser().parse_args(
        ["train", "--config", str(f), "--lr", "2e-5", "--optimizer", "adamw", "--progress", "--no-compile",
         "--max-train-examples-per-task", "stsb=9", "--tasks", "mrpc"]))
    assert (over.lr, over.optimizer, over.progress, over.compile) == (2e-5, "adamw", True, False)
    assert over.max_train_examples_per_task == {"stsb": 9} and over.tasks == ["mrpc"]
    assert over.max_seq_len == 64 and over.task_files == ["a.yaml"]  # not given: the file's


# ------------------------------------------------------------------------------ resume marker
def test_resume_may_change_is_marked_on_the_fields():
    assert TrainConfig.resume_may_change() == frozenset({
        "resume", "output_dir", "data_dir", "cache_dir", "allow_hub", "device", "threads", "num_workers",
        "progress", "log_every", "checkpoint_every", "save_all_epochs", "on_nan", "task_files", "dist_timeout",
        "activation_checkpointing", "cls_only_last_layer",
        "log_grad_cosine"})  # a diagnostic: computed without dropout, it changes nothing


# ------------------------------------------------------------------------------ defaults, paper config
def test_defaults_suit_the_default_encoder():
    cfg = make_config(overrides={"tasks": "rte"})
    assert (cfg.optimizer, cfg.lr, cfg.warmup_ratio, cfg.batch_size, cfg.max_seq_len) == ("adamw", 1e-4, 0.1, 32, 128)
    assert (cfg.epochs, cfg.max_grad_norm, cfg.encoder) == (5, 1.0, "default")
    assert cfg.pair_head == "linear"  # exports to a standard folder; SAN did not pay here (docs/results.md)


def test_paper_config_has_the_papers_settings():
    path = REPO / "configs" / "paper.yaml"
    assert "tasks" not in yaml.safe_load(path.read_text(encoding="utf-8"))  # given by flag
    cfg = config_from_args(build_parser().parse_args(["train", "--config", str(path), "--tasks", "rte"]))
    assert cfg.tasks == ["rte"] and cfg.optimizer == "adamax" and cfg.lr == 5e-5
    assert (cfg.batch_size, cfg.epochs, cfg.warmup_ratio, cfg.max_grad_norm, cfg.max_seq_len) == (32, 5, 0.1, 1.0, 512)
    assert cfg.pair_head == "san"  # the paper's answer module on pair classification


def test_paper_config_without_tasks_names_the_field(capsys):
    _one_error_line(capsys, ["train", "--config", str(REPO / "configs" / "paper.yaml")],
                    "paper.yaml", "field 'tasks'", "missing required field")
