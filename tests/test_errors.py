"""Bad input gets one clear line from the CLI: ``mtdnn: error: <file>:<line>, field '<f>': ...``,
exit code 2, no traceback and no half-written output. One test per kind of bad input, end to end
through ``mtdnn.cli.main`` on tiny tasks and the tiny encoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mtdnn.cli import main
from mtdnn.errors import CheckpointError
from mtdnn.run_dir import load_weights
from toy_tasks import TASKS_YAML, train_argv, write_toy_data


@pytest.fixture()
def toy(tmp_path, tiny_encoder, cache_dir):
    """(task_file, data_dir, argv(**overrides) -> train argv, out dir)."""
    task_file, data_dir = write_toy_data(tmp_path)
    out = tmp_path / "run"

    def argv(*extra, data=data_dir, tasks="toycls,toyreg", task_file=task_file, encoder=tiny_encoder):
        return train_argv(task_file, data, encoder, cache_dir, out, *extra, tasks=tasks, epochs=1)

    return task_file, data_dir, argv, out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_encoder):
    """A finished one-epoch run of the toy tasks (read-only: copy it before damaging it)."""
    root = tmp_path_factory.mktemp("trained")
    task_file, data_dir = write_toy_data(root)
    run = root / "run"
    assert main(train_argv(task_file, data_dir, tiny_encoder, str(root / "cache"), run, epochs=1)) == 0
    return run


def fails(capsys, argv, *expected: str, absent: Path | None = None) -> str:
    """Run the CLI, expect exit 2 and one error line holding every ``expected`` piece."""
    assert expected, "name at least one piece of the expected message"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("mtdnn: error: ")]
    assert len(lines) == 1, err
    for piece in expected:
        assert piece in lines[0], f"{piece!r} not in {lines[0]!r}"
    if absent is not None:
        assert not absent.exists(), f"{absent} was left behind"
    return lines[0]


def _rewrite(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------------ data files
def test_missing_data_file(toy, capsys):
    task_file, data, argv, out = toy
    (data / "reg_dev.tsv").unlink()
    # looked for beside the task file, in the data dir and from the current folder: all named
    fails(capsys, argv(), "reg_dev.tsv: file not found", "toyreg", f"{data / 'reg_dev.tsv'} (in the data dir)",
          f"{task_file.parent / 'reg_dev.tsv'} (beside the task file)", absent=out)


def test_missing_data_directory(toy, capsys, tmp_path):
    task_file, data, argv, out = toy
    fails(capsys, argv(data=tmp_path / "nowhere"), "nowhere/cls_train.tsv", "data directory not found",
          absent=out)


def test_builtin_task_without_data_offline(toy, capsys, tmp_path):
    task_file, data, argv, out = toy
    fails(capsys, argv(data=tmp_path / "nowhere", tasks="rte"), "glue/RTE/train.tsv", "not found", absent=out)


def test_empty_file(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(data / "cls_train.tsv", "")
    fails(capsys, argv(), f"{data / 'cls_train.tsv'}: empty file", absent=out)


@pytest.mark.parametrize("row, found", [("x\tyes", 2), ("x\ty\tyes\textra", 4)])
def test_wrong_number_of_columns(toy, capsys, row, found):
    task_file, data, argv, out = toy
    _rewrite(data / "cls_train.tsv", f"a\tb\tlabel\nx\ty\tno\n{row}\nx\ty\tyes\n")
    fails(capsys, argv(), f"{data / 'cls_train.tsv'}:3, field 'columns'",
          f"{found} columns where 3 were expected", absent=out)


def test_label_outside_label_set(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(data / "cls_dev.tsv", "a\tb\tlabel\nx\ty\tno\nx\ty\tmaybe\n")
    fails(capsys, argv(), f"{data / 'cls_dev.tsv'}:3, field 'label'", "unknown label 'maybe'",
          "expected one of: yes, no", absent=out)


def test_non_numeric_score(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(data / "reg_train.tsv", "a\tb\tscore\nx\ty\t1.5\nx\ty\tfour\n")
    fails(capsys, argv(), f"{data / 'reg_train.tsv'}:3, field 'label'", "'four' is not a number", absent=out)


def test_bytes_not_utf8(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(data / "reg_train.tsv", b"a\tb\tscore\nx\ty\t1.5\nx\ty\t2\nca\xf1on\ty\t3\n")
    fails(capsys, argv(), f"{data / 'reg_train.tsv'}:4", "not UTF-8", absent=out)


def test_ranking_group_without_positive(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(data / "rank_train.tsv", "question\tanswer\tlabel\nq1\ta\tpos\nq1\tb\tneg\nq2\tc\tneg\nq2\td\tneg\n")
    fails(capsys, argv(tasks="toyrank"), f"{data / 'rank_train.tsv'}:4, field 'label'",
          "has no positive answer 'pos'", absent=out)


def test_many_bad_rows_report_first_few_and_count(toy, capsys):
    task_file, data, argv, out = toy
    rows = [f"s{i}\tt{i}\t{'bad' if i % 4 == 0 else 'yes'}" for i in range(1000)]
    _rewrite(data / "cls_train.tsv", "a\tb\tlabel\n" + "\n".join(rows) + "\n")
    line = fails(capsys, argv(), f"{data / 'cls_train.tsv'}:2, field 'label'",
                 "(250 bad rows in all, at lines 2, 6, 10, 14, 18 ...)", absent=out)
    assert len(line) < 300


def test_control_characters_in_a_bad_value_stay_on_one_line(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(data / "cls_train.tsv", 'a\tb\tlabel\nx\ty\tno\x0bway\u2028' + "z" * 500 + "\n")
    line = fails(capsys, argv(), f"{data / 'cls_train.tsv'}:2, field 'label'", absent=out)
    assert len(line) < 400


def test_bad_jsonl_rows(toy, capsys, tmp_path):
    task_file, data, argv, out = toy
    _rewrite(data / "j.jsonl", '{"a": "x", "b": "y", "label": "yes"}\n[1]\n{"a": "x"\n{"a": "x", "b": "y"}\n')
    _rewrite(task_file, TASKS_YAML.replace("{path: cls_train.tsv,", "{path: j.jsonl, format: jsonl,"))
    fails(capsys, argv(), f"{data / 'j.jsonl'}:2", "must be an object", "2 bad rows in all, at lines 2, 3",
          absent=out)


# ------------------------------------------------------------------------------------ tasks and config
def test_unknown_task(toy, capsys):
    task_file, data, argv, out = toy
    fails(capsys, argv(tasks="toycls,nosuch"), "field 'tasks'", "unknown task 'nosuch'", "toyreg", absent=out)


def test_task_listed_twice_is_named(toy, capsys):
    task_file, data, argv, out = toy
    fails(capsys, argv(tasks="toycls,toyreg,toycls"), "field 'tasks'", "task 'toycls' is listed twice", absent=out)


def test_task_yaml_missing_field(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(task_file, TASKS_YAML.replace("  type: regression\n", ""))
    fails(capsys, argv(), f"{task_file}: field 'type': missing required field", absent=out)


@pytest.mark.parametrize("old, new, expected", [
    ("  head: {kind: san, steps: 3}", "  head: {kind: san, steps: many}", "field 'head.steps': Input should be a valid integer"),
    ("  metrics: [pearson]", "  metrics: [pearson]\n  dropout: high", "field 'dropout': Input should be a valid number"),
    ("  labels: [\"yes\", \"no\"]", "  labels: yes", "field 'labels': Input should be a valid list"),
    ("  metrics: [pearson]", "  metrics: [bleu]", "field 'metrics.0': Input should be 'accuracy'"),
    ("role: train, columns", "role: train, colums", "field 'splits.train.colums': unknown field"),
])
def test_task_yaml_mistyped_field(toy, capsys, old, new, expected):
    task_file, data, argv, out = toy
    assert old in TASKS_YAML
    _rewrite(task_file, TASKS_YAML.replace(old, new, 1))
    fails(capsys, argv(), f"{task_file}: ", expected, absent=out)


def test_task_yaml_syntax_error_names_line(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(task_file, TASKS_YAML.replace("  input: pair\n", "  input: [pair\n", 1))
    fails(capsys, argv(), f"{task_file}:", "invalid YAML", absent=out)


@pytest.mark.parametrize("flag, value, expected", [
    ("--lr", "-0.001", "field 'lr': Input should be greater than 0"),
    ("--batch-size", "0", "field 'batch_size': Input should be greater than or equal to 1"),
    ("--max-seq-len", "1024", "field 'max_seq_len': 1024 is above the encoder's limit of 512 positions"),
    ("--epochs", "0", "field 'epochs'"),
    ("--optimizer", "sgd", "field 'optimizer'"),
    ("--checkpoint-every", "0", "field 'checkpoint_every'"),
    ("--on-nan", "ignore", "field 'on_nan'"),
])
def test_config_value_out_of_range(toy, capsys, flag, value, expected):
    task_file, data, argv, out = toy
    fails(capsys, argv(flag, value), expected, absent=out)


def test_config_file_value_out_of_range(toy, capsys, tmp_path):
    task_file, data, argv, out = toy
    cfg = _rewrite(tmp_path / "run.yaml", "tasks: toycls\nlr: -1\nbatch_size: 0\n")
    fails(capsys, ["train", "--config", str(cfg), "--output-dir", str(out)],
          f"{cfg}: field 'batch_size'", "field 'lr'", absent=out)
    _rewrite(cfg, "tasks: toycls\nlearning_rate: 0.1\n")
    fails(capsys, ["train", "--config", str(cfg)], "field 'learning_rate': unknown field")


# ------------------------------------------------------------------------------------ encoders and weights
@pytest.mark.parametrize("name, expected", [
    ("no-such-org/no-such-encoder", "cannot load"),
    ("/no/such/encoder/folder", "no such folder"),
])
def test_encoder_that_cannot_be_loaded_offline(toy, capsys, name, expected):
    task_file, data, argv, out = toy
    fails(capsys, argv(encoder=name), "field 'encoder'", name, expected, absent=out)


def test_encoder_with_corrupt_weights(toy, capsys, tmp_path, tiny_encoder):
    task_file, data, argv, out = toy
    enc = tmp_path / "enc"
    shutil.copytree(tiny_encoder, enc)
    weights = enc / "model.safetensors"
    _rewrite(weights, weights.read_bytes()[:5000])
    fails(capsys, argv(encoder=str(enc)), "field 'encoder'", "corrupt or truncated", absent=out)


def test_pickled_encoder_weights_are_never_loaded(toy, capsys, tmp_path, tiny_encoder):
    """An encoder folder with only a pickle (pytorch_model.bin) is refused without unpickling it."""
    import pickle

    task_file, data, argv, out = toy
    enc = tmp_path / "enc"
    shutil.copytree(tiny_encoder, enc)
    (enc / "model.safetensors").unlink()
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {sentinel}",))

    (enc / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    fails(capsys, argv(encoder=str(enc)), "field 'encoder'", "safetensors files only", absent=out)
    assert not sentinel.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights_file(trained, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ckpt = run / "checkpoints" / "epoch-1.safetensors"
    data = ckpt.read_bytes()
    _rewrite(ckpt, {"truncate": data[: len(data) - 100], "garbage": b"\x00\x01not safetensors" * 50,
                    "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="corrupt safetensors"):
        load_weights(ckpt)
    out = tmp_path / "metrics.json"
    fails(capsys, ["evaluate", str(run), "--output", str(out)], str(ckpt), "corrupt", absent=out)
    pred = tmp_path / "pred.tsv"
    inp = trained.parent / "data" / "cls_dev.tsv"
    fails(capsys, ["predict", str(run), "--task", "toycls", "--input", str(inp), "--output", str(pred)],
          str(ckpt), absent=pred)


def test_predict_missing_input_file(trained, tmp_path, capsys):
    pred = tmp_path / "pred.tsv"
    fails(capsys, ["predict", str(trained), "--task", "toycls", "--input", str(tmp_path / "in.tsv"),
                   "--output", str(pred)], f"{tmp_path / 'in.tsv'}: file not found", absent=pred)


def test_run_dir_with_corrupt_files(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _rewrite(run / "config.yaml", "tasks: [toycls\n")
    fails(capsys, ["evaluate", str(run)], str(run / "config.yaml"), "unreadable run config")
    shutil.rmtree(run)
    shutil.copytree(trained, run)
    _rewrite(run / "selection.json", '{"tasks": ')
    fails(capsys, ["evaluate", str(run)], str(run / "selection.json"))
    fails(capsys, ["evaluate", str(tmp_path)], "not a complete mtdnn run directory")


# ------------------------------------------------------------------------------------ --init-from
def test_init_from_with_other_task_definition(trained, toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(task_file, TASKS_YAML.replace('labels: ["yes", "no"]', 'labels: ["yes", "no", "maybe"]'))
    fails(capsys, argv("--init-from", str(trained)), "field 'init_from'", "task 'toycls' is defined differently",
          absent=out)


def test_init_from_with_other_encoder(trained, toy, capsys, tmp_path):
    task_file, data, argv, out = toy
    other = tmp_path / "other-encoder"
    shutil.copytree(trained / "encoder", other)
    fails(capsys, argv("--init-from", str(trained), encoder=str(other)), "field 'encoder'",
          "was trained with encoder", absent=out)


def test_init_from_with_mismatched_weights(trained, toy, capsys, tmp_path):
    """The run's encoder config says one architecture, its weights hold another."""
    task_file, data, argv, out = toy
    run = tmp_path / "src-run"
    shutil.copytree(trained, run)
    cfg = (run / "encoder" / "config.json").read_text().replace('"hidden_size": 32', '"hidden_size": 64')
    _rewrite(run / "encoder" / "config.json", cfg)
    fails(capsys, argv("--init-from", str(run), encoder="default"), "--init-from", "does not match",
          absent=out)


