"""Distillation (training/distill.py, ``mtdnn distill``) and the layer cut of model/shrink.py: soft
targets and the KD loss by hand; with two tiny teachers the soft targets are the mean of their
class probabilities, one teacher's targets reproduce its predictions, the teachers' outputs are
cached and not recomputed; teachers that define a task differently are an error naming both; a
student trained with --kd-alpha 1 on a teacher's soft targets (its own gold labels being noise)
agrees with the teacher on dev far above chance, while the same student on the noisy gold labels
alone does not."""

from __future__ import annotations

import logging
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import mtdnn
from mtdnn.cli import main
from mtdnn.data.holdout import holdout_rows
from mtdnn.config import make_config
from mtdnn.errors import CheckpointError, ConfigError
from mtdnn.model.shrink import shrink_encoder
from mtdnn.tasks.registry import TaskRegistry
from mtdnn.training.methods.distill import (Teacher, TeacherOutputs, check_teachers, distill_composition,
                                            distill_divergence, soft_targets, training_rows)
from mtdnn.training.distributed import Distributed
from mtdnn.training.setup import build_setup
from mtdnn.training.step import TaskLoss

WORDS = "the cat dog sat ran on a mat big small blue house car tree".split()
TASK = """- name: kw
  type: classification
  input: single
  labels: ["yes", "no"]
  splits:
    train: {path: %s, role: train, columns: {text_a: a, label: label}}
    dev: {path: kw_dev.tsv, role: dev, columns: {text_a: a, label: label}}
"""


# ------------------------------------------------------------------------------ by hand
def _task(kind: str):
    if kind != "ranking":
        return TaskRegistry([]).resolve([{"classification": "rte", "regression": "stsb"}[kind]])[0]
    from mtdnn.tasks.schema import parse_task
    return parse_task({"name": "rk", "type": "ranking", "input": "ranking", "labels": ["pos", "neg"],
                       "splits": {"train": {"path": "x.tsv", "role": "train",
                                            "columns": {"text_a": "q", "text_b": "a", "label": "y"}}}}, "t.yaml")


def test_soft_targets_by_hand():
    cls = _task("classification")
    a = TeacherOutputs(np.array([[0.8, 0.2], [0.5, 0.5]], dtype=np.float32), 1.0, False)
    b = TeacherOutputs(np.array([[0.4, 0.6], [0.1, 0.9]], dtype=np.float32), 1.0, False)
    got = soft_targets(cls, [a, b], np.arange(2), temperature=1.0)
    assert got.flatten().tolist() == pytest.approx([0.6, 0.4, 0.3, 0.7], abs=1e-6)
    # T = 2: softmax(log p / 2) = sqrt(p) normalised; row 0 of teacher a: (sqrt .8, sqrt .2) / sum
    got2 = soft_targets(cls, [a], np.arange(2), temperature=2.0)
    s = math.sqrt(0.8) + math.sqrt(0.2)
    assert got2[0].tolist() == pytest.approx([math.sqrt(0.8) / s, math.sqrt(0.2) / s], abs=1e-6)
    reg = soft_targets(_task("regression"), [TeacherOutputs(np.array([1.0, 3.0], np.float32), 1.0, False),
                                              TeacherOutputs(np.array([2.0, 5.0], np.float32), 1.0, False)],
                       np.arange(2), 1.0)
    assert reg.tolist() == pytest.approx([1.5, 4.0])
    # ranking: per question, softmax over its candidates: (0, ln 3) -> (1/4, 3/4); a lone candidate -> 1
    rank = soft_targets(_task("ranking"), [TeacherOutputs(np.array([0.0, math.log(3), 5.0], np.float32), 1.0, False)],
                        np.array([0, 0, 1]), 1.0)
    assert rank.tolist() == pytest.approx([0.25, 0.75, 1.0], abs=1e-6)


