"""experiments.cells, the toolkit the experiment runners share: claiming a cell by a lock file
(a dead process's lock is taken over, a living one's or another machine's is not), the work loop
over a small grid of fake cells, the plan's seconds left per column, the records and statistics,
the comparison of a cell trained again with its record, and the one command line calling the
experiment's callables."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import experiments.adapters
import experiments.cells
import experiments.interference
import experiments.run
import experiments.smart_distill
from experiments import settings


@pytest.fixture(scope="module")
def kit():
    return experiments.cells


@pytest.fixture()
def child():
    """A living process of this machine (not this one), ended after the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # exited and reaped: no process has this pid now
    return proc.pid


def _owner(lock: Path, pid: int, host: str | None = None, stream: str = "1") -> None:
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "stream": stream}))


def test_claim_writes_pid_host_and_stream(kit, tmp_path):
    lock = tmp_path / "locks" / "a__b.lock"
    assert kit.claim(lock, "2")
    assert json.loads(lock.read_text()) == {"pid": os.getpid(), "host": socket.gethostname(), "stream": "2"}
    assert list(json.loads(lock.read_text())) == ["pid", "host", "stream"]
    assert not kit.claim(lock, "1")  # held by this (living) process
    assert kit.lock_file(tmp_path / "locks", kit.result_file(tmp_path, "a/b")) == lock


def test_lock_of_a_dead_process_is_taken_over(kit, tmp_path):
    lock = tmp_path / "x.lock"
    dead = _dead_pid()
    _owner(lock, dead)
    assert not kit.alive(lock)
    assert kit.claim(lock, "2")
    assert json.loads(lock.read_text()) == {"pid": os.getpid(), "host": socket.gethostname(), "stream": "2"}


def test_lock_of_a_living_process_or_another_machine_is_kept(kit, tmp_path, child):
    lock = tmp_path / "x.lock"
    _owner(lock, child.pid, stream="1")
    before = lock.read_text()
    assert kit.alive(lock) and not kit.claim(lock, "2")
    assert lock.read_text() == before
    _owner(lock, _dead_pid(), host=socket.gethostname() + "-elsewhere")  # its pid means nothing here
    assert kit.alive(lock) and not kit.claim(lock, "2")
    lock.write_text('{"pid": ')  # being written by its owner
    assert kit.alive(lock) and not kit.claim(lock, "2")


@dataclass
class FakeCell:
    name: str
    needs: list[str] = field(default_factory=list)


def _grid(kit, tmp_path, cells, done, ran):
    def run(cell):
        assert kit.lock_file(tmp_path, tmp_path / cell.name).is_file()  # held while it runs
        ran.append(cell.name)
        done.add(cell.name)

    rounds: list[int] = []

    def every_cell():  # a round of the loop; more than one per cell plus one means it is stuck
        rounds.append(1)
        if len(rounds) > len(cells) + 1:
            pytest.fail(f"the work loop is still waiting after {len(rounds) - 1} rounds")
        return cells

    return kit.ClaimedGrid(cells=every_cell, done=lambda n: n in done,
                           ready=lambda c: all(n in done for n in c.needs),
                           lock=lambda n: kit.lock_file(tmp_path, tmp_path / n), locks=tmp_path, run=run)


def test_work_runs_ready_cells_in_order_and_releases_locks(kit, tmp_path):
    cells = [FakeCell("b", ["a"]), FakeCell("a"), FakeCell("c"), FakeCell("d", ["c"]), FakeCell("e")]
    _owner(kit.lock_file(tmp_path, tmp_path / "e"), _dead_pid())  # left by a killed stream
    done, ran = {"c"}, []
    assert kit.work(_grid(kit, tmp_path, cells, done, ran), "1", "", poll=0.0) == 0
    # round 1: b waits for a, so a; then b (a is recorded), d, and e (its dead owner's lock taken over)
    assert ran == ["a", "b", "d", "e"]
    assert list(tmp_path.glob("*.lock")) == []


