"""No half runs: an unexpected exception in training or a command ends with one line naming the
log file that holds its traceback, a non-zero exit, and a run directory that says it is incomplete
and that ``--resume`` continues (toy tasks, tiny encoder)."""

from __future__ import annotations

import json
import logging

import pytest

from mtdnn.api import load_run
from mtdnn.cli import main
from mtdnn.errors import CheckpointError
from mtdnn.failures import TrainingProgress, recorded_training_failures
from mtdnn.run_dir import RunDir
from toy_tasks import train_argv, write_toy_data
from checks import one_error_line

pytestmark = pytest.mark.slow


@pytest.fixture()
def toy(tmp_path, tiny_encoder, cache_dir):
    task_file, data = write_toy_data(tmp_path)
    run = tmp_path / "run"
    return run, data, train_argv(task_file, data, tiny_encoder, cache_dir, run, epochs=3)


def _fail_on_call(monkeypatch, target: str, n: int, exc: Exception) -> None:
    """Make ``target`` raise ``exc`` on its n-th call (earlier calls run it)."""
    module, name = target.rsplit(".", 1)
    import importlib
    original = getattr(importlib.import_module(module), name)
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise exc
        return original(*args, **kwargs)

    monkeypatch.setattr(target, wrapped)


def test_crash_in_evaluation_leaves_a_run_that_resumes(toy, capsys, caplog, tmp_path, tiny_encoder, cache_dir):
    run, data, argv = toy
    with pytest.MonkeyPatch.context() as mp:
        _fail_on_call(mp, "mtdnn.training.loop.evaluate_tasks", 2,
                      ValueError("Target is multiclass but average='binary'"))
        assert main(argv) == 1
    line = one_error_line(capsys)
    assert line == ("mtdnn: error: training stopped while evaluating or saving epoch 2 by an unexpected ValueError: "
                    f"Target is multiclass but average='binary'; the full traceback is in {run / 'error.log'}; "
                    f"the run is incomplete: continue it with `mtdnn train --resume {run}`")
    log = (run / "error.log").read_text()
    assert log.startswith("training stopped while evaluating or saving epoch 2\n")
    assert "Traceback (most recent call last)" in log and "training/loop.py" in log
    assert log.rstrip().endswith("ValueError: Target is multiclass but average='binary'")
    assert not (run / "metrics.json").exists()
    # the run says it is incomplete; what it has (epoch 1) can be used, with a warning
    reason = RunDir(run).incomplete_reason()
    assert reason == (f"the run is incomplete: it finished 1 of 3 epochs; it stopped with an error, see "
                      f"{run / 'error.log'}; continue it with `mtdnn train --resume {run}`")
    with caplog.at_level(logging.WARNING, logger="mtdnn.api"):
        assert load_run(run, device="cpu").incomplete == reason
    assert f"{run}: {reason}; using the epochs it finished" in caplog.text
    assert main(["evaluate", str(run), "--data-dir", str(data)]) == 0
    # --resume continues from the end of epoch 1 and ends as an uninterrupted run does
    assert main(["train", "--resume", str(run)]) == 0
    assert RunDir(run).incomplete_reason() is None and load_run(run, device="cpu").incomplete is None
    whole = tmp_path / "whole"
    assert main(train_argv(*write_toy_data(tmp_path), tiny_encoder, cache_dir, whole, epochs=3)) == 0
    for name in ("metrics.json", "selection.json"):
        assert json.loads((run / name).read_text()) == json.loads((whole / name).read_text())
    assert json.loads((run / "reports" / "toycls.dev.json").read_text()) == \
        json.loads((whole / "reports" / "toycls.dev.json").read_text())


def test_crash_in_the_first_epoch_leaves_a_run_that_refuses_to_load(toy, capsys):
    run, data, argv = toy
    with pytest.MonkeyPatch.context() as mp:
        _fail_on_call(mp, "mtdnn.training.loop.train_step", 3, RuntimeError("CUDA error: device-side assert"))
        assert main(argv) == 1
    line = one_error_line(capsys)
    assert line.startswith("mtdnn: error: training stopped in epoch 1 at batch 3 by an unexpected RuntimeError: "
                           "CUDA error: device-side assert; the full traceback is in ")
    expected = (f"{run}: the run is incomplete: no epoch finished, so it has no weights; it stopped with an error, "
                f"see {run / 'error.log'}; continue it with `mtdnn train --resume {run}`")
    with pytest.raises(CheckpointError) as err:
        load_run(run, device="cpu")
    assert str(err.value) == expected
    pred = run.parent / "pred.tsv"
    assert main(["predict", str(run), "--task", "toycls", "--input", str(data / "cls_dev.tsv"),
                 "--output", str(pred)]) == 2
    assert one_error_line(capsys) == f"mtdnn: error: {expected}"
    assert not pred.exists()
    # no checkpoint yet: --resume starts the run again and completes it
    assert main(["train", "--resume", str(run)]) == 0
    assert RunDir(run).incomplete_reason() is None
    assert not (run / "error.log").exists()  # the restarted run cleared the old failure


