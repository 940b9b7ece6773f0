"""The statistics every results table uses: the mean and standard deviation over seeds, and a
paired bootstrap interval for the difference of two rows over the evaluation examples.

A row is one or more runs (seeds) of one configuration, each with its predictions for the same
evaluation examples. ``paired_bootstrap`` resamples the examples with replacement, the same indices
for both rows, computes each run's score on the resample (the task's GLUE score: its metric, or the
mean of its pair, ``mtdnn.metrics.compute_metrics``), averages over each row's seeds and takes the
difference; the 2.5th and 97.5th percentiles of those differences are the 95% interval. So the
interval covers the uncertainty that comes from the size of the evaluation set, for the seeds that
were run; the seeds' own spread is reported beside it (``mean_sd``). A difference is called a gain
or a loss only where its interval excludes zero (``verdict``); otherwise it is "within noise".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


def spread(values: Sequence[float]) -> tuple[float, float, int] | None:
    """Mean, sample standard deviation (0 for one value) and count; None for no values."""
    if not values:
        return None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def mean_sd(values: Sequence[float]) -> dict[str, float] | None:
    """``spread`` rounded as tables show it: mean, sd (2 decimals) and n; None for no values."""
    s = spread(values)
    return None if s is None else {"mean": round(s[0], 2), "sd": round(s[1], 2), "n": s[2]}


def seeds_text(s: dict[str, float] | None) -> str:
    """A ``mean_sd`` as tables show it: "mean ± sd (n=k)", "mean (n=1)", or "–" for none."""
    return "–" if not s else f"{s['mean']:.1f} ± {s['sd']:.1f} (n={s['n']})" if s["n"] > 1 else f"{s['mean']:.1f} (n=1)"


def difference_text(d: dict[str, Any] | None) -> str:
    """An ``Interval.as_record`` as tables show it: "+d [low, high] verdict", or "–" for none."""
    return "–" if not d else f"{d['difference']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] {d['verdict']}"


def rounded_mean(values: Sequence[float]) -> float | None:
    """The mean to 2 decimals, as summaries hold it; None for no values."""
    return round(statistics.mean(values), 2) if values else None


@dataclass(frozen=True)
class Interval:
    """A difference of two rows (A - B, score points) with its paired-bootstrap interval."""

    difference: float
    low: float
    high: float
    level: float
    resamples: int

    @property
    def verdict(self) -> str:
        """"gain" or "loss" where the interval excludes zero, else "within noise"."""
        if self.low > 0:
            return "gain"
        if self.high < 0:
            return "loss"
        return "within noise"

    def as_record(self) -> dict[str, float | int | str]:
        return {"difference": round(self.difference, 2), "low": round(self.low, 2), "high": round(self.high, 2),
                "level": self.level, "resamples": self.resamples, "verdict": self.verdict}


def row_score(metrics: Sequence[str], labels: np.ndarray, runs: Sequence[np.ndarray], index: np.ndarray | None = None) -> float:
    """The mean over a row's runs of each run's score on the examples ``index`` (all if None)."""
    # imported here: scikit-learn and SciPy are heavy, and every runner imports this module before
    # it forks its cells (whose peak memory must be their own)
    from mtdnn.metrics import compute_metrics

    pick = slice(None) if index is None else index
    return float(np.mean([compute_metrics(list(metrics), np.asarray(p)[pick], labels[pick])["score"] for p in runs]))


def paired_bootstrap(metrics: Sequence[str], labels: Sequence[float], row_a: Sequence[Sequence[float]],
                     row_b: Sequence[Sequence[float]], *, resamples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> Interval:
    """The difference of row A's and row B's seed-mean scores with its paired-bootstrap interval.
    ``row_a``/``row_b``: each run's predictions (class indices or scores) for the examples of
    ``labels``, in the same order; ``metrics``: the task's metric names (``TaskDef.metric_names``).
    The GLUE metrics are scored on all resamples at once (``resample_scores``: a resample is a
    count per example), with the resamples ``bootstrap_difference`` would draw; others one by one."""
    y = np.asarray(labels)
    a = [np.asarray(p) for p in row_a]
    b = [np.asarray(p) for p in row_b]
    if not a or not b:
        raise ValueError("each row needs the predictions of at least one run")
    for p in (*a, *b):
        if p.shape != y.shape:
            raise ValueError(f"a run has {p.shape[0]} predictions for {y.shape[0]} examples")
    if not set(metrics) <= VECTOR_METRICS:
        return bootstrap_difference(len(y), lambda index: row_score(metrics, y, a, index),
                                    lambda index: row_score(metrics, y, b, index),
                                    resamples=resamples, level=level, seed=seed)
    n = len(y)
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, resamples, 100):  # 100 resamples at a time: n floats each
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n)
                           for _ in range(min(100, resamples - start))]).astype(np.float64)
        diffs.append(np.mean([resample_scores(metrics, y, p, counts) for p in a], axis=0)
                     - np.mean([resample_scores(metrics, y, p, counts) for p in b], axis=0))
    return percentile_interval(np.concatenate(diffs), row_score(metrics, y, a) - row_score(metrics, y, b), level)


VECTOR_METRICS = {"accuracy", "f1", "mcc", "pearson", "spearman"}


def resample_scores(metrics: Sequence[str], labels: np.ndarray, preds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One run's task score (the mean of ``metrics``, in percent, as ``mtdnn.metrics``) on each
    resample; ``counts``: (resamples, examples), how often each example is drawn. Classification
    metrics come from each resample's confusion counts; correlations are the count-weighted ones,
    Spearman's on the average ranks of the resampled values (ties share their rank, as in SciPy);
    a correlation of constant values is 0, as ``mtdnn.metrics`` reports it."""
    out = []
    for name in metrics:
        if name in ("pearson", "spearman"):
            x, z = preds.astype(np.float64), labels.astype(np.float64)
            if name == "spearman":
                x, z = _resampled_ranks(x, counts), _resampled_ranks(z, counts)
            out.append(100.0 * _weighted_corr(x, z, counts))
            continue
        k = int(max(labels.max(), preds.max())) + 1
        confusion = counts @ np.eye(k * k)[labels.astype(int) * k + preds.astype(int)]  # (R, true*k + predicted)
        confusion = confusion.reshape(len(counts), k, k)
        total, correct = confusion.sum(axis=(1, 2)), np.trace(confusion, axis1=1, axis2=2)
        if name == "accuracy":
            out.append(100.0 * correct / total)
        elif name == "f1":  # binary, positive class 1; 0 where nothing is predicted or gold positive
            tp, fp, fn = confusion[:, 1, 1], confusion[:, 0, 1], confusion[:, 1, 0]
            out.append(100.0 * np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=2 * tp + fp + fn > 0))
        else:  # mcc, scikit-learn's multi-class form
            t, p = confusion.sum(axis=2), confusion.sum(axis=1)
            num = correct * total - (t * p).sum(axis=1)
            den = np.sqrt((total ** 2 - (p * p).sum(axis=1)) * (total ** 2 - (t * t).sum(axis=1)))
            out.append(100.0 * np.divide(num, den, out=np.zeros_like(num), where=den > 0))
    return np.mean(out, axis=0)