def test_work_stops_when_the_cells_left_wait_outside_only(kit, tmp_path, capsys):
    cells = [FakeCell("x/1", ["y/1"]), FakeCell("y/1")]
    ran: list[str] = []
    assert kit.work(_grid(kit, tmp_path, cells, set(), ran), "1", "x/", poll=0.0) == 1
    assert ran == [] and "nothing runnable" in capsys.readouterr().out


def test_a_cell_finished_by_another_stream_after_the_listing_is_not_run_again(kit, tmp_path):
    """The loop lists the cells not done, then claims one: a stream that recorded that cell and let
    go of its lock in between must not make this stream run (and overwrite) it."""
    cells = [FakeCell("a")]
    done, ran, listings = set(), [], []

    def listing():
        listings.append(1)
        if len(listings) > 2:
            pytest.fail("the work loop is still going after the only cell was recorded")
        return cells

    def done_check(name):
        if kit.lock_file(tmp_path, tmp_path / name).is_file():
            done.add(name)  # "a" was not done when listed; another stream records it just after the claim
        return name in done

    grid = kit.ClaimedGrid(cells=listing, done=done_check, ready=lambda c: True,
                           lock=lambda n: kit.lock_file(tmp_path, tmp_path / n), locks=tmp_path,
                           run=lambda c: ran.append(c.name))
    assert kit.work(grid, "1", "", poll=0.0) == 0
    assert ran == [] and list(tmp_path.glob("*.lock")) == []


def test_seconds_left_per_column(kit):
    rows = [kit.PlanRow("a", "done", "mt", 600.0), kit.PlanRow("b", "todo", "base", 120.0),
            kit.PlanRow("c", "pending", "mt", 60.0), kit.PlanRow("d", "todo", "base", 30.0)]
    assert kit.seconds_left(rows) == {"mt": 60.0, "base": 150.0}
    assert list(kit.seconds_left(rows)) == ["mt", "base"]
    table = kit.PlanTable("head", lambda r: f"{r.state} {r.name}", lambda rs: [f"{len(rs)} cells"])
    assert table.lines(rows[:2]) == ["head", "done a", "todo b", "2 cells"]


