"""Per-class reports of the tasks whose kind has one (``TaskKind.has_report``: classification,
ranking and tagging; a tagging task with an entity scheme reports entity types, see
``kinds/tagging.py``).

For each labeled dev/test split of such a task, a finished run holds ``reports/<task>.<split>.json``:
precision, recall, F1 and support of each label, accuracy, macro-, micro- and support-weighted F1
(all in percent, as in metrics.json) and the confusion matrix (rows: gold label, columns: predicted
label, in the task's label order). The dev split that selects the task's epoch also gets
``reports/<task>.<split>.confusion.png`` where matplotlib is installed (the ``plots`` extra).
Reports are computed with the weights of the epoch each task keeps, so their accuracy is the one
in metrics.json.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .evaluation import predict
from .run_dir import RunDir, atomic_path, write_json
from .tasks.schema import TaskDef

if TYPE_CHECKING:  # the training modules import this one
    from .training.distributed import Distributed
    from .training.setup import Setup

log = logging.getLogger(__name__)


def report_paths(folder: Path, task: str, split: str) -> tuple[Path, Path]:
    """(JSON report, confusion-matrix PNG) of a task's split in ``folder`` (a run's ``reports/``)."""
    return folder / f"{task}.{split}.json", folder / f"{task}.{split}.confusion.png"


def write_report(folder: Path, task: TaskDef, split: str, report: dict[str, Any], with_plot: bool) -> None:
    """Write the JSON report and, with ``with_plot``, the PNG of its confusion matrix into ``folder``."""
    json_path, png_path = report_paths(folder, task.name, split)
    write_json(json_path, {"task": task.name, "split": split, **report})
    if with_plot:
        plot_confusion(png_path, f"{task.name} / {split}", report["labels"],
                       np.asarray(report["confusion_matrix"]["matrix"]))


def plot_confusion(path: Path, title: str, labels: list[str], matrix: np.ndarray) -> bool:
    """Draw the confusion matrix as a PNG (counts in the cells, shade by row share). Returns False,
    with a log line, where matplotlib is not installed."""
    try:  # matplotlib: the optional plots extra (without it, no PNG)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed (pip install 'mtdnn[plots]'): no confusion-matrix PNG for %s", title)
        return False
    n = len(labels)
    size = max(3.0, 0.6 * n + 2.0)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(n), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("gold label")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return True


def write_class_reports(setup: Setup, run: RunDir, selection: dict[str, int], dist: Distributed,
                        predicted: Mapping[tuple[str, str, int], np.ndarray] | None = None) -> None:
    """Write the reports of every labeled dev/test split of the tasks that predict classes, with the
    epoch each task keeps: from ``predicted`` (task, split, epoch) -> classes, kept by the loop from
    that epoch's evaluation, or else predicted here (by all ranks; written by rank 0)."""
    predicted = predicted or {}
    loaded = None
    for name, td in setup.data.items():
        epoch = selection.get(setup.model.head_name(name))
        if not td.task.kind.has_report(td.task) or not td.evals or epoch is None:
            continue
        for split_name, split in td.evals.items():
            classes = predicted.get((name, split_name, epoch))
            if classes is None:
                if epoch != loaded:
                    dist.load_weights(setup.model, run.checkpoint(epoch))
                    loaded = epoch
                classes = predict(setup.model, td.task, split, batch_size=setup.cfg.eval_batch_size,
                                  device=setup.device, precision=setup.cfg.precision,
                                  pad_id=setup.tokenizer.pad_token_id or 0, dist=dist).preds
            if dist.is_main:
                report = td.task.kind.split_report(td.task, split, classes)
                write_report(run.path / "reports", td.task, split_name, report,
                             with_plot=split_name == td.task.selection_split)
