"""docs/tasks.md's tutorial, executed step by step: its data files are written here from real SNLI
and QNLI rows (as the tutorial describes them), then every ``mtdnn`` line of its ``sh`` blocks runs
in order (training on the tiny encoder, 1 epoch, few rows: the flags below are appended), every
``python`` block runs, every draft it shows (a ``yaml`` block that starts with
``# NAME: drafted by``) must be the file ``mtdnn tasks init`` wrote, and every line of a ``text``
block that follows a command must be in that command's output."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shlex
from pathlib import Path

import pytest

from mtdnn.cli import main
from mtdnn.data.readers import read_split
from mtdnn.tasks.registry import builtin_tasks

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parent.parent / "docs" / "tasks.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def write_tutorial_data(folder: Path, data_dir: Path) -> None:
    """``mydata/``: train.csv (SNLI dev rows 1-60), dev.csv (SNLI test rows 1-20) and test.csv
    (SNLI test rows 21-30, without labels), columns id, premise, hypothesis, label; ``qa/``:
    train.tsv and dev.tsv, QNLI questions with candidate answers and explicit group ids."""
    snli = builtin_tasks()["snli"]
    dev = read_split(snli, "dev", data_dir, allow_hub=False)
    test = read_split(snli, "test", data_dir, allow_hub=False)
    (folder / "mydata").mkdir()

    def table(name: str, raw, rows: range, labeled: bool = True) -> None:
        with open(folder / "mydata" / name, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "premise", "hypothesis"] + (["label"] if labeled else []))
            for i in rows:
                w.writerow([raw.ids[i], raw.text_a[i], raw.text_b[i]] + ([raw.labels[i]] if labeled else []))

    table("train.csv", dev, range(60))
    table("dev.csv", test, range(20))
    table("test.csv", test, range(20, 30), labeled=False)
    qnli = read_split(builtin_tasks()["qnli"], "dev", data_dir, allow_hub=False)
    right = [i for i in range(len(qnli)) if qnli.labels[i] == "entailment"]
    (folder / "qa").mkdir()
    for name, groups in (("train.tsv", right[:12]), ("dev.tsv", right[100:106])):
        lines = ["qid\tquestion\tanswer\tlabel"]
        for k, i in enumerate(groups):
            wrong = [qnli.text_b[right[((k + j) * 7 + 200) % len(right)]] for j in (1, 2)]
            lines.append(f"q{i}\t{qnli.text_a[i]}\t{qnli.text_b[i]}\tyes")
            lines += [f"q{i}\t{qnli.text_a[i]}\t{w}\tno" for w in wrong]
        (folder / "qa" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _sentences(path: Path, n: int) -> str:
    """The first ``n`` sentences of a CoNLL-2003 file, as its lines (``-DOCSTART-`` left out)."""
    blocks = [b for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip() and "-DOCSTART-" not in b]
    return "\n\n".join(b.strip("\n") for b in blocks[:n]) + "\n"


def write_tagging_data(folder: Path, data_dir: Path) -> None:
    """``ner/``: train.conll (the first 40 sentences of CoNLL-2003's eng.train) and dev.conll (the
    first 20 of eng.testa), their four columns as they are (word, POS, chunk, NER; IOB1)."""
    (folder / "ner").mkdir()
    (folder / "ner" / "train.conll").write_text(_sentences(data_dir / "conll2003" / "eng.train", 40), encoding="utf-8")
    (folder / "ner" / "dev.conll").write_text(_sentences(data_dir / "conll2003" / "eng.testa", 20), encoding="utf-8")


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(DOC.read_text(encoding="utf-8"))]


def _extra_flags(argv: list[str], encoder: str, data_dir: Path, cache: Path) -> list[str]:
    if argv[0] == "train":
        return ["--encoder", encoder, "--epochs", "1", "--max-train-examples", "40", "--max-eval-examples", "24",
                "--batch-size", "8", "--max-seq-len", "64", "--threads", "1", "--no-progress", "--no-hub",
                "--cache-dir", str(cache), "--data-dir", str(data_dir)]
    if argv[:2] == ["tasks", "check"]:
        return ["--encoder", encoder, "--no-hub"]
    return []


def _run_command(line: str, encoder: str, data_dir: Path, cache: Path) -> str:
    argv = shlex.split(line)[1:]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv + _extra_flags(argv, encoder, data_dir, cache))
    assert rc == 0, f"`{line}` exited with {rc}"
    return out.getvalue()


def test_tutorial_runs_as_written(tmp_path, monkeypatch, data_dir, tiny_encoder):
    data_dir = Path(data_dir).resolve()
    monkeypatch.chdir(tmp_path)
    write_tutorial_data(tmp_path, data_dir)
    write_tagging_data(tmp_path, data_dir)
    ran: list[str] = []
    last_output = ""
    for kind, body in blocks():
        if kind == "sh":
            for line in (ln.strip() for ln in body.splitlines()):
                if line.startswith("mtdnn "):
                    last_output = _run_command(line, tiny_encoder, data_dir, tmp_path / "cache")
                    ran.append(" ".join(shlex.split(line)[1:3]))
        elif kind == "python":
            exec(compile(body, f"{DOC}:python", "exec"), {"__name__": "tutorial"})
            ran.append("python")
        elif kind == "yaml" and re.match(r"# (\S+): drafted by", body):
            name = re.match(r"# (\S+): drafted by", body).group(1)
            assert Path(f"{name}.yaml").read_text(encoding="utf-8") == body, f"the draft of {name} in {DOC} is stale"
            ran.append(f"draft {name}")
        elif kind == "text" and last_output:
            for line in (ln for ln in body.splitlines() if ln.strip() and "..." not in ln):
                assert line.rstrip() in last_output.splitlines(), f"{line!r} not in the output:\n{last_output}"
    steps = {"tasks init", "tasks check", "draft my_nli", "draft my_qa", "draft my_ner", "python"}
    assert steps <= set(ran) and {"train --task-file", "evaluate runs/my_nli", "predict runs/my_nli", "predict runs/my_ner"} <= set(ran), ran
    # what the tutorial says it leaves behind
    assert Path("predictions.tsv").read_text().count("\n") == 11  # header + the 10 rows of mydata/test.csv
    assert sorted(p.name for p in Path("runs/my_nli/reports").iterdir()) == [
        "my_nli.dev.confusion.png", "my_nli.dev.json", "rte.dev.confusion.png", "rte.dev.json"]
    assert Path("runs/my_qa/metrics.json").is_file()
    assert Path("runs/my_ner/reports/my_ner.dev.json").is_file()
    tagged = Path("ner/dev.predicted.conll").read_text().splitlines()
    given = Path("ner/dev.conll").read_text().splitlines()
    assert len(tagged) == len(given) and all(t.startswith(g) and (t == g == "" or len(t.split()) == 5)
                                              for t, g in zip(tagged, given))
    assert ran.count("python") == 2 and ran.count("tasks check") == 2