def test_common_command_line_calls_the_experiment(kit, capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls: list[tuple] = []
    recorded = {"cell": "a/b", "metrics": {"t": {"dev": {"score": 1.0}}}, "machine": "m"}
    runner = kit.Runner("doc", names=lambda: ["a/b", "a/c"], plan=lambda: calls.append(("plan",)) or 0,
                        run=lambda *a, **k: calls.append(("run", *a, k)) or 3,
                        cell=lambda *a, **k: calls.append(("cell", *a, k)) or 0,
                        check=lambda *a: calls.append(("check", *a)) or (recorded, {**recorded, "machine": "m"}),
                        summarize=lambda: calls.append(("summarize",)) or 0, summarize_help="tables",
                        streams=kit.Streams("which cells", "all", ("all", "mt")),
                        worker=lambda *a: calls.append(("worker", *a)) or 0, flags={"again": "once more"})
    assert kit.main(runner, ["--plan"]) == 0 and kit.main(runner, ["--summarize"]) == 0
    assert kit.main(runner, ["--run", "--stream", "mt", "--only", "a/", "--threads", "1"]) == 3
    assert kit.main(runner, ["--cell", "a/c", "--again"]) == 0
    assert kit.main(runner, ["--cell", "a/b", "--check", "--threads", "2"]) == 0
    assert kit.main(runner, ["--worker", "a/b"]) == 0
    assert calls == [("plan",), ("summarize",), ("run", "mt", "a/", 1, {"again": False}),
                     ("cell", "a/c", None, {"again": True}), ("check", "a/b", 2), ("worker", "a/b", None)]
    assert "a/b: 1 of 1 recorded values reproduced exactly (all)" in capsys.readouterr().out
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for wrong, message in [(["--plan", "--run"], "not allowed with argument --plan"),
                           (["--cell", "x/y"], "unknown cell x/y"), (["--run", "--check"], "--check goes with --cell")]:
        with pytest.raises(SystemExit):
            kit.main(runner, wrong)
        assert message in capsys.readouterr().err


def test_compare_reports_what_a_cell_trained_again_did_not_reproduce(kit, capsys):
    recorded = {"cell": "c", "metrics": {"rte": {"dev": {"accuracy": 56.0}}}, "train_loss": [0.7, 0.6],
                "wall_seconds": 10.0, "machine": "AMD"}
    assert kit.compare(recorded, {**recorded, "wall_seconds": 12.0})  # times are not compared
    assert "3 of 3 recorded values reproduced exactly (all)" in capsys.readouterr().out
    assert not kit.compare(recorded, {**recorded, "train_loss": [0.7, 0.61], "machine": "Intel"})
    out = capsys.readouterr().out
    assert "train_loss[1]: recorded 0.6, now 0.61" in out and "recorded on AMD, checked on Intel" in out
    assert "2 of 3 recorded values reproduced exactly" in out


def test_records_and_statistics(kit, tmp_path):
    records = kit.Records(tmp_path)
    assert records.path("pairs/rte+cola/s1") == tmp_path / "pairs__rte_plus_cola__s1.json"
    assert records.load("a/b") is None and records.all() == {}
    for name in ["a/b", "a/c", "b/a"]:
        records.path(name).write_text(json.dumps({"cell": name}))
    assert list(records.all()) == ["a/b", "a/c", "b/a"] and list(records.all("a/")) == ["a/b", "a/c"]
    assert records.load("a/c") == {"cell": "a/c"}
    assert kit.spread([]) is None and kit.spread([2.0]) == (2.0, 0.0, 1)
    assert kit.mean_sd([1.0, 2.0, 4.0]) == {"mean": 2.33, "sd": 1.53, "n": 3}
    assert kit.rounded_mean([1.0, 2.0, 4.0]) == 2.33 and kit.rounded_mean([]) is None


# ----------------------------------------------------------------------------- reuse across runners
def _fake_finished_run(kit, run_dir: Path, cfg, record: Path, machine: str | None = None) -> None:
    """A finished run's files as equal_finished_run reads them (config, tasks, metrics, a kept epoch)
    and the record of the runner that made it."""
    import yaml

    from mtdnn.tasks.registry import TaskRegistry

    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "epoch-2.safetensors").write_bytes(b"weights")
    (run_dir / "checkpoints" / "resume").mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    tasks = TaskRegistry(cfg.task_files).resolve(cfg.tasks)
    (run_dir / "tasks.yaml").write_text(yaml.safe_dump([t.model_dump(mode="json") for t in tasks]))
    (run_dir / "metrics.json").write_text("{}")
    record.write_text(json.dumps({"machine": machine or kit.machine(), "wall_seconds": 12.5}))


