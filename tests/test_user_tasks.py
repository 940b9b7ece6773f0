"""User tasks of every shape, end to end: real rows (SST-2, SNLI, STS-B, QNLI, RTE) re-saved as a
user would have them, ``mtdnn tasks init`` drafts the YAML, the draft trains one epoch as written
(tiny encoder, a few dozen rows; ``--data-dir`` points nowhere, so every path resolves beside the
task file), and the run evaluates and predicts.

The shapes: single and pair input; binary, 3-class and 5-class classification; regression with
scores in [0, 1] and [0, 5]; ranking with explicit group ids (two groups with the same question
stay apart) and with groups taken from the question; CSV (quoted commas), TSV, JSONL, parquet and a
``datasets`` folder; with and without a dev split; integer labels with and without a label_map."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from mtdnn.api import load_run
from mtdnn.cli import main
from mtdnn.data.readers import read_split
from mtdnn.tasks.registry import builtin_tasks
from mtdnn.tasks.schema import load_task_file

pytestmark = pytest.mark.slow

N_TRAIN, N_DEV = 40, 16


# ----------------------------------------------------------------------------- real rows, re-saved
def _rows(data_dir: Path, task: str, split: str, n: int, skip: int = 0) -> list[dict[str, Any]]:
    raw = read_split(builtin_tasks()[task], split, data_dir, allow_hub=False)
    return [{"a": raw.text_a[i], "b": raw.text_b[i], "y": raw.labels[i]} for i in range(skip, skip + n)]


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_tsv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")
    return path


def write_jsonl(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({h: [r[i] for r in rows] for i, h in enumerate(header)}), str(path))
    return path


def _five_class(score: float) -> int:
    return min(int(score), 4)


def _ranking_rows(data_dir: Path, n_groups: int, skip: int, with_twin: bool) -> list[list[Any]]:
    """Candidate groups from QNLI dev: each question with its own sentence (label 1 when QNLI says
    entailment, so groups without one are left out) and two sentences of other questions (label 0).
    ``with_twin``: a second group with the first one's question text but another id and answers."""
    rows = _rows(data_dir, "qnli", "dev", 400, skip)
    pos = [r for r in rows if r["y"] == "entailment"]
    out = []
    for g in range(n_groups):
        q = pos[g]
        others = [pos[(g + k) % len(pos)]["b"] for k in (n_groups, n_groups + 1)]
        out += [[f"q{skip}-{g}", q["a"], q["b"], 1]] + [[f"q{skip}-{g}", q["a"], o, 0] for o in others]
    if with_twin:
        twin = pos[0]["a"]
        out += [[f"q{skip}-twin", twin, pos[n_groups + 5]["b"], 1], [f"q{skip}-twin", twin, pos[n_groups + 6]["b"], 0]]
    return out


# ----------------------------------------------------------------------------- the shapes
@dataclass
class Shape:
    """A user task: ``write(folder, data_dir)`` writes its files and returns the ``tasks init``
    arguments; the rest is what the draft must say."""

    write: Callable[[Path, Path], list[str]]
    type: str
    input: str
    labels: list[str]
    metrics: list[str]                   # the names in metrics.json (without "score")
    has_dev: bool = True
    label_map: dict[str, str] = field(default_factory=dict)
    predict_input: str | None = None     # the file `mtdnn predict` reads (default: the train file)


def _sst2_csv(folder: Path, data: Path) -> list[str]:  # single, binary, integer labels, quoted commas
    header = ["id", "sentence", "label"]
    train = [[i, r["a"], int(r["y"])] for i, r in enumerate(_rows(data, "sst2", "train", N_TRAIN * 3))
             if "," in r["a"] or i < N_TRAIN][:N_TRAIN]
    write_csv(folder / "reviews_train.csv", header, train)
    dev = _rows(data, "sst2", "dev", N_DEV)
    write_csv(folder / "reviews_dev.csv", header, [[i, r["a"], int(r["y"])] for i, r in enumerate(dev)])
    text = (folder / "reviews_train.csv").read_text(encoding="utf-8")
    assert '",' in text or ',"' in text, "no quoted comma in the CSV"
    return ["reviews_train.csv"]


