"""Intervals for means and paired differences, by the percentile bootstrap over examples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def bootstrap_mean(values: np.ndarray, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of ``values`` with a percentile-bootstrap interval; NaNs are ignored, none left gives NaN."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Estimate(float(values.mean()), float(low), float(high), int(len(values)))


@dataclass(frozen=True)
class Comparison:
    """A paired difference (a - b) over the same examples, its interval and a two-sided p-value."""

    difference: Estimate
    p_value: float
    resamples: int = 0

    @property
    def p_is_bound(self) -> bool:
        """No resample crossed zero: the p-value is below 1/B, not 0."""
        return self.p_value == 0 and self.resamples > 0

    def p_text(self) -> str:
        return f"p < {1 / self.resamples:g}" if self.p_is_bound else f"p = {self.p_value:.3f}"

    def to_dict(self) -> dict:
        if self.p_is_bound:
            return {**self.difference.to_dict(), "p_value": 1 / self.resamples, "p_is_upper_bound": True}
        return {**self.difference.to_dict(), "p_value": self.p_value, "p_is_upper_bound": False}


def resample_indices(n: int, *, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of n examples; reusing them for every method makes comparisons paired."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), int)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    values = values[np.isfinite(values)]  # resamples where a correlation is undefined (constant predictions)
    if not len(values):
        return float("nan"), float("nan")
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap(
    rows: np.ndarray, aggregate: Callable[[np.ndarray], float], indices: np.ndarray, *, confidence: float = 0.95
) -> Estimate:
    """``aggregate`` of all rows, with a percentile interval over the resampled row sets ``indices``."""
    if not len(rows):
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    low, high = _interval(np.array([aggregate(rows[sample]) for sample in indices]), confidence)
    return Estimate(aggregate(rows), low, high, len(rows))


def paired_difference(
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    aggregate: Callable[[np.ndarray], float],
    indices: np.ndarray,
    *,
    confidence: float = 0.95,
) -> Comparison:
    """aggregate(a) - aggregate(b) over the same examples (paired bootstrap, Koehn 2004)."""
    if len(rows_a) != len(rows_b):
        raise ValueError(f"paired comparison needs the same examples: {len(rows_a)} vs {len(rows_b)} rows")
    if not len(rows_a):
        return Comparison(Estimate(float("nan"), float("nan"), float("nan"), 0), float("nan"))
    differences = np.array([aggregate(rows_a[s]) - aggregate(rows_b[s]) for s in indices])
    low, high = _interval(differences, confidence)
    differences = differences[np.isfinite(differences)]
    if not len(differences):
        return Comparison(Estimate(aggregate(rows_a) - aggregate(rows_b), low, high, len(rows_a)), float("nan"))
    p_value = min(1.0, 2 * min(float(np.mean(differences <= 0)), float(np.mean(differences >= 0))))
    return Comparison(Estimate(aggregate(rows_a) - aggregate(rows_b), low, high, len(rows_a)), p_value, len(indices))
