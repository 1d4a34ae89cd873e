"""Bootstrap intervals and paired comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from copersona.eval.stats import bootstrap, paired_difference, resample_indices


def _mean(rows):
    return float(rows[:, 0].mean())


def test_interval_contains_the_mean_and_shrinks_with_more_examples():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.3, 0.1, (20, 1)), rng.normal(0.3, 0.1, (800, 1))
    a = bootstrap(small, _mean, resample_indices(20, resamples=500, seed=0))
    b = bootstrap(large, _mean, resample_indices(800, resamples=500, seed=0))
    assert a.low <= a.mean <= a.high and b.low <= b.mean <= b.high
    assert (b.high - b.low) < (a.high - a.low)
    assert a.n == 20


def test_identical_methods_differ_by_zero_with_p_one():
    rows = np.random.default_rng(2).random((50, 1))
    c = paired_difference(rows, rows, _mean, resample_indices(50, resamples=300, seed=0))
    assert c.difference.mean == 0 and c.p_value == 1.0


def test_a_constant_improvement_is_significant():
    rows = np.random.default_rng(3).random((50, 1))
    c = paired_difference(rows + 0.05, rows, _mean, resample_indices(50, resamples=300, seed=0))
    assert c.difference.mean == pytest.approx(0.05) and c.difference.low > 0 and c.p_value == 0.0
    # No resample crossed zero: reported as a bound, never as "p = 0.000".
    assert c.p_is_bound and c.p_text() == "p < 0.00333333"
    assert c.to_dict()["p_value"] == pytest.approx(1 / 300) and c.to_dict()["p_is_upper_bound"] is True
    same = paired_difference(rows, rows, _mean, resample_indices(50, resamples=300, seed=0))
    assert same.p_text() == "p = 1.000" and same.to_dict()["p_is_upper_bound"] is False


def test_unpaired_rows_are_refused():
    with pytest.raises(ValueError, match="same examples"):
        paired_difference(np.zeros((3, 1)), np.zeros((4, 1)), _mean, resample_indices(3, resamples=10, seed=0))


def test_no_examples_give_nan_not_an_error():
    estimate = bootstrap(np.zeros((0, 1)), _mean, resample_indices(0, resamples=10, seed=0))
    assert estimate.n == 0 and np.isnan(estimate.mean)
