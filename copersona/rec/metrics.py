"""Top-K ranking metrics for leave-one-out evaluation: one relevant item (the held-out target) per query.

With a single relevant item, each metric depends only on the target's 1-based rank ``r`` in the ranked
list (``None`` when the list does not contain it), for a cutoff ``k``:

- ``hr@k`` (hit rate): 1 if ``r <= k``, else 0;
- ``mrr@k`` (reciprocal rank): ``1 / r`` if ``r <= k``, else 0;
- ``ndcg@k``: ``1 / log2(r + 1)`` if ``r <= k``, else 0 (the ideal DCG of one relevant item is 1).

These are the HR@K, MRR@K and NDCG@K of PERSONA4REC (Sec. 4.1.3, K = 5, 10, 20). Per-query values
(:func:`per_query_metrics`) feed bootstrap intervals and paired tests; :func:`ranking_metrics` is their
mean.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np

CUTOFFS = (5, 10, 20)


def rank_of(candidates: Iterable[Hashable], target: Hashable) -> int | None:
    """The 1-based position of ``target`` in the ranked ``candidates`` (its first occurrence), or ``None``."""
    for position, candidate in enumerate(candidates, start=1):
        if candidate == target:
            return position
    return None


def per_query_metrics(ranks: Sequence[int | None], cutoffs: Sequence[int] = CUTOFFS) -> dict[str, np.ndarray]:
    """Each query's ``hr@k``, ``mrr@k`` and ``ndcg@k`` for every ``k`` in ``cutoffs``, keyed in that order.

    ``ranks`` holds each query's target rank (1-based), ``None`` where the target was not ranked. Values
    are float64 arrays of ``len(ranks)``.
    """
    for k in cutoffs:
        if int(k) != k or k < 1:
            raise ValueError(f"cutoffs must be positive integers, got {k!r}")
    rank = np.array([np.inf if r is None else r for r in ranks], dtype=np.float64)
    if np.any(rank < 1) or np.any(np.isfinite(rank) & (rank != np.floor(rank))):
        raise ValueError("ranks must be positive integers (1-based) or None")
    metrics: dict[str, np.ndarray] = {}
    for k in cutoffs:
        hit = rank <= k
        # np.divide with where=: the missed queries (rank inf or > k) stay 0 and are never divided.
        metrics[f"hr@{k}"] = hit.astype(np.float64)
        metrics[f"mrr@{k}"] = np.divide(1.0, rank, out=np.zeros_like(rank), where=hit)
        metrics[f"ndcg@{k}"] = np.divide(1.0, np.log2(rank + 1.0), out=np.zeros_like(rank), where=hit)
    return metrics


def ranking_metrics(ranks: Sequence[int | None], cutoffs: Sequence[int] = CUTOFFS) -> dict[str, float]:
    """The mean over queries of each of :func:`per_query_metrics` (keys ``hr@5``, ``mrr@5``, ``ndcg@5``,
    ``hr@10``, ...)."""
    if len(ranks) == 0:
        raise ValueError("no queries to average over")
    return {name: float(values.mean()) for name, values in per_query_metrics(ranks, cutoffs).items()}