def test_equal_finished_run_takes_only_the_same_training_made_on_this_machine(kit, tmp_path):
    import mtdnn

    made = mtdnn.make_config({"tasks": ["rte", "stsb"], "seed": 2, "output_dir": str(tmp_path / "a")})
    _fake_finished_run(kit, tmp_path / "a", made, tmp_path / "a.json")
    home = kit.Reusable(tmp_path / "a", tmp_path / "a.json")
    # where it runs, its threads and its logging do not change what a run computes
    wanted = mtdnn.make_config({"tasks": ["rte", "stsb"], "seed": 2, "output_dir": str(tmp_path / "b"),
                                "threads": 1, "progress": False})
    assert kit.equal_finished_run(wanted, [home]) == home
    other_seed = mtdnn.make_config({"tasks": ["rte", "stsb"], "seed": 3, "output_dir": str(tmp_path / "b")})
    assert kit.same_training(other_seed, tmp_path / "a") == "seed: 2 there, 3 here"
    assert kit.equal_finished_run(other_seed, [home]) is None
    other_tasks = mtdnn.make_config({"tasks": ["rte"], "seed": 2, "output_dir": str(tmp_path / "b")})
    assert kit.same_training(other_tasks, tmp_path / "a").startswith("tasks:")

    # the copy made by the runner that takes it: the files without the resume state; the wall time
    # is the kept run's
    wall, extra = kit.train_or_take(wanted, tmp_path / "b", [home])
    assert wall == 12.5 and extra == {"reused_from": {"run_dir": str(tmp_path / "a"),
                                                      "record": str(tmp_path / "a.json")}}
    assert (tmp_path / "b" / "checkpoints" / "epoch-2.safetensors").read_bytes() == b"weights"
    assert not (tmp_path / "b" / "checkpoints" / "resume").exists()

    # a task defined otherwise, another machine, a run still training, no kept weights: none is taken
    tasks_yaml = (tmp_path / "a" / "tasks.yaml").read_text()
    (tmp_path / "a" / "tasks.yaml").write_text(tasks_yaml.replace("dropout: 0.1", "dropout: 0.3", 1))
    assert kit.same_training(wanted, tmp_path / "a") == "task rte is defined differently"
    (tmp_path / "a" / "tasks.yaml").write_text(tasks_yaml)
    (tmp_path / "a.json").write_text(json.dumps({"machine": "another CPU", "wall_seconds": 1.0}))
    assert kit.equal_finished_run(wanted, [home]) is None
    (tmp_path / "a.json").write_text(json.dumps({"machine": kit.machine(), "wall_seconds": 12.5}))
    (tmp_path / "a" / "training.json").write_text("{}")
    assert kit.equal_finished_run(wanted, [home]) is None
    (tmp_path / "a" / "training.json").unlink()
    (tmp_path / "a" / "checkpoints" / "epoch-2.safetensors").unlink()
    assert kit.equal_finished_run(wanted, [home]) is None


def test_the_three_runners_train_the_same_multitask_model():
    """run's glue/mt, interference's methods/proportional and smart_distill's kd/teacher are one
    run per seed (what lets each take the others' instead of training it again), kept where
    settings.mt_model_homes says."""
    run, inter, distill = experiments.run, experiments.interference, experiments.smart_distill
    teachers = {c.name: c for c in distill.cells() if c.meta.get("kind") == "teacher"}
    mt = {c.name: c for c in run.cells()}["glue/mt/s1"]
    for seed in (1, 2, 3):
        proportional = settings.glue_config(settings.GLUE_TASKS, seed, **inter.METHODS["proportional"])
        teacher = teachers[f"kd/teacher/s{seed}"]
        assert proportional == teacher.config
        if seed == 1:
            assert mt.config == proportional
        homes = settings.mt_model_homes(seed)
        assert [h.run_dir for h in homes] == [run.RUNS / f"glue/mt/s{seed}"] * 2 + [
            inter.RUNS / f"methods/proportional/s{seed}", distill.RUNS / f"kd/teacher/s{seed}"]
        assert [h.record for h in homes] == [
            run.RECORDS.path(f"glue/mt/s{seed}"), run.RETRAINED.path(f"glue/mt/s{seed}"),
            inter.RECORDS.path(f"methods/proportional/s{seed}"), distill.RECORDS.path(f"kd/teacher/s{seed}")]


def test_the_three_runners_train_the_same_single_task_models():
    """run's glue/single, adapters' full-plain and smart_distill's plain arm are one run per task
    and seed, kept where settings.single_task_homes says (adapters keeps its weights)."""
    run, adapters, distill = experiments.run, experiments.adapters, experiments.smart_distill
    mine = {c.name: c for c in run.cells()}
    full_plain = {c.name: c for c in adapters.cells() if c.meta["row"] == "full-plain"}
    plain = [c for c in distill.cells() if c.meta.get("arm") == "plain"]
    assert len(plain) == 12
    twins = 0
    for cell in plain:
        task, seed = cell.meta["task"], cell.meta["seed"]
        twin = full_plain.get(f"adapters/full-plain/{task}/s{seed}")
        if twin is None:  # adapters runs CoLA with seed 1 only
            assert task == "cola" and seed > 1
            continue
        twins += 1
        assert cell.config == twin.config
        if f"glue/single/{task}/s{seed}" in mine:
            assert mine[f"glue/single/{task}/s{seed}"].config == cell.config
        homes = settings.single_task_homes(task, seed)
        assert [(h.run_dir, h.record) for h in homes] == [
            (run.RUNS / f"glue/single/{task}/s{seed}", run.RECORDS.path(f"glue/single/{task}/s{seed}")),
            (adapters.RUNS / twin.name, adapters.RECORDS.path(twin.name)),
            (distill.RUNS / cell.name, distill.RECORDS.path(cell.name))]
    assert twins == 10