def _snli_tsv(folder: Path, data: Path) -> list[str]:  # pair, 3-class string labels, rows without a label
    header = ["pairID", "premise", "hypothesis", "gold"]

    def rows(split: str, n: int) -> list[list[str]]:
        return [[f"p{i}", r["a"], r["b"], r["y"]] for i, r in enumerate(_rows(data, "snli", split, n))]

    write_tsv(folder / "nli_train.tsv", header, rows("dev", N_TRAIN) + [["p-x", "A man sleeps.", "Someone rests.", "-"]])
    write_tsv(folder / "nli_validation.tsv", header, rows("test", N_DEV))
    return ["nli_train.tsv"]


def _stsb_5class_jsonl(folder: Path, data: Path) -> list[str]:  # pair, 5 integer classes named by a label_map
    header = ["s1", "s2", "grade"]
    write_jsonl(folder / "grades.jsonl", header,
                [[r["a"], r["b"], _five_class(r["y"])] for r in _rows(data, "stsb", "train", N_TRAIN)])
    return ["grades.jsonl", "--label-names", "none,low,some,high,same"]


def _stsb_single_5class_parquet(folder: Path, data: Path) -> list[str]:  # single, 5 integer classes, no label_map
    header = ["text", "grade"]
    for split, n, name in (("train", N_TRAIN, "train"), ("dev", N_DEV, "dev")):
        write_parquet(folder / f"short_{name}.parquet", header,
                      [[r["a"], _five_class(r["y"])] for r in _rows(data, "stsb", split, n)])
    return ["short_train.parquet"]


def _stsb_regression_csv(folder: Path, data: Path) -> list[str]:  # pair, scores in [0, 5]
    header = ["sentence1", "sentence2", "score"]
    for split, n in (("train", N_TRAIN), ("dev", N_DEV)):
        write_csv(folder / f"sim_{split}.csv", header,
                  [[r["a"], r["b"], f"{r['y']:.3f}"] for r in _rows(data, "stsb", split, n)])
    return ["sim_train.csv"]


def _stsb_regression_parquet(folder: Path, data: Path) -> list[str]:  # pair, scores in [0, 1], no dev split
    header = ["left", "right", "similarity"]
    write_parquet(folder / "sim01.parquet", header,
                  [[r["a"], r["b"], round(r["y"] / 5.0, 4)] for r in _rows(data, "stsb", "train", N_TRAIN)])
    return ["sim01.parquet"]


def _ranking_groups_tsv(folder: Path, data: Path) -> list[str]:  # explicit group ids, two groups alike in wording
    header = ["qid", "question", "answer", "relevant"]
    write_tsv(folder / "qa_train.tsv", header, _ranking_rows(data, 10, 0, with_twin=True))
    write_tsv(folder / "qa_dev.tsv", header, _ranking_rows(data, 4, 200, with_twin=False))
    return ["qa_train.tsv", "--group", "qid"]


def _ranking_question_jsonl(folder: Path, data: Path) -> list[str]:  # groups from the question text
    header = ["question", "passage", "label"]
    for split, groups, skip in (("train", 10, 0), ("dev", 4, 200)):
        write_jsonl(folder / f"rank_{split}.jsonl", header,
                    [[q, a, "yes" if y else "no"] for _, q, a, y in _ranking_rows(data, groups, skip, False)])
    return ["rank_train.jsonl", "--type", "ranking"]


def _rte_dataset_folder(folder: Path, data: Path) -> list[str]:  # a datasets folder, ClassLabel labels
    from datasets import ClassLabel, Dataset, Features, Value

    names = ["entailment", "not_entailment"]
    features = Features({"sentence1": Value("string"), "sentence2": Value("string"), "label": ClassLabel(names=names)})
    (folder / "rte_ds").mkdir()
    for split, name, n in (("train", "train", N_TRAIN), ("dev", "validation", N_DEV)):
        rows = _rows(data, "rte", split, n)
        Dataset.from_dict({"sentence1": [r["a"] for r in rows], "sentence2": [r["b"] for r in rows],
                           "label": [names.index(r["y"]) for r in rows]}, features=features
                          ).to_parquet(str(folder / "rte_ds" / f"{name}.parquet"))
    write_csv(folder / "rte_pairs.csv", ["sentence1", "sentence2"],
              [[r["a"], r["b"]] for r in _rows(data, "rte", "dev", 5)])
    return ["rte_ds"]