def test_kd_divergence_by_hand():
    cls = _task("classification")
    target = torch.tensor([[0.25, 0.75]])
    student = torch.tensor([[0.5, 0.5]]).log()
    # KL(t || q) = 0.25 ln(0.25/0.5) + 0.75 ln(0.75/0.5)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert distill_divergence(cls, student, target, {}, 1.0).item() == pytest.approx(kl, abs=1e-6)
    # temperature: the student's logits divided by T, the result times T^2
    logits = torch.tensor([[0.0, 2.0 * math.log(3)]])  # softmax(z / 2) = (1/4, 3/4) = target
    assert distill_divergence(cls, logits, target, {}, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    q = torch.softmax(logits / 3.0, -1)[0]
    expected = 9.0 * (0.25 * math.log(0.25 / q[0].item()) + 0.75 * math.log(0.75 / q[1].item()))
    assert distill_divergence(cls, logits, target, {}, 3.0).item() == pytest.approx(expected, abs=1e-5)
    reg = _task("regression")
    assert distill_divergence(reg, torch.tensor([[1.0], [2.0]]), torch.tensor([1.5, 0.0]), {}, 1.0).item() == 4.25


def test_teachers_must_define_tasks_alike(tmp_path):
    rte = TaskRegistry([]).resolve(["rte"])[0]
    flipped = rte.model_copy(update={"labels": list(reversed(rte.labels))})

    def teacher(name: str, task) -> Teacher:
        return Teacher(str(tmp_path / name), None, {}, {task.name: task})

    check_teachers([rte], [teacher("a", rte), teacher("b", rte)])
    with pytest.raises(ConfigError) as err:
        check_teachers([rte], [teacher("a", rte), teacher("b", flipped)])
    msg = str(err.value)
    assert "teacher " + str(tmp_path / "b") in msg and "teacher " + str(tmp_path / "a") in msg
    assert "not_entailment, entailment" in msg and "entailment, not_entailment" in msg
    with pytest.raises(ConfigError, match="the student"):
        check_teachers([rte], [teacher("b", flipped)])
    with pytest.raises(ConfigError, match="has no task 'rte'"):
        check_teachers([rte], [Teacher(str(tmp_path / "c"), None, {}, {})])


# ------------------------------------------------------------------------------ tiny teachers
@pytest.fixture(scope="module")
def kw(tmp_path_factory, tiny_encoder):
    """A keyword task (label yes iff the sentence has 'red'), a student copy whose training labels
    are random, and two tiny teachers: one trained 4 epochs (it learns the rule), one 1 epoch."""
    root = tmp_path_factory.mktemp("kd")
    r = random.Random(0)
    data = root / "data"
    data.mkdir()

    def sentence() -> tuple[str, str]:
        w = [r.choice(WORDS) for _ in range(r.randint(3, 8))]
        y = r.random() < 0.5
        if y:
            w.insert(r.randrange(len(w) + 1), "red")
        return " ".join(w), "yes" if y else "no"

    def table(name: str, rows) -> None:
        (data / name).write_text("a\tlabel\n" + "".join(f"{a}\t{y}\n" for a, y in rows))

    train, dev = [sentence() for _ in range(160)], [sentence() for _ in range(60)]
    table("kw_train.tsv", train)
    table("kw_dev.tsv", dev)
    table("kw_noisy.tsv", [(a, r.choice(["yes", "no"])) for a, _ in train])
    (root / "teacher.yaml").write_text(TASK % "kw_train.tsv")
    (root / "student.yaml").write_text(TASK % "kw_noisy.tsv")
    env = {"root": root, "data": data, "encoder": tiny_encoder, "dev": [a for a, _ in dev], "cache": str(root / "cache")}
    assert main(_argv(env, "train", "teacher.yaml", "teacher_a", epochs=4)) == 0
    assert main(_argv(env, "train", "teacher.yaml", "teacher_b", "--seed", "3", epochs=1)) == 0
    return env


def _argv(env, command: str, task_file: str, out: str, *extra: str, epochs: int = 4) -> list[str]:
    return [command, "--task-file", str(env["root"] / task_file), "--tasks", "kw", "--data-dir", str(env["data"]),
            "--encoder", env["encoder"], "--output-dir", str(env["root"] / out), "--epochs", str(epochs),
            "--batch-size", "8", "--max-seq-len", "32", "--threads", "1", "--no-progress", "--no-hub",
            "--cache-dir", env["cache"], "--lr", "3e-3", "--selection", "last", "--no-predict-test", *extra]


def _teacher_probs(env, teacher: str, tmp_path: Path) -> np.ndarray:
    """The teacher's class probabilities on the student's training rows, through the public API."""
    out = tmp_path / f"{teacher}.tsv"
    mtdnn.load_run(env["root"] / teacher).predict_file("kw", env["data"] / "kw_noisy.tsv", out)
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    return np.array([[float(r[2]), float(r[3])] for r in rows])


def _student_config(env, teachers: list[str]):
    return make_config(overrides={
        "tasks": "kw", "task_files": [str(env["root"] / "student.yaml")], "data_dir": str(env["data"]),
        "encoder": env["encoder"], "max_seq_len": 32, "cache_dir": env["cache"], "allow_hub": False,
        "predict_test": False, "teachers": [str(env["root"] / t) for t in teachers]})


def test_soft_targets_are_the_teachers_mean_and_cached(kw, tmp_path, caplog):
    cfg = _student_config(kw, ["teacher_a", "teacher_b"])
    setup = build_setup(cfg)
    shutil.rmtree(Path(kw["cache"]) / "soft_targets", ignore_errors=True)
    with caplog.at_level(logging.INFO, logger="mtdnn.training.methods.distill"):
        first = distill_composition(cfg, setup, Distributed(), TaskLoss())
    assert caplog.text.count("outputs computed") == 2 and "from the cache" not in caplog.text
    pa, pb = _teacher_probs(kw, "teacher_a", tmp_path), _teacher_probs(kw, "teacher_b", tmp_path)
    assert not np.allclose(pa, pb, atol=1e-2)  # two different teachers
    assert first.targets["kw"].numpy() == pytest.approx((pa + pb) / 2, abs=2e-6)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mtdnn.training.methods.distill"):
        again = distill_composition(cfg, setup, Distributed(), TaskLoss())
    assert caplog.text.count("from the cache") == 2 and "outputs computed" not in caplog.text
    assert torch.equal(again.targets["kw"], first.targets["kw"])
    assert len(list((Path(kw["cache"]) / "soft_targets").glob("kw.*.npz"))) == 2
    # one teacher's soft targets reproduce its own predictions
    one = distill_composition(_student_config(kw, ["teacher_a"]), setup, Distributed(), TaskLoss())
    labels = ["yes", "no"]
    preds = mtdnn.load_run(kw["root"] / "teacher_a").predict("kw", [line.split("\t")[0] for line in
                                                               (kw["data"] / "kw_noisy.tsv").read_text().splitlines()[1:]])
    assert [labels[i] for i in one.targets["kw"].argmax(-1).tolist()] == preds


def test_soft_targets_leave_out_the_rows_held_out_for_selection(kw, tmp_path):
    """With --selection-split holdout the student trains on the training rows less the held-out
    ones; the soft targets are the teacher's outputs on exactly those rows, in their order."""
    cfg = _student_config(kw, ["teacher_a"]).model_copy(
        update={"selection_split": "holdout", "holdout_fraction": 0.25})
    setup = build_setup(cfg)
    train = setup.data["kw"].train
    assert len(train) == 120  # 160 rows, a quarter held out
    targets = distill_composition(cfg, setup, Distributed(), TaskLoss()).targets["kw"].numpy()
    task = next(t for t in setup.tasks if t.name == "kw")
    held = set(holdout_rows(training_rows(task, _student_config(kw, [])), task, 0.25, cfg.subset_seed).tolist())
    kept = [i for i in range(160) if i not in held]
    assert len(kept) == 120
    assert targets == pytest.approx(_teacher_probs(kw, "teacher_a", tmp_path)[kept], abs=2e-6)


def test_exported_and_adapter_run_teachers(kw, tmp_path, caplog):
    """A whole-model export of a teacher teaches what its run teaches; a run trained with
    ``--adapter lora`` teaches its own predictions; an ONNX export is refused with a line that says why."""
    export = tmp_path / "teacher_a_hf"
    assert main(["export", str(kw["root"] / "teacher_a"), "--format", "hf", "--output", str(export)]) == 0
    setup = build_setup(_student_config(kw, ["teacher_a"]))
    from_run = distill_composition(_student_config(kw, ["teacher_a"]), setup, Distributed(), TaskLoss())
    cfg = _student_config(kw, [])
    cfg = cfg.model_copy(update={"teachers": [str(export)]})
    with caplog.at_level(logging.INFO, logger="mtdnn.training.methods.distill"):
        from_export = distill_composition(cfg, setup, Distributed(), TaskLoss())
    assert "outputs computed" in caplog.text  # its own weights digest: not the run's cached outputs
    assert from_export.targets["kw"].numpy() == pytest.approx(from_run.targets["kw"].numpy(), abs=1e-5)

    assert main(_argv(kw, "train", "teacher.yaml", "teacher_lora", "--adapter", "lora", "--lora-rank", "2",
                      epochs=2)) == 0
    lora = distill_composition(cfg.model_copy(update={"teachers": [str(kw["root"] / "teacher_lora")]}), setup,
                               Distributed(), TaskLoss())
    probs = _teacher_probs(kw, "teacher_lora", tmp_path)
    assert lora.targets["kw"].numpy() == pytest.approx(probs, abs=2e-6)
    assert not np.allclose(probs, from_run.targets["kw"].numpy(), atol=1e-2)  # another teacher indeed

    onnx = tmp_path / "teacher_a_onnx"
    assert main(["export", str(kw["root"] / "teacher_a"), "--format", "onnx", "--output", str(onnx)]) == 0
    with pytest.raises(CheckpointError) as err:
        Teacher.open(str(onnx))
    assert "not a whole-model mtdnn export" in str(err.value) and "\n" not in str(err.value)


def test_mismatched_teacher_is_one_error_line(kw, tmp_path, capsys):
    bad = tmp_path / "teacher_flipped"
    shutil.copytree(kw["root"] / "teacher_b", bad)
    tasks = yaml.safe_load((bad / "tasks.yaml").read_text())
    tasks[0]["labels"] = ["no", "yes"]
    (bad / "tasks.yaml").write_text(yaml.safe_dump(tasks))
    argv = _argv(kw, "distill", "student.yaml", "student_bad", "--teachers", f"{kw['root'] / 'teacher_a'},{bad}")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and str(kw["root"] / "teacher_a") in err[0], err
    assert main(_argv(kw, "distill", "student.yaml", "student_none")) == 2
    assert "needs --teachers" in capsys.readouterr().err


def _agreement(kw, student: str) -> tuple[float, float]:
    """Dev agreement of the student with teacher_a, and the agreement of two independent
    predictors with the same label frequencies (chance)."""
    teacher = mtdnn.load_run(kw["root"] / "teacher_a").predict("kw", kw["dev"])
    pupil = mtdnn.load_run(kw["root"] / student).predict("kw", kw["dev"])
    agree = float(np.mean([a == b for a, b in zip(teacher, pupil)]))
    pt, ps = np.mean([a == "yes" for a in teacher]), np.mean([a == "yes" for a in pupil])
    return agree, float(pt * ps + (1 - pt) * (1 - ps))


def test_student_learns_the_teacher_from_soft_targets_alone(kw):
    teachers = ["--teachers", str(kw["root"] / "teacher_a"), "--seed", "7"]
    assert main(_argv(kw, "distill", "student.yaml", "student_kd", *teachers, "--kd-alpha", "1")) == 0
    assert main(_argv(kw, "distill", "student.yaml", "student_gold", *teachers, "--kd-alpha", "0")) == 0
    agree, chance = _agreement(kw, "student_kd")
    assert agree >= chance + 0.3 and agree >= 0.9, (agree, chance)
    gold_agree, gold_chance = _agreement(kw, "student_gold")  # its gold labels are noise
    assert gold_agree < agree - 0.2, (gold_agree, gold_chance)


def test_smaller_student_end_to_end(kw, tmp_path):
    small = shrink_encoder(kw["encoder"], [1], tmp_path / "one-layer")
    argv = _argv(kw, "distill", "student.yaml", "student_small", "--teachers", str(kw["root"] / "teacher_a"),
                 "--kd-temperature", "2", "--adv", epochs=1)
    argv[argv.index("--encoder") + 1] = str(small)
    assert main(argv) == 0
    assert (kw["root"] / "student_small" / "metrics.json").is_file()


# ------------------------------------------------------------------------------ the layer cut
def test_shrink_keeps_the_chosen_layers(tiny_encoder, tmp_path):
    out = shrink_encoder(tiny_encoder, [1], tmp_path / "cut")
    src, cut = load_file(str(Path(tiny_encoder) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    layer = {k: v for k, v in cut.items() if ".layer." in k}
    assert layer and all(k.replace(".layer.0.", ".layer.1.") in src for k in layer)
    assert all(torch.equal(v, src[k.replace(".layer.0.", ".layer.1.")]) for k, v in layer.items())
    assert not any(".layer.1." in k for k in cut)
    assert all(torch.equal(v, src[k]) for k, v in cut.items() if ".layer." not in k)
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    with pytest.raises(ConfigError, match="between 0 and 1"):
        shrink_encoder(tiny_encoder, [0, 2], tmp_path / "bad")


def test_shrink_minilm_to_three_layers(tmp_path, capsys):
    from transformers import AutoConfig
    assert main(["shrink-encoder", "--layers", "0,2,4", "--output", str(tmp_path / "l3")]) == 0
    assert AutoConfig.from_pretrained(str(tmp_path / "l3")).num_hidden_layers == 3
    assert main(["shrink-encoder", "--layers", "0,x", "--output", str(tmp_path / "bad")]) == 2
    assert "--layers takes layer numbers" in capsys.readouterr().err