# ----------------------------------------------------------------------------- a killed cell continues
def test_a_killed_cell_continues_from_its_last_saved_state(kit, tmp_path, tiny_encoder, data_dir, monkeypatch):
    """A cell whose process was stopped after its first epoch continues from the state saved then
    (``--resume``): the second attempt trains only epoch 2, ends with the weights of an uninterrupted
    run, and its record's wall time adds the first attempt's seconds up to that state. A run in the
    directory that trains something else is not continued but replaced."""
    import mtdnn
    import mtdnn.training.loop as loop
    from safetensors.torch import load_file

    def config(out: str, seed: int = 1):
        return mtdnn.make_config({"encoder": tiny_encoder, "tasks": ["rte"], "epochs": 2, "seed": seed,
                                  "max_train_examples": 48, "max_seq_len": 48, "data_dir": str(data_dir),
                                  "cache_dir": str(tmp_path / "cache"), "task_files": [], "progress": False,
                                  "allow_hub": False, "output_dir": out})

    epochs_run = []
    run_epoch, end_epoch = loop.run_epoch, loop.end_epoch
    monkeypatch.setattr(loop, "run_epoch", lambda job, state: epochs_run.append(state.epoch) or run_epoch(job, state))
    wall, extra = kit.train_cell(config(str(tmp_path / "whole")), tmp_path / "whole")
    assert extra == {} and epochs_run == [1, 2] and wall > 0

    def killed_after_epoch_1(job, state, *args):
        end_epoch(job, state, *args)
        if state.epoch == 2:
            raise KeyboardInterrupt  # what a kill leaves: the state saved at the end of epoch 1

    run_dir = tmp_path / "cell"
    monkeypatch.setattr(loop, "end_epoch", killed_after_epoch_1)
    epochs_run.clear()
    with pytest.raises(KeyboardInterrupt):
        kit.train_cell(config(str(run_dir)), run_dir)
    assert epochs_run == [1] and kit.continuable(config(str(run_dir)), run_dir)
    assert not kit.continuable(config(str(run_dir), seed=2), run_dir)  # another training: not this run

    monkeypatch.setattr(loop, "end_epoch", end_epoch)
    epochs_run.clear()
    wall, extra = kit.train_cell(config(str(run_dir)), run_dir)
    assert epochs_run == [2]
    resumed = extra["resumed"]
    assert resumed["attempts"] == 2 and resumed["earlier_seconds"] > 0
    assert wall == pytest.approx(resumed["earlier_seconds"] + resumed["this_attempt_seconds"], abs=0.2)
    whole, continued = (load_file(d / "checkpoints" / "epoch-2.safetensors") for d in (tmp_path / "whole", run_dir))
    assert whole.keys() == continued.keys() and all(whole[k].equal(continued[k]) for k in whole)
    assert [h["epoch"] for h in kit.read_history(run_dir)] == [1, 2]

    # finished: nothing to continue; a cell with another seed in that directory starts afresh
    assert not kit.continuable(config(str(run_dir)), run_dir)
    epochs_run.clear()
    _, extra = kit.train_cell(config(str(run_dir), seed=2), run_dir)
    assert extra == {} and epochs_run == [1, 2]
    assert len(json.loads((run_dir / kit.ATTEMPTS_FILE).read_text())) == 1