def _resampled_ranks(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(R, n): each example's average rank among the values of each resample (1-based)."""
    order = np.argsort(x, kind="stable")
    values, starts, group = np.unique(x[order], return_index=True, return_inverse=True)
    per_value = np.add.reduceat(counts[:, order], starts, axis=1)          # (R, distinct values)
    rank = np.cumsum(per_value, axis=1) - per_value + (per_value + 1) / 2  # average rank of each value
    ranks = np.empty_like(counts)
    ranks[:, order] = rank[:, group]
    return ranks


def _weighted_corr(x: np.ndarray, z: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pearson's r of x and z over each resample (x, z: (n,) or (R, n)); 0 where either is constant."""
    x, z = np.broadcast_to(x, counts.shape), np.broadcast_to(z, counts.shape)
    w = counts / counts.sum(axis=1, keepdims=True)
    dx = x - (w * x).sum(axis=1, keepdims=True)
    dz = z - (w * z).sum(axis=1, keepdims=True)
    vx, vz = (w * dx * dx).sum(axis=1), (w * dz * dz).sum(axis=1)
    ok = (vx > 1e-12 * np.maximum(1.0, (w * x * x).sum(axis=1))) & (vz > 1e-12 * np.maximum(1.0, (w * z * z).sum(axis=1)))
    r = np.divide((w * dx * dz).sum(axis=1), np.sqrt(vx * vz), out=np.zeros(len(counts)), where=ok)
    return r


def bootstrap_difference(n: int, score_a: Callable[[np.ndarray | None], float],
                         score_b: Callable[[np.ndarray | None], float], *, resamples: int = 1000,
                         level: float = 0.95, seed: int = 0) -> Interval:
    """The paired bootstrap of any two rows' scores over ``n`` examples: ``score_a(index)`` and
    ``score_b(index)`` give each row's seed-mean score on the examples ``index`` (all with None);
    each resample draws the same indices for both rows."""
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for i in range(resamples):
        index = rng.integers(0, n, n)
        diffs[i] = score_a(index) - score_b(index)
    return percentile_interval(diffs, score_a(None) - score_b(None), level)


def percentile_interval(diffs: np.ndarray, difference: float, level: float) -> Interval:
    """The interval of the resampled differences ``diffs``: their central ``level`` percentiles."""
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return Interval(difference, float(low), float(high), level, len(diffs))


def f1_of_counts(counts: np.ndarray, index: np.ndarray | None = None) -> float:
    """Micro F1 (percent) of per-example ``(correct, predicted, gold)`` counts, an (n, 3) array,
    summed over the examples ``index`` (all with None): entity F1 over resampled sentences."""
    c, p, g = (counts if index is None else counts[index]).sum(axis=0)
    return float(200.0 * c / (p + g)) if p + g else 0.0


def mean_of(values: np.ndarray, index: np.ndarray | None = None) -> float:
    """The mean (percent) of per-example scores in [0, 1] over the examples ``index`` (all with
    None): SQuAD exact match and F1 over resampled questions."""
    return float(100.0 * (values if index is None else values[index]).mean())


def counts_bootstrap(row_a: Sequence[np.ndarray], row_b: Sequence[np.ndarray], score: Callable[..., float],
                     *, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """``bootstrap_difference`` of two rows whose runs each give a per-example array (entity
    counts, per-question scores) of the same examples; a row's score is the mean over its runs of
    ``score(array, index)`` (``f1_of_counts``, ``mean_of``)."""
    a, b = [np.asarray(x) for x in row_a], [np.asarray(x) for x in row_b]
    if not a or not b:
        raise ValueError("each row needs the predictions of at least one run")
    n = len(a[0])
    if any(len(x) != n for x in (*a, *b)):
        raise ValueError("the runs of both rows must score the same examples")
    return bootstrap_difference(n, lambda index: float(np.mean([score(x, index) for x in a])),
                                lambda index: float(np.mean([score(x, index) for x in b])),
                                resamples=resamples, level=level, seed=seed)