def test_init_from_not_a_run(toy, capsys):
    task_file, data, argv, out = toy
    fails(capsys, argv("--init-from", str(data)), "not a complete mtdnn run directory", absent=out)


# ------------------------------------------------------------------------------------ untrusted files
@pytest.mark.parametrize("where", ["task_file", "config"])
def test_yaml_python_tag_is_rejected_not_run(toy, capsys, tmp_path, where):
    task_file, data, argv, out = toy
    sentinel = tmp_path / "pwned"
    evil = f"!!python/object/apply:os.system ['touch {sentinel}']"
    if where == "task_file":
        _rewrite(task_file, TASKS_YAML.replace("type: regression", f"type: {evil}"))
        fails(capsys, argv(), f"{task_file}:", "invalid YAML", "python/object/apply:os.system", absent=out)
    else:
        cfg = _rewrite(tmp_path / "run.yaml", f"tasks: toycls\nlr: {evil}\n")
        fails(capsys, ["train", "--config", str(cfg)], f"{cfg}:2", "invalid YAML", "python/object/apply")
    assert not sentinel.exists()


def test_failed_run_leaves_previous_run_untouched(trained, toy, capsys, tmp_path):
    """Bad input found before training starts does not touch an existing run directory."""
    task_file, data, argv, out = toy
    shutil.copytree(trained, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert (out / "metrics.json") in before  # the copy holds the finished run
    _rewrite(data / "cls_dev.tsv", "a\tb\tlabel\nx\ty\tmaybe\n")
    fails(capsys, argv(), "unknown label 'maybe'")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


# ------------------------------------------------------------------------------------ groups, removed fields
def test_ranking_group_column_missing(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(task_file, TASKS_YAML.replace("columns: {text_a: question,", "columns: {group: qid, text_a: question,"))
    fails(capsys, argv(tasks="toyrank"), f"{data / 'rank_train.tsv'}:1, field 'group'",
          "column 'qid' not in the header ('question', 'answer', 'label')", absent=out)


def test_removed_loss_field_with_another_loss(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(task_file, TASKS_YAML.replace("  type: regression\n", "  type: regression\n  loss: cross_entropy\n"))
    fails(capsys, argv(), f"{task_file}, field 'loss': the field was removed", "does not fit type 'regression'",
          absent=out)


def test_yaml_control_character_is_one_line(toy, capsys):
    task_file, data, argv, out = toy
    _rewrite(task_file, TASKS_YAML.replace("- name: toyreg", "- name: toy\x1freg"))
    fails(capsys, argv(), f"{task_file}:", "invalid YAML: unacceptable character #x001f", absent=out)


@pytest.mark.parametrize("header,message", [(True, "rank_train.tsv:1: no header line"),
                                            (False, "rank_train.tsv: no usable rows")])
def test_file_of_only_a_byte_order_mark(toy, capsys, header, message):
    task_file, data, argv, out = toy
    if not header:
        _rewrite(task_file, TASKS_YAML.replace("{path: rank_train.tsv, role: train, columns: "
                                               "{text_a: question, text_b: answer, label: label}}",
                                               "{path: rank_train.tsv, role: train, header: false, columns: "
                                               "{text_a: 0, text_b: 1, label: 2}}"))
    _rewrite(data / "rank_train.tsv", b"\xef\xbb\xbf")
    fails(capsys, argv(tasks="toyrank"), message, absent=out)