SHAPES = {
    "single-binary-csv-int-labels": Shape(_sst2_csv, "classification", "single", ["0", "1"], ["accuracy", "f1"]),
    "pair-3class-tsv": Shape(_snli_tsv, "classification", "pair", ["contradiction", "entailment", "neutral"],
                             ["accuracy", "f1_macro"]),
    "pair-5class-jsonl-label-map-no-dev": Shape(
        _stsb_5class_jsonl, "classification", "pair", ["none", "low", "some", "high", "same"], [], has_dev=False,
        label_map={"0": "none", "1": "low", "2": "some", "3": "high", "4": "same"}),
    "single-5class-parquet-int-labels": Shape(_stsb_single_5class_parquet, "classification", "single",
                                              ["0", "1", "2", "3", "4"], ["accuracy", "f1_macro"]),
    "regression-0-5-csv": Shape(_stsb_regression_csv, "regression", "pair", [], ["pearson", "spearman"]),
    "regression-0-1-parquet-no-dev": Shape(_stsb_regression_parquet, "regression", "pair", [], [], has_dev=False),
    "ranking-group-ids-tsv": Shape(_ranking_groups_tsv, "ranking", "ranking", ["1", "0"], ["accuracy"]),
    "ranking-by-question-jsonl": Shape(_ranking_question_jsonl, "ranking", "ranking", ["yes", "no"], ["accuracy"]),
    "pair-binary-datasets-folder": Shape(_rte_dataset_folder, "classification", "pair", ["entailment", "not_entailment"],
                                         ["accuracy", "f1"], predict_input="rte_pairs.csv"),
}


def _count_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_metadata(str(path)).num_rows
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return len(lines) - (0 if path.suffix == ".jsonl" else 1)


def _flat(metrics: dict) -> dict[str, float]:
    return {f"{t}/{s}/{m}": v for t, splits in metrics.items() for s, ms in splits.items() for m, v in ms.items()}


