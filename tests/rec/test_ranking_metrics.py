"""Leave-one-out ranking metrics: checked by hand on a table of ranks, and against ranx on seeded random runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from copersona.rec.metrics import per_query_metrics, rank_of, ranking_metrics

ranx = pytest.importorskip("ranx")  # the reference implementation; only the tests use it

RANX_NAMES = {"hr": "hit_rate", "mrr": "mrr", "ndcg": "ndcg"}  # ours -> ranx's


@pytest.mark.parametrize(
    "candidates, target, expected",
    [
        (["a", "b", "c"], "a", 1),
        (["a", "b", "c"], "c", 3),
        (["a", "b", "c"], "z", None),
        ([], "a", None),
        ([4, 7, 7, 2], 7, 2),  # the first occurrence counts
        (np.array([5, -1, 3]), 3, 3),  # a padded numpy row from CandidateGenerator.top
        (["1", "2"], 1, None),  # an id of another type is another item
    ],
)
def test_rank_of(candidates, target, expected):
    assert rank_of(candidates, target) == expected


@pytest.mark.parametrize(
    "rank, k, hr, mrr, ndcg",
    [
        (1, 5, 1.0, 1.0, 1.0),
        (3, 5, 1.0, 1 / 3, 1 / math.log2(4)),
        (5, 5, 1.0, 1 / 5, 1 / math.log2(6)),  # the cutoff itself is inside
        (6, 5, 0.0, 0.0, 0.0),
        (6, 10, 1.0, 1 / 6, 1 / math.log2(7)),
        (None, 20, 0.0, 0.0, 0.0),
    ],
)
def test_one_query_by_hand(rank, k, hr, mrr, ndcg):
    values = per_query_metrics([rank], cutoffs=(k,))
    assert values[f"hr@{k}"][0] == hr
    assert values[f"mrr@{k}"][0] == pytest.approx(mrr)
    assert values[f"ndcg@{k}"][0] == pytest.approx(ndcg)


def test_keys_are_each_cutoffs_metrics_in_order():
    assert list(ranking_metrics([1, None, 12])) == [
        "hr@5", "mrr@5", "ndcg@5", "hr@10", "mrr@10", "ndcg@10", "hr@20", "mrr@20", "ndcg@20"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "ranks, cutoffs",
    [
        ([0], (5,)),  # ranks are 1-based
        ([-2], (5,)),
        ([1.5], (5,)),
        ([1], (0,)),
        ([1], (2.5,)),
    ],
)
def test_rejects_malformed_input(ranks, cutoffs):
    with pytest.raises(ValueError):
        per_query_metrics(ranks, cutoffs)


def test_no_queries_has_no_mean():
    assert all(len(v) == 0 for v in per_query_metrics([]).values())
    with pytest.raises(ValueError):
        ranking_metrics([])


@given(st.lists(st.one_of(st.none(), st.integers(1, 60)), min_size=1, max_size=40))
def test_mean_of_per_query_and_ordering(ranks):
    per_query = per_query_metrics(ranks, cutoffs=(1, 5, 10, 20))
    means = ranking_metrics(ranks, cutoffs=(1, 5, 10, 20))
    assert means == {name: pytest.approx(values.mean()) for name, values in per_query.items()}
    for k in (1, 5, 10, 20):
        assert np.all(per_query[f"mrr@{k}"] <= per_query[f"ndcg@{k}"] + 1e-12)
        assert np.all(per_query[f"ndcg@{k}"] <= per_query[f"hr@{k}"])
    for name in ("hr", "mrr", "ndcg"):  # a longer list can only find more
        assert means[f"{name}@5"] <= means[f"{name}@10"] <= means[f"{name}@20"]
    assert means["hr@1"] == means["mrr@1"] == means["ndcg@1"]


def _random_lists(rng, queries, items, length, p_absent):
    """Ranked lists of distinct item ids and each query's one target; with probability ``p_absent`` the
    target is left out of its list (a candidate generator that missed it)."""
    lists, targets = [], []
    for _ in range(queries):
        size = int(rng.integers(0, length + 1))
        ranked = [f"i{j}" for j in rng.choice(items, size=size, replace=False)]
        if ranked and rng.random() >= p_absent:
            target = ranked[int(rng.integers(len(ranked)))]
        else:
            target = f"i{items + int(rng.integers(1000))}"  # an id outside every list
        lists.append(ranked)
        targets.append(target)
    return lists, targets


@pytest.mark.parametrize(
    "seed, queries, items, length, p_absent, cutoffs",
    [
        (0, 200, 900, 20, 0.3, (5, 10, 20)),  # the paper's cutoffs over 20 candidates
        (1, 200, 50, 50, 0.0, (5, 10, 20)),  # every target ranked, many beyond 20
        (2, 100, 30, 8, 0.5, (1, 3, 5, 10)),  # short lists: cutoffs past the list's end
        (3, 50, 100, 100, 1.0, (5, 10)),  # no target ever ranked
    ],
)
def test_matches_ranx(seed, queries, items, length, p_absent, cutoffs):
    rng = np.random.default_rng(seed)
    lists, targets = _random_lists(rng, queries, items, length, p_absent)
    ids = [f"q{n:04d}" for n in range(queries)]  # sorted order is list order, whichever ranx reports in
    qrels = ranx.Qrels({q: {t: 1} for q, t in zip(ids, targets)})
    # Strictly decreasing scores, so ranx's order is the list's order (no ties for it to break).
    run = ranx.Run(
        {q: {item: float(len(ranked) - j) for j, item in enumerate(ranked)} for q, ranked in zip(ids, lists)}
    )
    names = {f"{ours}@{k}": f"{RANX_NAMES[ours]}@{k}" for k in cutoffs for ours in RANX_NAMES}
    reference = ranx.evaluate(qrels, run, list(names.values()), return_mean=False)

    ranks = [rank_of(ranked, target) for ranked, target in zip(lists, targets)]
    per_query = per_query_metrics(ranks, cutoffs)
    means = ranking_metrics(ranks, cutoffs)
    assert list(per_query) == list(names)
    for ours, theirs in names.items():
        np.testing.assert_allclose(per_query[ours], reference[theirs], rtol=0, atol=1e-12, err_msg=ours)
        assert means[ours] == pytest.approx(float(np.mean(reference[theirs])), abs=1e-12)
