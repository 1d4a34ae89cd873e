"""Metrics of the rating task (response prediction): errors, correlations and exact accuracy.

MAE, RMSE, Pearson and Spearman compare the point prediction (the expected rating under the
model's distribution; a reference method's estimate) with the true rating; accuracy compares the
rating answered (the most probable one) with it. Correlations are aggregates over a set of
examples, so the bootstrap resamples (prediction, truth) pairs; they are undefined (NaN) for a
method whose predictions do not vary.
"""

from __future__ import annotations

import importlib.metadata
from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from scipy import stats

from copersona.eval.metrics import Metric

if TYPE_CHECKING:
    from copersona.inference import Prediction


class RatingMetric(Metric):
    """Point predictions against true ratings; statistics are (prediction, truth) pairs."""

    scale: ClassVar[str] = "1-5"

    def statistics(self, predictions: list[str], references: list[str]) -> np.ndarray:
        return np.array([[float(p), float(r)] for p, r in zip(predictions, references)]).reshape(-1, 2)

    def rows(self, predictions: list[Prediction]) -> np.ndarray:
        missing = [p.example for p in predictions if p.rating is None]
        if missing:
            raise ValueError(f"{len(missing)} predictions have no rating (e.g. {missing[0]}): not a rating-task run")
        return self.statistics([repr(p.rating) for p in predictions], [p.reference for p in predictions])

    def config(self) -> dict:
        return {"on": "the expected rating", "numpy": np.__version__}


class MAE(RatingMetric):
    name = "mae"
    higher_is_better = False

    def aggregate(self, rows: np.ndarray) -> float:
        return float(np.abs(rows[:, 0] - rows[:, 1]).mean()) if len(rows) else float("nan")


class RMSE(RatingMetric):
    name = "rmse"
    higher_is_better = False

    def aggregate(self, rows: np.ndarray) -> float:
        return float(np.sqrt(((rows[:, 0] - rows[:, 1]) ** 2).mean())) if len(rows) else float("nan")


class _Correlation(RatingMetric):
    scale = "-1-1"

    def aggregate(self, rows: np.ndarray) -> float:
        if len(rows) < 2 or np.ptp(rows[:, 0]) == 0 or np.ptp(rows[:, 1]) == 0:
            return float("nan")
        return float(self.correlate(rows[:, 0], rows[:, 1]))

    @abstractmethod
    def correlate(self, a: np.ndarray, b: np.ndarray) -> float:
        """The correlation of predictions ``a`` with truths ``b``."""

    def config(self) -> dict:
        return {**super().config(), "scipy": importlib.metadata.version("scipy")}


class Pearson(_Correlation):
    name = "pearson"

    def correlate(self, a: np.ndarray, b: np.ndarray) -> float:
        return stats.pearsonr(a, b).statistic


class Spearman(_Correlation):
    name = "spearman"

    def correlate(self, a: np.ndarray, b: np.ndarray) -> float:
        return stats.spearmanr(a, b).statistic


class Accuracy(RatingMetric):
    """The rating answered equals the true one."""

    name = "accuracy"
    scale = "0-1"

    def rows(self, predictions: list[Prediction]) -> np.ndarray:
        return np.array([[float(p.text == p.reference)] for p in predictions]).reshape(-1, 1)

    def config(self) -> dict:
        return {"on": "the most probable rating (a reference method's estimate, rounded)"}


RATING_METRICS: dict[str, type[Metric]] = {m.name: m for m in (MAE, RMSE, Pearson, Spearman, Accuracy)}