def test_crash_while_setting_up(toy, capsys, monkeypatch):
    run, data, argv = toy
    monkeypatch.setattr("mtdnn.training.job.build_setup", lambda *a, **k: {}["no such key"])
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert line == ("mtdnn: error: training stopped while setting up the run by an unexpected KeyError: "
                    f"'no such key'; the full traceback is in {run / 'error.log'}; nothing was trained yet: run "
                    "the command again once the cause is fixed")
    assert "KeyError: 'no such key'" in (run / "error.log").read_text()


def test_unexpected_error_of_a_command_on_a_run(toy, capsys, monkeypatch):
    run, data, argv = toy
    assert main(argv + ["--epochs", "1"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("mtdnn.api.Run.evaluation", lambda self, *a, **k: [][1])
    assert main(["evaluate", str(run), "--data-dir", str(data)]) == 1
    log = run / "error-evaluate.log"
    assert one_error_line(capsys) == ("mtdnn: error: mtdnn evaluate failed with an unexpected IndexError: list "
                                       f"index out of range; the full traceback is in {log}")
    assert log.read_text().startswith("mtdnn evaluate failed\n") and "IndexError" in log.read_text()
    assert RunDir(run).incomplete_reason() is None  # a failed evaluation does not touch the run


def test_unexpected_error_without_a_run_dir_goes_to_the_temporary_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr("mtdnn.tasks.registry.TaskRegistry.names", lambda self: 1 / 0)
    assert main(["tasks"]) == 1
    line = one_error_line(capsys)
    (log,) = tmp_path.glob("mtdnn-tasks-*.log")
    assert line == ("mtdnn: error: mtdnn tasks failed with an unexpected ZeroDivisionError: division by zero; "
                    f"the full traceback is in {log}")


def test_torchrun_ranks_keep_their_exception(tmp_path, monkeypatch):
    """Under torchrun the original exception goes on to report_crash; its log is per rank."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(OSError, match="disk full"):
        with recorded_training_failures(tmp_path, TrainingProgress(epochs=2)):
            raise OSError("disk full")
    assert "OSError: disk full" in (tmp_path / "error-rank1.log").read_text()
    assert not (tmp_path / "error.log").exists()


def test_the_process_training_a_run_is_recorded_and_a_second_writer_refused(toy, capsys, tmp_path):
    """training.json names the process while it trains and is gone when it ends (finished or
    crashed); a living owner makes --resume and a new run into the directory a one-line refusal; a
    dead or foreign owner is described, and a dead one's run resumes."""
    import os
    import socket
    import subprocess
    import sys

    run, data, argv = toy
    seen = []
    with pytest.MonkeyPatch.context() as mp:
        import mtdnn.training.loop as loop
        real = loop.evaluate_tasks

        def watching(*args, **kwargs):
            seen.append(json.loads((run / "training.json").read_text()))
            if len(seen) == 2:
                raise ValueError("stop here")
            return real(*args, **kwargs)

        mp.setattr(loop, "evaluate_tasks", watching)
        assert main(argv) == 1
    capsys.readouterr()
    assert {(s["pid"], s["host"]) for s in seen} == {(os.getpid(), socket.gethostname())}
    assert not (run / "training.json").exists()  # released by the crash
    (run / "error.log").unlink()

    def owner(pid: int, host: str | None = None) -> None:
        (run / "training.json").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                       "started": "2026-12-02 03:00:00"}))

    resume = f"continue it with `mtdnn train --resume {run}`"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        owner(child.pid)
        busy = f"process {child.pid} of this machine has been training it since 2026-12-02 03:00:00"
        assert RunDir(run).incomplete_reason() == (f"the run is incomplete: it finished 1 of 3 epochs (it is still "
                                                   f"training: {busy}); {resume}")
        for args in (["train", "--resume", str(run)], argv):
            assert main(args) == 2
            assert one_error_line(capsys) == (f"mtdnn: error: {run}: the run is being trained now ({busy}): stop "
                                              "that process first; two processes must not write one run directory")
        assert json.loads((run / "training.json").read_text())["pid"] == child.pid  # left as it was
    finally:
        child.kill()
        child.wait()
    owner(child.pid, host="elsewhere")
    assert f"(it may still be training on elsewhere, process {child.pid})" in RunDir(run).incomplete_reason()
    owner(child.pid)  # the process has ended
    assert RunDir(run).incomplete_reason() == (f"the run is incomplete: it finished 1 of 3 epochs (it was stopped: "
                                               f"process {child.pid}, which trained it, is gone); {resume}")
    assert main(["train", "--resume", str(run)]) == 0
    assert not (run / "training.json").exists() and RunDir(run).incomplete_reason() is None