@pytest.fixture()
def real_data(data_dir) -> Path:
    return Path(data_dir).resolve()


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch, real_data) -> Path:
    """The test's own folder as the current folder (``real_data`` is resolved before)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _train(task_file: Path, name: str, encoder: str, out: Path, cache: Path) -> int:
    return main(["train", "--task-file", str(task_file), "--tasks", name, "--encoder", encoder, "--epochs", "1",
                 "--batch-size", "8", "--max-seq-len", "64", "--threads", "1", "--no-progress", "--no-hub",
                 "--cache-dir", str(cache), "--output-dir", str(out), "--data-dir", str(out.parent / "nowhere"),
                 "--lr", "1e-3"])


@pytest.mark.parametrize("shape_name", sorted(SHAPES))
def test_user_task_shape_drafts_trains_evaluates_predicts(shape_name, in_tmp, real_data, tiny_encoder, capsys):
    shape = SHAPES[shape_name]
    (in_tmp / "data").mkdir()
    args = shape.write(in_tmp / "data", real_data)
    source = str(Path("data") / args[0])
    # 1. the wizard drafts the task into a folder of its own: paths are written relative to it
    assert main(["tasks", "init", source, *args[1:], "--name", "mine", "--output", "tasks/mine.yaml"]) == 0
    assert "wrote tasks/mine.yaml" in capsys.readouterr().out
    (task,) = load_task_file("tasks/mine.yaml")
    assert (task.type, task.input, task.labels, task.name) == (shape.type, shape.input, shape.labels, "mine")
    train_split = task.splits["train"]
    assert dict(train_split.label_map) == shape.label_map
    assert (task.selection_split is not None) == shape.has_dev
    expected = shape.metrics or (["pearson", "spearman"] if shape.type == "regression" else ["accuracy", "f1_macro"])
    assert task.metric_names == expected
    # 2. the check passes
    assert main(["tasks", "check", "tasks/mine.yaml", "--encoder", tiny_encoder, "--no-hub"]) == 0
    assert "tasks/mine.yaml: OK" in capsys.readouterr().out
    # 3. the draft trains as written, from another folder, with --data-dir pointing nowhere
    run = in_tmp / "runs" / "mine"
    (in_tmp / "elsewhere").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(in_tmp / "elsewhere")
        assert _train(in_tmp / "tasks" / "mine.yaml", "mine", tiny_encoder, run, in_tmp / "cache") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    if shape.has_dev:
        dev = next(iter(metrics["mine"].values()))
        assert list(dev) == expected + ["score"]
    else:
        assert metrics == {}  # nothing to evaluate: the run keeps its last epoch
        assert json.loads((run / "selection.json").read_text())["tasks"] == {"mine": 1}
    _check_reports(run, task, shape, metrics)
    # 4. the saved run evaluates and predicts
    loaded = load_run(run, device="cpu")
    assert loaded.incomplete is None
    if shape.has_dev:
        assert _flat(loaded.evaluate(data_dir=in_tmp / "nowhere")) == pytest.approx(_flat(metrics))
    pred_in = Path("data") / (shape.predict_input or args[0])
    assert main(["predict", str(run), "--task", "mine", "--input", str(pred_in), "--output", "pred.tsv"]) == 0
    lines = Path("pred.tsv").read_text().splitlines()
    assert len(lines) == _count_rows(pred_in) + 1
    predicted = {ln.split("\t")[1] for ln in lines[1:]}
    if shape.type == "regression":
        assert all(float(v) == float(v) for v in predicted)
    else:
        assert predicted <= set(task.labels)


def _check_reports(run: Path, task, shape: Shape, metrics: dict) -> None:
    """Per-class reports for the dev split of a class-predicting task, matching metrics.json."""
    reports = sorted(p.name for p in (run / "reports").glob("*")) if (run / "reports").is_dir() else []
    if shape.type == "regression" or not shape.has_dev:
        assert reports == []
        return
    split = task.selection_split
    assert reports == [f"mine.{split}.confusion.png", f"mine.{split}.json"]
    report = json.loads((run / "reports" / f"mine.{split}.json").read_text())
    matrix = report["confusion_matrix"]["matrix"]
    n_classes = len(task.labels)
    assert len(matrix) == n_classes and all(len(row) == n_classes for row in matrix)
    assert sum(map(sum, matrix)) == report["rows"] == sum(c["support"] for c in report["per_class"].values())
    assert report["accuracy"] == pytest.approx(metrics["mine"][split]["accuracy"])
    if "f1_macro" in metrics["mine"][split]:
        assert report["f1_macro"] == pytest.approx(metrics["mine"][split]["f1_macro"])
    assert (run / "reports" / f"mine.{split}.confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_groups_with_the_same_question_stay_apart(tmp_path, data_dir):
    """The explicit group ids of the ranking shape: the twin group has the first group's question
    text but is its own group; grouped by question, the two merge."""
    args = _ranking_groups_tsv(tmp_path, data_dir)
    assert args[0] == "qa_train.tsv"
    from mtdnn.records import InitOptions
    from mtdnn.tasks.wizard import init_task

    out, draft, _ = init_task(InitOptions(str(tmp_path / "qa_train.tsv"), group="qid", output=str(tmp_path / "qa.yaml")))
    (task,) = load_task_file(out)
    raw = read_split(task, "train", tmp_path / "nowhere", allow_hub=False)
    first_question = raw.text_a[0]
    rows = [i for i, q in enumerate(raw.text_a) if q == first_question]
    assert len(rows) == 5  # 3 candidates of group q0-0 and 2 of q0-twin
    assert len({int(raw.group_ids()[i]) for i in rows}) == 2
    plain = task.model_copy(update={"splits": {"train": task.splits["train"].model_copy(
        update={"columns": task.splits["train"].columns.model_copy(update={"group": None})})}})
    merged = read_split(plain, "train", tmp_path / "nowhere", allow_hub=False)
    assert len({int(merged.group_ids()[i]) for i in rows}) == 1
