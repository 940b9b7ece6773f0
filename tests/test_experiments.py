"""The experiment grid of experiments.run and its summary: the cells the reproduction asks for
exist with the right sizes and protocol, the shared settings build them, the one command line of
the runners, and the summary is built from the per-run records (hand-made records here; no
training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import experiments.run as run_module
from experiments import settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run():
    return run_module


@pytest.fixture(scope="module")
def summarize():
    return run_module


def test_grid_has_every_required_cell(run):
    cells = {c.name: c for c in run.cells()}
    assert len(cells) == len(run.cells()), "cell names must be unique"
    for task in run.GLUE_TASKS:
        assert f"glue/single/{task}/s1" in cells and f"glue/finetune/{task}/s1" in cells
    for task in ["rte", "mrpc", "stsb", "wnli"]:
        for seed in (1, 2, 3):
            assert f"glue/single/{task}/s{seed}" in cells and f"glue/finetune/{task}/s{seed}" in cells
    for size in ["0.1", "1", "10", "100"]:
        for enc in ["encoder", "mtdnn"]:
            assert f"da/scitail/{enc}/{size}/s1" in cells
    for size in ["0.1", "1"]:
        for enc in ["encoder", "mtdnn"]:
            assert all(f"da/scitail/{enc}/{size}/s{s}" in cells for s in (1, 2, 3))
            assert f"da/snli/{enc}/{size}/s1" in cells
    for task in ["rte_linear", "mrpc_linear", "mnli_aux_linear"]:
        assert f"san/{task}/s1" in cells
    assert "san/scitail_linear/10/s1" in cells


def test_sizes_protocol_and_streams(run):
    cells = {c.name: c for c in run.cells()}
    # the paper's SNLI sizes, and SciTail shares of its 23,596 training pairs
    assert cells["da/snli/encoder/0.1/s1"].config["max_train_examples"] == 549
    assert cells["da/snli/mtdnn/1/s1"].config["max_train_examples"] == 5493
    assert cells["da/scitail/encoder/1/s2"].config["max_train_examples"] == 236
    assert cells["da/scitail/encoder/10/s1"].config["max_train_examples"] == 2360
    assert "max_train_examples" not in cells["da/scitail/mtdnn/100/s1"].config  # all of it
    # epochs depend on the training-set size only
    assert [settings.da_epochs(n) for n in (24, 236, 549, 2360, 5493, 23596)] == [10, 5, 5, 2, 2, 1]
    # different training subsets per subset seed, and the MNLI task never trains on dev_mismatched
    assert cells["da/scitail/mtdnn/1/s2"].config["subset_seed"] == 2
    for c in cells.values():
        assert c.config["selection"] == "last", c.name  # no checkpoint choice looks at an evaluation split
        assert (c.config.get("init_from") is not None) == (run.MT_CELL in c.needs), c.name
        assert (c.needs == [run.MT_CELL]) == ("/mtdnn/" in c.name or "/finetune/" in c.name), c.name
    mt = cells[run.MT_CELL].config
    assert mt["tasks"] == run.GLUE_TASKS and mt["max_train_examples_per_task"]["mnli_aux"] == 2000


def test_experiment_tasks_keep_mnli_and_snli_evaluation_out_of_training(data_dir):
    from mtdnn.tasks.schema import load_task_file

    tasks = {t.name: t for t in load_task_file(ROOT / "experiments" / "tasks.yaml")}
    mnli = tasks["mnli_aux"]
    assert "dev_matched" in mnli.splits["train"].path and "mismatched" not in mnli.splits["train"].path
    assert all("mismatched" in s.path for n, s in mnli.splits.items() if n != "train")
    snli = tasks["snli_da"]
    assert snli.splits["train"].path.endswith("snli_1.0_dev.csv") and snli.splits["test"].path.endswith("snli_1.0_test.csv")
    assert {n: t.head.kind for n, t in tasks.items() if n.endswith("_linear")} == {
        "rte_linear": "linear", "mrpc_linear": "linear", "mnli_aux_linear": "linear", "scitail_linear": "linear"}


def _record(cell: str, metrics: dict, wall: float = 10.0) -> dict:
    return {"cell": cell, "metrics": metrics, "wall_seconds": wall, "machine": "test machine",
            "finished": "2026-11-26 00:00:00", "config": {"threads": 1}}


def test_summary_shape_and_values_from_records(summarize):
    acc = lambda x: {"accuracy": x, "score": x}  # noqa: E731
    cells = {}
    for seed, (single, ft) in enumerate([(60.0, 64.0), (62.0, 66.0), (64.0, 71.0)], start=1):
        cells[f"glue/single/rte/s{seed}"] = _record(f"glue/single/rte/s{seed}", {"rte": {"dev": acc(single)}})
        cells[f"glue/finetune/rte/s{seed}"] = _record(f"glue/finetune/rte/s{seed}", {"rte": {"dev": acc(ft)}})
    cells["glue/mt/s1"] = _record("glue/mt/s1", {"rte": {"dev": acc(63.0)}, "mnli_aux": {"dev_mismatched": acc(58.0)}})
    for s, (enc, mt) in enumerate([(70.0, 80.0), (74.0, 82.0)], start=1):
        for name, value in [("encoder", enc), ("mtdnn", mt)]:
            cell = f"da/scitail/{name}/1/s{s}"
            cells[cell] = _record(cell, {"scitail": {"dev": acc(value - 1), "test": acc(value)}})
    cells["san/rte_linear/s1"] = _record("san/rte_linear/s1", {"rte_linear": {"dev": acc(55.0)}})
    out = summarize.summary(cells)
    assert out["glue"]["single_task"]["rte"] == 62.0 and out["glue"]["mtdnn"]["rte"] == 67.0
    assert out["glue_sd"]["mtdnn"]["rte"] == pytest.approx(3.61, abs=0.01)  # sd of 64, 66, 71
    assert out["glue"]["mtdnn_no_finetune"] == {"rte": 63.0, "mnli_aux": 58.0}
    assert out["domain_adaptation"]["scitail"] == {"encoder": {"1": 72.0}, "mtdnn": {"1": 81.0}}
    assert out["domain_adaptation_dev"]["scitail"]["mtdnn"]["1"] == 80.0
    # the SAN side of the ablation takes only the seeds that have a linear twin
    assert out["san_ablation"]["rte"] == {"linear": 55.0, "san": 60.0}
    text = summarize.tables(cells)
    assert "| gain, MT-DNN − single-task | – | – | – | – | +5.0 |" in text
    json.dumps(out)  # serialisable


RUNNERS = ["run", "interference", "adapters", "smart_distill", "defaults_check", "glue_seeds", "tagging", "qa"]


def test_experiments_is_one_package_with_one_command_line():
    """Every runner is ``python -m experiments.NAME`` with the same options, built by cells.main;
    no module edits sys.path, and a runner uses another runner's public names only."""
    import ast
    import importlib

    from experiments.cells import parser, runner_of

    package = ROOT / "experiments"
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    assert set(RUNNERS) <= modules and modules - set(RUNNERS) == {"cells", "settings", "stats", "seed_grid", "examples"}
    for path in package.glob("*.py"):
        text = path.read_text()
        assert "sys.path" not in text and "noqa: E402" not in text, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("experiments."):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
    for name in RUNNERS:
        runner = runner_of(importlib.import_module(f"experiments.{name}"))
        options = {o for a in parser(runner)._actions for o in a.option_strings}
        assert {"--plan", "--run", "--stream", "--cell", "--check", "--summarize", "--only", "--threads"} <= options
        assert len(runner.names()) == len(set(runner.names())) > 0, name


def test_plan_of_every_runner_lists_its_cells(capsys):
    import importlib

    from experiments.cells import cli, runner_of

    for name in RUNNERS:
        assert cli(f"experiments.{name}", ["--plan"]) == 0
        out = capsys.readouterr().out
        assert all(cell in out for cell in runner_of(importlib.import_module(f"experiments.{name}")).names()), name
