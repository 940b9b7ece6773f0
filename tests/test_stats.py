"""experiments/stats.py: seed means and the paired bootstrap interval, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.stats import Interval, mean_sd, paired_bootstrap


def test_mean_sd():
    assert mean_sd([]) is None
    assert mean_sd([60.0]) == {"mean": 60.0, "sd": 0.0, "n": 1}
    assert mean_sd([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0, "n": 3}


def test_a_row_right_everywhere_is_a_gain_in_every_resample():
    labels = [0, 1, 1, 0, 1]
    interval = paired_bootstrap(["accuracy"], labels, [labels], [[1 - y for y in labels]], resamples=200)
    assert (interval.difference, interval.low, interval.high) == (100.0, 100.0, 100.0)
    assert interval.verdict == "gain"


def test_two_examples_hand_enumerated():
    """Row A is right on example 1 only, row B on neither: per-example differences (1, 0). A resample
    of two examples draws (1,1) with probability 1/4, mixed with 1/2, (0,0) with 1/4: the difference of
    accuracies is 100, 50 or 0, so the 95% interval is [0, 100] and the verdict "within noise"."""
    labels = [1, 1]
    interval = paired_bootstrap(["accuracy"], labels, [[1, 0]], [[0, 0]], resamples=4000, seed=1)
    assert interval.difference == pytest.approx(50.0)
    assert (interval.low, interval.high) == (0.0, 100.0)
    assert interval.verdict == "within noise"


def test_seeds_are_averaged_within_a_row():
    """Row A's two seeds score 100 and 50 (mean 75) against row B's 25 on the whole set."""
    labels = [1, 1, 1, 1]
    interval = paired_bootstrap(["accuracy"], labels, [[1, 1, 1, 1], [1, 1, 0, 0]], [[1, 0, 0, 0]], resamples=10)
    assert interval.difference == pytest.approx(50.0)


def test_paired_resampling_cancels_shared_noise():
    """Two rows that differ on one example of 200: the paired interval is tight around 0.5 points;
    an unpaired comparison of such noisy scores could not separate them."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    a = labels.copy()
    a[:60] = 1 - a[:60]                 # 70% accurate
    b = a.copy()
    b[100] = 1 - b[100]                 # one more error
    interval = paired_bootstrap(["accuracy"], labels, [a], [b], resamples=500)
    assert interval.difference == pytest.approx(0.5)
    assert 0.0 <= interval.low <= interval.high <= 1.5


def test_pair_metrics_and_regression():
    labels = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    perfect = labels * 2 + 1             # pearson and spearman 100
    reversed_ = labels[::-1].copy()      # both -100
    interval = paired_bootstrap(["pearson", "spearman"], labels, [perfect], [reversed_], resamples=50)
    assert interval.difference == pytest.approx(200.0)
    assert interval.verdict == "gain"


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="2 predictions for 3 examples"):
        paired_bootstrap(["accuracy"], [0, 1, 1], [[0, 1]], [[0, 1, 1]])
    assert Interval(-2.0, -3.0, -1.0, 0.95, 10).verdict == "loss"
    assert Interval(1.0, 0.5, 2.0, 0.95, 10).as_record()["verdict"] == "gain"


def test_table_texts_of_seed_spreads_and_differences():
    from experiments.stats import difference_text, seeds_text

    assert seeds_text(None) == "–"
    assert seeds_text({"mean": 76.44, "sd": 1.06, "n": 3}) == "76.4 ± 1.1 (n=3)"
    assert seeds_text({"mean": 4.8, "sd": 0.0, "n": 1}) == "4.8 (n=1)"
    assert difference_text(None) == "–"
    assert difference_text({"difference": 1.26, "low": 0.81, "high": 1.74, "verdict": "gain"}) == "+1.3 [+0.8, +1.7] gain"
    assert difference_text({"difference": -0.04, "low": -1.5, "high": 1.2, "verdict": "within noise"}) == \
        "-0.0 [-1.5, +1.2] within noise"


@pytest.mark.parametrize("metrics,kind", [(["mcc"], 2), (["f1", "accuracy"], 2), (["accuracy"], 3), (["mcc"], 3),
                                          (["pearson", "spearman"], 0)])
def test_scoring_all_resamples_at_once_equals_scoring_them_one_by_one(metrics, kind):
    """paired_bootstrap scores the GLUE metrics on every resample at once; the interval must be the
    one bootstrap_difference gets by scoring each resample with mtdnn.metrics (same draws)."""
    from experiments.stats import bootstrap_difference, row_score

    rng = np.random.default_rng(kind)
    n = 120
    if kind:
        y = rng.integers(0, kind, n)
        a = [rng.integers(0, kind, n) for _ in range(2)]
        b = [np.where(rng.random(n) < 0.7, y, (y + 1) % kind)]
    else:  # scores rounded so that ties occur, as STS-B's labels have
        y = np.round(rng.random(n) * 5, 1)
        a = [np.round(y + rng.normal(0, 1, n), 1) for _ in range(2)]
        b = [np.round(y + rng.normal(0, 2, n), 1)]
    fast = paired_bootstrap(metrics, y, a, b, resamples=60)
    slow = bootstrap_difference(n, lambda i: row_score(metrics, y, a, i), lambda i: row_score(metrics, y, b, i),
                                resamples=60)
    assert fast.difference == pytest.approx(slow.difference, abs=1e-9)
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high), abs=1e-9)
