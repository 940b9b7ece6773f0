"""The per-class reports at the end of a run reuse the predictions of the evaluation of the epoch
each task keeps: no prediction pass of their own, and the same reports as predicting again with
that epoch's saved weights (what a resumed run, which has no kept predictions, does)."""

from __future__ import annotations

import json
from pathlib import Path

import mtdnn
import mtdnn.evaluation
import mtdnn.reports
from mtdnn.training.state import LoopState


def _train(out: Path, tiny_encoder: str, data_dir, cache: Path) -> Path:
    cfg = mtdnn.make_config(overrides=dict(
        tasks="rte,mrpc,stsb", encoder=tiny_encoder, data_dir=str(Path(data_dir).resolve()),
        cache_dir=str(cache), output_dir=str(out), progress=False, max_train_examples=48,
        max_eval_examples=64, max_seq_len=48, epochs=3, lr=1e-3, batch_size=16, threads=1, seed=5,
        selection="best", predict_test=False))
    return Path(mtdnn.train(cfg))


def test_reports_reuse_the_kept_epochs_predictions(tmp_path, tiny_encoder, data_dir, monkeypatch):
    calls: list[str] = []
    real_predict = mtdnn.evaluation.predict

    def counted(model, task, *args, **kwargs):
        calls.append(task.name)
        return real_predict(model, task, *args, **kwargs)

    monkeypatch.setattr(mtdnn.evaluation, "predict", counted)
    monkeypatch.setattr(mtdnn.reports, "predict", counted)  # the reports' own prediction pass, if any
    reused = _train(tmp_path / "reused", tiny_encoder, data_dir, tmp_path / "cache")
    # three epochs, each evaluating the dev split of rte, mrpc and stsb: nothing more
    assert sorted(calls) == sorted(["rte", "mrpc", "stsb"] * 3)

    calls.clear()
    monkeypatch.setattr(LoopState, "keep_predictions", lambda self, task, split, predictions: None)
    again = _train(tmp_path / "again", tiny_encoder, data_dir, tmp_path / "cache")
    assert sorted(calls) == sorted(["rte", "mrpc", "stsb"] * 3 + ["rte", "mrpc"])  # the reports predict
    names = sorted(p.name for p in (reused / "reports").glob("*.json"))
    assert names == ["mrpc.dev.json", "rte.dev.json"]
    for name in names:
        assert (reused / "reports" / name).read_text() == (again / "reports" / name).read_text(), name
    assert (reused / "selection.json").read_text() == (again / "selection.json").read_text()
    kept = json.loads((reused / "selection.json").read_text())["tasks"]
    assert min(kept["rte"], kept["mrpc"]) < 3  # a report from an epoch before the last is among them


def test_evaluation_returns_and_writes_the_runs_reports(tmp_path, tiny_encoder, data_dir, capsys):
    """``Run.evaluation`` gives the metrics of ``evaluate`` and, from the same predictions, the
    reports the finished run holds; ``mtdnn evaluate --reports DIR`` writes those same files."""
    from mtdnn.cli import main

    out = _train(tmp_path / "run", tiny_encoder, data_dir, tmp_path / "cache")
    run = mtdnn.load_run(out)
    result = run.evaluation(data_dir=data_dir, max_eval_examples=64)
    assert result.metrics == run.evaluate(data_dir=data_dir, max_eval_examples=64)
    assert result.metrics == json.loads((out / "metrics.json").read_text())
    assert sorted(result.reports) == ["mrpc", "rte"]  # stsb is a regression: no classes
    for task in ("mrpc", "rte"):
        saved = json.loads((out / "reports" / f"{task}.dev.json").read_text())
        assert saved == {"task": task, "split": "dev", **result.reports[task]["dev"]}
        assert result.reports[task]["dev"]["accuracy"] == result.metrics[task]["dev"]["accuracy"]

    assert main(["evaluate", str(out), "--data-dir", str(data_dir), "--max-eval-examples", "64",
                 "--reports", str(tmp_path / "reports")]) == 0
    assert "per-class reports of rte, mrpc in" in capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert written == sorted(p.name for p in (out / "reports").iterdir())
    for name in written:
        if name.endswith(".json"):
            assert (tmp_path / "reports" / name).read_text() == (out / "reports" / name).read_text(), name
